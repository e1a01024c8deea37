"""TLS with ALPN h2: agentwire client against agentwire server."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trio

from agentwire._transport import (
    ClientStream,
    ServerStream,
    _fdio,
    bidi,
    open_channel,
    open_grpc_server,
    unary,
)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a throwaway certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_unary_and_bidi(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))

    async def echo(request: bytes, stream: ServerStream) -> bytes:
        return request

    async def bidi_echo(stream: ServerStream) -> None:
        async for message in stream:
            await stream.send(message)

    methods = {"/t/Echo": unary(echo), "/t/Bidi": bidi(bidi_echo)}
    with trio.fail_after(30):
        async with (
            open_grpc_server(methods, "localhost", 0, ssl_context=server_context) as server,
            open_channel(server.address, ssl_context=client_context) as channel,
        ):
            big = b"t" * (3 * 2**20)
            assert await channel.unary("/t/Echo", big) == big
            async with channel.stream("/t/Bidi") as stream:
                for i in range(10):
                    await stream.send(b"%d" % i)
                    assert await stream.receive() == b"%d" % i


async def test_tls_client_refuses_unknown_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def echo(request: bytes, stream: ServerStream) -> bytes:
        return request

    from agentwire._transport import GRPCError, Status

    with trio.fail_after(30):
        async with open_grpc_server(
            {"/t/Echo": unary(echo)}, "localhost", 0, ssl_context=server_context
        ) as server:
            with pytest.raises(GRPCError) as info:
                async with open_channel(server.address, ssl_context=ssl.create_default_context()):
                    pass
            assert info.value.status is Status.UNAVAILABLE


@pytest.mark.parametrize("tls_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls_connections_read_and_write_the_socket_directly_on_the_fast_paths(
    certificate: tuple[Path, Path], io_paths: bool, tls_version: ssl.TLSVersion
) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server_context.maximum_version = tls_version
    client_context = ssl.create_default_context(cafile=str(cert))

    async def bidi_echo(stream: ServerStream) -> None:
        async for message in stream:
            await stream.send(message)

    with trio.fail_after(30):
        async with (
            open_grpc_server(
                {"/t/Bidi": bidi(bidi_echo)}, "localhost", 0, ssl_context=server_context
            ) as server,
            open_channel(server.address, ssl_context=client_context) as channel,
        ):
            messages = [b"%d" % i * (1 + i * 997 % 50_000) for i in range(200)]
            async with channel.stream("/t/Bidi") as stream:
                for message in messages[:20]:  # one at a time
                    await stream.send(message)
                    assert await stream.receive() == message
                async with trio.open_nursery() as nursery:  # many in flight, both ways
                    nursery.start_soon(_send_all, stream, messages[20:])
                    for message in messages[20:]:
                        assert await stream.receive() == message
            (server_conn,) = server._connections
            client_io, server_io = channel._conn._io, server_conn._io
            assert isinstance(client_io, _fdio.TLSSocketIO) is io_paths
            assert isinstance(server_io, _fdio.TLSSocketIO) is io_paths
            assert channel._conn._stream.version() == tls_version.name.replace("_", ".")


async def _send_all(stream: ClientStream, messages: list[bytes]) -> None:
    for message in messages:
        await stream.send(message)
