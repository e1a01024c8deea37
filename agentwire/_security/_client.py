"""The worker's side: which TLS context an address asks for, and metadata
(a bearer token) added to every call of a channel."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:  # the worker imports this module
    from .._worker._protocol import ChannelLike
from ._auth import bearer_metadata
from ._tls import TLSConfigError, split_secure_address

__all__ = ["call_metadata", "resolve_tls", "with_metadata"]


def resolve_tls(
    address: str, ssl_context: ssl.SSLContext | None
) -> tuple[str, ssl.SSLContext | None]:
    """``(host:port, context)`` for a worker's *address* and *ssl_context*.

    ``grpcs://`` / ``https://`` ask for TLS: *ssl_context*, or else
    ``ssl.create_default_context()`` (the system's CAs). ``grpc://`` /
    ``http://`` ask for plaintext (then an *ssl_context* is a contradiction).
    A bare ``host:port`` uses TLS exactly when *ssl_context* is given.
    """
    bare, secure = split_secure_address(address)
    if secure is False and ssl_context is not None:
        raise TLSConfigError(
            f"{address!r} asks for plaintext but an ssl_context was given: "
            "use grpcs://HOST:PORT or a bare HOST:PORT with TLS"
        )
    if secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
    return bare, ssl_context


def call_metadata(
    token: str | None, metadata: Sequence[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    """The metadata a worker adds to every call: ``authorization: Bearer
    <token>`` (if *token*) and *metadata* (lower-case keys, as HTTP/2 wants)."""
    extra = [(str(key).lower(), str(value)) for key, value in metadata]
    for key, value in extra:
        if key in ("client-id", "authorization") and not (key == "authorization" and not token):
            raise ValueError(
                f"metadata key {key!r} is set by the worker itself"
                + (" (pass token= instead)" if key == "authorization" else "")
            )
        if any(ch in key + value for ch in "\r\n\0"):
            raise ValueError(f"metadata {key!r} holds a line break or NUL")
    if token is not None:
        extra[:0] = bearer_metadata(token)
    return tuple(extra)


_C = TypeVar("_C", bound="ChannelLike")


class _WithMetadata(Generic[_C]):
    """A channel whose every call also carries *extra* metadata."""

    def __init__(self, channel: _C, extra: tuple[tuple[str, str], ...]) -> None:
        self._channel = channel
        self._extra = extra

    async def unary(
        self,
        path: str,
        request: bytes,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,  # noqa: ASYNC109 (the transport's signature)
    ) -> bytes:
        return await self._channel.unary(
            path, request, metadata=(*metadata, *self._extra), timeout=timeout
        )

    def stream(
        self,
        path: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
    ) -> AbstractAsyncContextManager[Any]:
        return self._channel.stream(path, metadata=(*metadata, *self._extra), timeout=timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def with_metadata(
    connect: Callable[[], AbstractAsyncContextManager[_C]],
    extra: tuple[tuple[str, str], ...],
) -> Callable[[], AbstractAsyncContextManager[Any]]:
    """Wrap a worker's ``connect`` so every call of its channels carries *extra*."""
    if not extra:
        return connect

    @asynccontextmanager
    async def connect_with_metadata() -> AsyncIterator[_WithMetadata[_C]]:
        async with connect() as channel:
            yield _WithMetadata(channel, extra)

    return connect_with_metadata
