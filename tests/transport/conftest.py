"""Helpers for the transport tests: subprocess peers (grpcio, grpclib)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from agentwire._transport import GrpcServer, Method, _fastpath

PEERS = Path(__file__).parent / "peers"


@pytest.fixture(autouse=True, params=["fast-paths", "public-apis"])
def io_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Every transport test runs twice: with the fast paths, and with public APIs only."""
    fast = request.param == "fast-paths"
    monkeypatch.setattr(_fastpath, "ENABLED", fast)
    return fast


def request_headers(path: str) -> list[tuple[str, str]]:
    """The headers of a gRPC request on ``path``, for bare h2 clients."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "x"),
        (":path", path),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


@asynccontextmanager
async def serving_in_memory(
    methods: Mapping[str, Method], **server_kw: Any
) -> AsyncIterator[tuple[trio.abc.Stream, GrpcServer]]:
    """One server connection over memory streams; yields the client's end and the server."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = GrpcServer(methods, **server_kw)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_connection, server_stream)
        yield client_stream, server
        nursery.cancel_scope.cancel()


def peer_script(kind: str) -> str:
    return str(PEERS / f"peer_{kind}.py")


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            raise RuntimeError(f"peer exited before printing its port (got {line!r})")
        line += chunk
    return line


@asynccontextmanager
async def peer_server(kind: str) -> AsyncIterator[tuple[str, trio.Process]]:
    """Run a peer server in a subprocess; yield its address once it listens."""
    process = await trio.lowlevel.open_process(
        [sys.executable, peer_script(kind), "server"], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(30):
            port = int(await _read_line(process.stdout))
        yield f"127.0.0.1:{port}", process
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def run_peer_client(kind: str, address: str, *scenarios: str) -> dict[str, dict[str, object]]:
    """Run scenarios in a peer client subprocess; return their results by name."""
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, peer_script(kind), "client", address, *scenarios],
            capture_stdout=True,
        )
    results = {}
    for line in done.stdout.decode().splitlines():
        result = json.loads(line)
        results[result.pop("scenario")] = result
    return results
