"""A plaintext loopback listener beside a TLS server: same server, same methods."""

from __future__ import annotations

import pytest
import trio

from agentwire._security import client_ssl_context, server_ssl_context
from agentwire._security._loopback import PlaintextListenerError, serve_loopback_listener
from agentwire._transport import GRPCError, ServerStream, open_channel, open_grpc_server, unary

from .conftest import Pki


async def _echo(data: bytes, stream: ServerStream) -> bytes:
    return data


METHODS = {"/test.Echo/Echo": unary(_echo)}


async def test_plaintext_on_loopback_and_tls_elsewhere_reach_the_same_server(pki: Pki) -> None:
    tls = server_ssl_context(pki.server_cert, pki.server_key)
    async with trio.open_nursery() as nursery:
        async with open_grpc_server(METHODS, "127.0.0.1", 0, ssl_context=tls) as server:
            plain_address = await nursery.start(
                serve_loopback_listener, server, "127.0.0.1:0", nursery
            )
            async with open_channel(plain_address) as plain:
                assert await plain.unary("/test.Echo/Echo", b"plain") == b"plain"
                async with open_channel(
                    f"localhost:{server.port}", ssl_context=client_ssl_context(ca=pki.ca_file)
                ) as secure:
                    assert await secure.unary("/test.Echo/Echo", b"tls") == b"tls"
                    assert server.statistics().connections == 2  # one server for both
            with pytest.raises((GRPCError, OSError, trio.BrokenResourceError)):  # noqa: PT012
                with trio.fail_after(5):
                    async with open_channel(f"127.0.0.1:{server.port}") as wrong:
                        await wrong.unary("/test.Echo/Echo", b"plaintext to TLS")
        nursery.cancel_scope.cancel()  # stop accepting once the server has shut down


async def test_a_plaintext_listener_off_loopback_is_refused() -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(PlaintextListenerError, match="must be on a loopback address"):
            await serve_loopback_listener(object(), "0.0.0.0:0", nursery)  # type: ignore[arg-type]
