"""``agentwire gateway``'s security options: TLS, mutual TLS, an access file
(reloaded on SIGHUP), and a plaintext loopback listener beside TLS."""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
from collections.abc import Callable
from typing import Any

import attrs
import trio

from .._errors import AgentwireError
from ._access_file import AccessFileAuthenticator, AccessFileError
from ._auth import Authenticator, CertificateAuthenticator
from ._loopback import check_loopback_address
from ._tls import server_ssl_context

__all__ = [
    "GatewaySecurity",
    "SecuritySetupError",
    "add_security_arguments",
    "reload_on_sighup",
    "security_from_arguments",
]

logger = logging.getLogger("agentwire.security")


class SecuritySetupError(AgentwireError, ValueError):
    """The security options contradict each other or name a bad file."""


@attrs.frozen
class GatewaySecurity:
    """What the options ask of ``serve_gateway``."""

    ssl_context: ssl.SSLContext | None = None
    authenticator: Authenticator | None = None
    plaintext_address: str | None = None


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "security", "TLS, client certificates and access control (see README, Security)"
    )
    group.add_argument(
        "--tls-cert", metavar="FILE", help="serve TLS with this PEM certificate chain"
    )
    group.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    group.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="require client certificates signed by these PEM CAs (mutual TLS); "
        "a certificate's name is its principal",
    )
    group.add_argument(
        "--auth-tokens",
        metavar="FILE",
        help="access file (TOML): bearer tokens and certificate names of principals and "
        "what each may register, publish, subscribe to and call; re-read on SIGHUP",
    )
    group.add_argument(
        "--plaintext-address",
        metavar="HOST:PORT",
        help="also listen in plaintext on this loopback address, for workers on this "
        "machine that cannot speak TLS (AutoGen 0.7.5)",
    )


def security_from_arguments(args: argparse.Namespace) -> GatewaySecurity:
    """Build the TLS context and authenticator the options ask for; every
    problem is one :class:`SecuritySetupError` line."""
    cert, key, client_ca = args.tls_cert, args.tls_key, args.tls_client_ca
    if (cert is None) != (key is None):
        raise SecuritySetupError("--tls-cert and --tls-key go together: give both or neither")
    if client_ca is not None and cert is None:
        raise SecuritySetupError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS)")
    if args.plaintext_address is not None:
        if cert is None:
            raise SecuritySetupError(
                "--plaintext-address is a second listener beside TLS: give --tls-cert and "
                "--tls-key (without TLS, --address already listens in plaintext)"
            )
        try:
            check_loopback_address(args.plaintext_address)
        except ValueError as exc:
            raise SecuritySetupError(f"--plaintext-address: {exc}") from None
    context = None
    if cert is not None:
        try:
            context = server_ssl_context(cert, key, client_ca=client_ca)
        except ValueError as exc:
            raise SecuritySetupError(str(exc)) from None
    authenticator: Authenticator | None = None
    if args.auth_tokens is not None:
        try:
            authenticator = AccessFileAuthenticator(args.auth_tokens)
        except AccessFileError as exc:
            raise SecuritySetupError(str(exc)) from None
    elif client_ca is not None:
        authenticator = CertificateAuthenticator()
    return GatewaySecurity(context, authenticator, args.plaintext_address)


async def reload_on_sighup(
    authenticator: Authenticator | None,
    *,
    after_reload: Callable[[AccessFileError | None], Any] = lambda error: None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Re-read the access file of *authenticator* on every SIGHUP until
    cancelled. Connections keep their principal; new calls see the new file. A
    broken file is logged and the old one stays in force. Returns at once if
    there is no access file."""
    if not isinstance(authenticator, AccessFileAuthenticator):
        task_status.started()
        return
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            try:
                authenticator.reload()
            except AccessFileError as exc:
                logger.error("SIGHUP: kept the previous access file: %s", exc)
                after_reload(exc)
            else:
                after_reload(None)
