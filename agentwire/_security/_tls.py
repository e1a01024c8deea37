"""TLS contexts for the gateway and for workers, built from PEM files.

The gateway speaks gRPC over TLS 1.2+ with ALPN ``h2`` (what grpc-core and
agentwire's transport ask for). With a client CA it requires a certificate
from every client (mutual TLS), and the certificate's subject becomes the
client's principal (see ``_auth.py``).

Every problem with the files is found here, at start-up, and reported as one
:class:`TLSConfigError` line that names the file and says what is wrong.
"""

from __future__ import annotations

import os
import ssl

from .._errors import AgentwireError

__all__ = [
    "TLSConfigError",
    "client_ssl_context",
    "server_ssl_context",
    "split_secure_address",
]

ALPN_PROTOCOLS = ["h2"]

_SECURE_SCHEMES = ("grpcs://", "https://")
_PLAIN_SCHEMES = ("grpc://", "http://")


class TLSConfigError(AgentwireError, ValueError):
    """A certificate, key or CA file is missing, unreadable, malformed or mismatched."""


def _check_readable(path: str | os.PathLike[str], what: str) -> str:
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise TLSConfigError(f"cannot read the {what} {name}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TLSConfigError(f"the {what} {name} is not a PEM file (no '-----BEGIN' line)")
    return name


def _load_chain(
    context: ssl.SSLContext,
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str] | None,
    what: str,
) -> None:
    cert_name = _check_readable(cert, f"{what} certificate")
    key_name = _check_readable(key, f"{what} key") if key is not None else None
    try:
        context.load_cert_chain(cert_name, key_name)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason:
            raise TLSConfigError(
                f"the {what} key {key_name} does not belong to the certificate {cert_name}"
            ) from None
        raise TLSConfigError(
            f"cannot load the {what} certificate {cert_name}"
            + (f" with the key {key_name}" if key_name else "")
            + f": {reason} (both must be PEM; an encrypted key is not supported)"
        ) from None


def _load_ca(context: ssl.SSLContext, ca: str | os.PathLike[str], what: str) -> None:
    name = _check_readable(ca, what)
    try:
        context.load_verify_locations(cafile=name)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"cannot load the {what} {name}: {exc.reason or exc} (expected PEM certificates)"
        ) from None


def server_ssl_context(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str],
    *,
    client_ca: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A server context for a gateway: *cert* (PEM chain) and *key* (PEM).

    With *client_ca* (PEM bundle) every client must present a certificate
    signed by it (mutual TLS). TLS 1.2 or newer, ALPN ``h2``.
    Raises :class:`TLSConfigError` naming the file at fault.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    _load_chain(context, cert, key, "server")
    if client_ca is not None:
        _load_ca(context, client_ca, "client CA file")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(
    *,
    ca: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A client context for a worker: trusts *ca* (PEM bundle) or, without it,
    the system's CAs; presents *cert*/*key* when the gateway asks for a
    client certificate (mutual TLS). TLS 1.2 or newer, ALPN ``h2``.
    Raises :class:`TLSConfigError` naming the file at fault.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    if ca is not None:
        _load_ca(context, ca, "CA file")
    if cert is not None:
        _load_chain(context, cert, key, "client")
    elif key is not None:
        raise TLSConfigError("a client key was given without its certificate")
    return context


def split_secure_address(address: str) -> tuple[str, bool | None]:
    """``"grpcs://h:p"`` / ``"https://h:p"`` -> ``("h:p", True)``;
    ``"grpc://h:p"`` / ``"http://h:p"`` -> ``("h:p", False)``; a bare
    ``"h:p"`` -> ``("h:p", None)`` (the caller's ``ssl_context`` decides)."""
    lowered = address.lower()
    for scheme in _SECURE_SCHEMES:
        if lowered.startswith(scheme):
            return address[len(scheme) :].rstrip("/"), True
    for scheme in _PLAIN_SCHEMES:
        if lowered.startswith(scheme):
            return address[len(scheme) :].rstrip("/"), False
    return address, None
