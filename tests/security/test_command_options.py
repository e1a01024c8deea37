"""The gateway command's security options, apart from the gateway."""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import signal
import ssl

import pytest
import trio

from agentwire._security import (
    AccessFileAuthenticator,
    AccessFileError,
    CertificateAuthenticator,
    Credentials,
    bearer_metadata,
)
from agentwire._security._command import (
    SecuritySetupError,
    add_security_arguments,
    reload_on_sighup,
    security_from_arguments,
)

from .conftest import Pki

TOKEN = "first-token-0123456789"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_security_arguments(parser)
    return parser.parse_args(argv)


def test_no_options_mean_plaintext_and_no_authentication() -> None:
    security = security_from_arguments(_parse())
    assert security.ssl_context is None
    assert security.authenticator is None


def test_a_certificate_and_key_give_tls_and_a_client_ca_gives_certificate_principals(
    pki: Pki,
) -> None:
    security = security_from_arguments(
        _parse("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    )
    assert security.ssl_context is not None
    assert security.ssl_context.verify_mode == ssl.CERT_NONE
    mutual = security_from_arguments(
        _parse(
            *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
            *("--tls-client-ca", str(pki.ca_file), "--plaintext-address", "127.0.0.1:0"),
        )
    )
    assert mutual.ssl_context is not None
    assert mutual.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert isinstance(mutual.authenticator, CertificateAuthenticator)
    assert mutual.plaintext_address == "127.0.0.1:0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--tls-cert", "c.pem"), "--tls-cert and --tls-key go together"),
        (("--tls-client-ca", "ca.pem"), "--tls-client-ca needs --tls-cert"),
        (("--plaintext-address", "127.0.0.1:1"), "--plaintext-address is a second listener"),
        (("--auth-tokens", "/nonexistent/a.toml"), "cannot read the access file"),
    ],
)
def test_contradictions_and_bad_files_are_one_line(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(SecuritySetupError, match=message) as info:
        security_from_arguments(_parse(*argv))
    assert "\n" not in str(info.value)


def test_a_plaintext_listener_off_loopback_is_refused(pki: Pki) -> None:
    with pytest.raises(SecuritySetupError, match=r"--plaintext-address: .*loopback"):
        security_from_arguments(
            _parse(
                *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
                *("--plaintext-address", "0.0.0.0:50052"),
            )
        )


def test_a_mismatched_key_is_one_line_naming_both_files(pki: Pki) -> None:
    with pytest.raises(SecuritySetupError, match="does not belong to the certificate"):
        security_from_arguments(
            _parse("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.client_key))
        )


async def test_sighup_reloads_the_access_file_and_a_broken_one_keeps_the_old(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "access.toml"
    path.write_text(f'[principals.a]\ntoken = "{TOKEN}"\n')
    security = security_from_arguments(_parse("--auth-tokens", str(path)))
    auth = security.authenticator
    assert isinstance(auth, AccessFileAuthenticator)
    outcomes: list[AccessFileError | None] = []
    reloaded = trio.Event()

    def after_reload(error: AccessFileError | None) -> None:
        nonlocal reloaded
        outcomes.append(error)
        reloaded.set()

    def credentials(token: str) -> Credentials:
        return Credentials(dict(bearer_metadata(token)))

    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(reload_on_sighup, auth, after_reload=after_reload))
        path.write_text(f'[principals.b]\ntoken = "{TOKEN}"\n')
        os.kill(os.getpid(), signal.SIGHUP)
        await reloaded.wait()
        assert auth.authenticate(credentials(TOKEN)).name == "b"
        reloaded = trio.Event()
        path.write_text("[principals.b\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await reloaded.wait()
        assert auth.authenticate(credentials(TOKEN)).name == "b"
        nursery.cancel_scope.cancel()
    assert outcomes[0] is None
    assert isinstance(outcomes[1], AccessFileError)
