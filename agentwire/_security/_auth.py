"""Authentication: a call's metadata and TLS peer certificate -> a principal.

An *authenticator* is any object with ``authenticate(credentials) ->
Principal`` that raises :class:`AuthenticationError` to refuse (the gateway
answers UNAUTHENTICATED). It runs once per call or stream opened (never per
message) on the gateway's event loop, so it must not block.

Shipped: :class:`CertificateAuthenticator` (mutual TLS: the certificate's
name is the principal, with every right) and :class:`AccessFileAuthenticator`
(bearer tokens and certificate names from an access file, each with its
rights; see ``_access_file.py``). Tokens travel as ``authorization: Bearer
<token>`` metadata; they are compared in constant time and never logged nor
echoed in an error.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from .._errors import AuthenticationError
from ._rights import Principal

__all__ = [
    "AUTHORIZATION_KEY",
    "LOOPBACK",
    "AuthenticationError",
    "Authenticator",
    "CertificateAuthenticator",
    "Credentials",
    "TokenTable",
    "bearer_metadata",
    "certificate_names",
    "is_loopback_host",
    "token_digest",
]

AUTHORIZATION_KEY = "authorization"
LOOPBACK = "loopback"
_BEARER = "bearer "


@attrs.frozen(slots=True)
class Credentials:
    """What a client presented: its call metadata, over mutual TLS the peer
    certificate as ``ssl.SSLSocket.getpeercert()`` returns it, and its
    address (``host:port``, ``[v6]:port``; ``""`` if unknown)."""

    metadata: Mapping[str, str]
    peer_certificate: Mapping[str, Any] | None = None
    peer: str = ""

    @property
    def from_loopback(self) -> bool:
        """Whether the call came from this machine (a loopback address)."""
        host = self.peer.rpartition(":")[0].strip("[]")
        return is_loopback_host(host)


def is_loopback_host(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost`` (not a name that resolves to one)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticator(Protocol):
    def authenticate(self, credentials: Credentials) -> Principal:
        """The caller's principal; raise :class:`AuthenticationError` to refuse."""
        ...


LOOPBACK_PRINCIPAL = Principal(LOOPBACK)


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata a worker sends with every call to present *token*."""
    if not token or any(ch in token for ch in "\r\n\0"):
        raise ValueError("a token must be a non-empty string without line breaks")
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)


def bearer_token(metadata: Mapping[str, str]) -> str | None:
    """The token of ``authorization: Bearer <token>``, ``None`` if the header is absent.
    Raises :class:`AuthenticationError` for another scheme."""
    value = metadata.get(AUTHORIZATION_KEY)
    if value is None:
        return None
    if value[: len(_BEARER)].lower() != _BEARER or not value[len(_BEARER) :].strip():
        raise AuthenticationError(
            "the authorization metadata must be 'Bearer <token>' (other schemes are not accepted)"
        )
    return value[len(_BEARER) :].strip()


def certificate_names(certificate: Mapping[str, Any] | None) -> list[str]:
    """The names a peer certificate asserts: subject common names first, then
    subjectAltName DNS, email and URI values (in certificate order)."""
    if not certificate:
        return []
    names: list[str] = []
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(value)
    for kind, value in certificate.get("subjectAltName", ()):
        if kind in ("DNS", "email", "URI") and value not in names:
            names.append(value)
    return names


def token_digest(token: str) -> bytes:
    """SHA-256 of the token's UTF-8 bytes (what an access file's ``token_sha256`` holds)."""
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Tokens -> principals, looked up in constant time (every entry is
    compared with :func:`hmac.compare_digest` on SHA-256 digests, so neither the
    matching entry nor the token's length shows in the time taken)."""

    def __init__(self, digests: Mapping[bytes, Principal]) -> None:
        self._entries = list(digests.items())

    @classmethod
    def from_tokens(cls, tokens: Mapping[str, Principal]) -> TokenTable:
        return cls({token_digest(token): principal for token, principal in tokens.items()})

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> Principal | None:
        digest = token_digest(token)
        found: Principal | None = None
        for candidate, principal in self._entries:
            if hmac.compare_digest(candidate, digest):
                found = principal
        return found


@attrs.define(slots=True)
class CertificateAuthenticator:
    """Mutual TLS only: the verified client certificate's first name (see
    :func:`certificate_names`) is the principal, with every right.

    A call from a loopback address without a certificate (a gateway's
    plaintext loopback listener, for AutoGen workers) is *loopback*, the
    principal ``loopback`` with every right by default; ``loopback=None``
    refuses such calls.
    """

    loopback: Principal | None = LOOPBACK_PRINCIPAL

    def authenticate(self, credentials: Credentials) -> Principal:
        names = certificate_names(credentials.peer_certificate)
        if not names:
            if self.loopback is not None and credentials.from_loopback:
                return self.loopback
            raise AuthenticationError(
                "a client certificate naming the client (subject CN or subjectAltName) "
                "is required: connect with mutual TLS"
            )
        return Principal(names[0])
