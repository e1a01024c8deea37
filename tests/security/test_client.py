"""The worker's side: TLS from the address, metadata on every call."""

from __future__ import annotations

import ssl

import pytest

from agentwire._security import TLSConfigError
from agentwire._security._client import call_metadata, resolve_tls, with_metadata
from agentwire._transport import ServerStream, bidi, open_channel, open_grpc_server, unary


def test_a_secure_scheme_brings_a_default_context_and_a_bare_address_follows_the_context() -> None:
    address, context = resolve_tls("grpcs://gw.example.org:443", None)
    assert address == "gw.example.org:443"
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    mine = ssl.create_default_context()
    assert resolve_tls("gw:1", mine) == ("gw:1", mine)
    assert resolve_tls("gw:1", None) == ("gw:1", None)
    with pytest.raises(TLSConfigError, match="asks for plaintext but an ssl_context"):
        resolve_tls("grpc://gw:1", mine)


def test_call_metadata_puts_the_token_first_and_refuses_what_the_worker_sets() -> None:
    assert call_metadata("tok", [("X-Team", "a")]) == (
        ("authorization", "Bearer tok"),
        ("x-team", "a"),
    )
    assert call_metadata(None, [("authorization", "Bearer t")]) == (("authorization", "Bearer t"),)
    with pytest.raises(ValueError, match="'client-id' is set by the worker"):
        call_metadata(None, [("client-id", "x")])
    with pytest.raises(ValueError, match="pass token= instead"):
        call_metadata("tok", [("authorization", "Bearer other")])
    with pytest.raises(ValueError, match="line break"):
        call_metadata(None, [("x-a", "1\r\nx-b: 2")])


async def test_every_unary_call_and_stream_carries_the_extra_metadata() -> None:
    seen: list[str | None] = []

    async def record(data: bytes, stream: ServerStream) -> bytes:
        seen.append(stream.metadata.get("authorization"))
        return data

    async def record_stream(stream: ServerStream) -> None:
        seen.append(stream.metadata.get("authorization"))
        await stream.send(b"ok")

    methods = {"/t.S/U": unary(record), "/t.S/B": bidi(record_stream)}
    async with open_grpc_server(methods, "127.0.0.1", 0) as server:
        connect = with_metadata(
            lambda: open_channel(f"127.0.0.1:{server.port}"), call_metadata("tok", ())
        )
        async with connect() as channel:
            assert await channel.unary("/t.S/U", b"x", metadata=(("client-id", "c"),)) == b"x"
            async with channel.stream("/t.S/B") as stream:
                assert await stream.receive() == b"ok"
    assert seen == ["Bearer tok", "Bearer tok"]


def test_without_extra_metadata_the_channel_is_not_wrapped() -> None:
    def connect() -> object:
        raise AssertionError("not called")

    assert with_metadata(connect, ()) is connect  # type: ignore[arg-type]
