"""The access file: who may connect to a gateway, and what each principal may do.

A TOML file (``agentwire gateway --auth-tokens FILE``), one table per principal::

    [principals.orders]
    token = "a long random string"        # or token_sha256 = "<hex digest>"
    register = ["orders", "orders.*"]     # agent types it may register (and serve)
    publish = ["order-events"]            # topic types it may publish to
    subscribe = ["order-events", "billing.*"]
    call = ["*"]                          # agent types it may call (default: all)

    [principals.billing]
    certificate = "billing.example.org"   # mutual TLS: a client certificate with this name
    register = ["billing"]

    [principals.local-autogen]
    loopback = true                       # calls from 127.0.0.1/::1 with no token nor certificate
    register = ["legacy"]

A pattern is a name, a prefix ending in ``*``, or ``"*"``. A right left out
allows nothing, except ``call``, which allows every agent type. A principal
needs a ``token`` (at least 16 characters), a ``token_sha256``, a
``certificate``, or ``loopback = true`` (at most one principal: the one of
calls from this machine that present neither, such as AutoGen workers on a
gateway's plaintext loopback listener; without it such calls are refused).
Every mistake is reported as one line naming the file and the entry; a token
is never part of a message.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from typing import Any

import attrs

from .._errors import AgentwireError
from ._auth import (
    AuthenticationError,
    Credentials,
    TokenTable,
    bearer_token,
    certificate_names,
    token_digest,
)
from ._rights import EVERYTHING, NamePatterns, Principal, Rights

__all__ = ["AccessFile", "AccessFileAuthenticator", "AccessFileError", "parse_access_file"]

logger = logging.getLogger("agentwire.security")

MIN_TOKEN_LENGTH = 16
_RIGHTS = ("register", "publish", "subscribe", "call")
_KEYS = ("token", "token_sha256", "certificate", "loopback", *_RIGHTS)


class AccessFileError(AgentwireError, ValueError):
    """The access file is unreadable or says something invalid (the message names where)."""


@attrs.frozen(slots=True)
class AccessFile:
    """A parsed access file."""

    principals: tuple[Principal, ...]
    tokens: TokenTable = attrs.field(eq=False)
    certificates: Mapping[str, Principal]
    loopback: Principal | None = None


def _rights(where: str, entry: Mapping[str, Any]) -> Rights:
    values: dict[str, NamePatterns] = {}
    for right in _RIGHTS:
        raw = entry.get(right)
        if raw is None:
            values[right] = EVERYTHING if right == "call" else NamePatterns()
            continue
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise AccessFileError(f"{where}: {right!r} must be a list of strings")
        try:
            values[right] = NamePatterns(raw)
        except ValueError as exc:
            raise AccessFileError(f"{where}: {right!r}: {exc}") from None
    return Rights(**values)


def _digest(where: str, entry: Mapping[str, Any]) -> bytes | None:
    token, hexdigest = entry.get("token"), entry.get("token_sha256")
    if token is not None and hexdigest is not None:
        raise AccessFileError(f"{where}: give either 'token' or 'token_sha256', not both")
    if token is not None:
        if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_LENGTH:
            raise AccessFileError(
                f"{where}: 'token' must be a string of at least {MIN_TOKEN_LENGTH} characters "
                "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if token != token.strip() or any(ch in token for ch in "\r\n\0"):
            raise AccessFileError(f"{where}: 'token' must not hold spaces around it or breaks")
        return token_digest(token)
    if hexdigest is not None:
        try:
            digest = bytes.fromhex(hexdigest) if isinstance(hexdigest, str) else b""
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise AccessFileError(f"{where}: 'token_sha256' must be 64 hexadecimal digits")
        return digest
    return None


def parse_access_file(text: str, source: str = "<access file>") -> AccessFile:
    """Parse the TOML *text* of an access file; *source* names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AccessFileError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"principals"})
    if unknown:
        raise AccessFileError(
            f"{source}: unknown top-level key {unknown[0]!r} (expected [principals.NAME] tables)"
        )
    tables = document.get("principals", {})
    if not isinstance(tables, dict):
        raise AccessFileError(f"{source}: 'principals' must hold [principals.NAME] tables")
    principals: list[Principal] = []
    digests: dict[bytes, Principal] = {}
    certificates: dict[str, Principal] = {}
    loopback: Principal | None = None
    for name, entry in tables.items():
        where = f"{source}: [principals.{name}]"
        if not isinstance(entry, dict):
            raise AccessFileError(f"{where} must be a table")
        for key in entry:
            if key not in _KEYS:
                raise AccessFileError(
                    f"{where}: unknown key {key!r} (expected one of {', '.join(_KEYS)})"
                )
        principal = Principal(name, _rights(where, entry))
        digest = _digest(where, entry)
        certificate = entry.get("certificate")
        if certificate is not None and (not isinstance(certificate, str) or not certificate):
            raise AccessFileError(f"{where}: 'certificate' must be a certificate name (string)")
        is_loopback = entry.get("loopback", False)
        if not isinstance(is_loopback, bool):
            raise AccessFileError(f"{where}: 'loopback' must be true or false")
        if is_loopback:
            if loopback is not None:
                raise AccessFileError(
                    f"{where}: only one principal may be 'loopback' "
                    f"([principals.{loopback.name}] already is)"
                )
            loopback = principal
        if digest is None and certificate is None and not is_loopback:
            raise AccessFileError(
                f"{where}: give a 'token', a 'token_sha256', a 'certificate' or 'loopback = true'"
            )
        if digest is not None:
            other = digests.setdefault(digest, principal)
            if other is not principal:
                raise AccessFileError(f"{where} has the same token as [principals.{other.name}]")
        if certificate is not None:
            other = certificates.setdefault(certificate, principal)
            if other is not principal:
                raise AccessFileError(
                    f"{where} names the same certificate as [principals.{other.name}]"
                )
        principals.append(principal)
    return AccessFile(tuple(principals), TokenTable(digests), certificates, loopback)


def load_access_file(path: str | os.PathLike[str]) -> AccessFile:
    """Read and parse the access file at *path* (:class:`AccessFileError` if it fails)."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AccessFileError(f"cannot read the access file {name}: {reason}") from None
    return parse_access_file(text, name)


class AccessFileAuthenticator:
    """Authenticates by bearer token, or by client certificate name, against an
    access file; :meth:`reload` re-reads it (connections keep their principal)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.access = load_access_file(self.path)

    def reload(self) -> None:
        """Re-read the file. On error the old contents stay in force and
        :class:`AccessFileError` is raised."""
        self.access = load_access_file(self.path)
        logger.info(
            "reloaded the access file %s (%d principals)", self.path, len(self.access.principals)
        )

    def authenticate(self, credentials: Credentials) -> Principal:
        access = self.access
        token = bearer_token(credentials.metadata)
        if token is not None:
            principal = access.tokens.lookup(token)
            if principal is None:
                raise AuthenticationError("the bearer token is not valid on this gateway")
            return principal
        for name in certificate_names(credentials.peer_certificate):
            principal = access.certificates.get(name)
            if principal is not None:
                return principal
        if (
            access.loopback is not None
            and not credentials.peer_certificate
            and credentials.from_loopback
        ):
            return access.loopback
        if credentials.peer_certificate:
            names = ", ".join(certificate_names(credentials.peer_certificate)) or "no name"
            raise AuthenticationError(
                f"the client certificate ({names}) is not in the gateway's access file, "
                "and no bearer token was sent"
            )
        raise AuthenticationError(
            "credentials required: send 'authorization: Bearer <token>' metadata "
            "(agentwire: open_worker(..., token=...))"
        )
