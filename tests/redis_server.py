"""A real redis-server for the tests that need one: started on a free loopback port, persistence
off, once per test session (``redis_url``); ``redis_process`` lets a test stop and restart it.

There is no skip: a machine without ``redis-server`` fails these tests with a line saying so
(``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import attrs
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define
class RedisProcess:
    """One redis-server process on ``port``; ``stop()`` and ``start()`` keep the port."""

    port: int
    directory: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # Not a synchronisation sleep: a process start is outside any trio clock; poll the port.
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(16)


@pytest.fixture(scope="session")
def _redis_session() -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="agentwire-redis-") as directory:
        server = RedisProcess(port=_free_port(), directory=directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_process(_redis_session: RedisProcess) -> Iterator[RedisProcess]:
    """The session's redis-server, empty; running again after the test if the test stopped it."""
    if _redis_session.process is None:
        _redis_session.start()
    _redis_session.flush()
    yield _redis_session
    if _redis_session.process is None:
        _redis_session.start()


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> str:
    """``redis://127.0.0.1:PORT/0`` of an empty, running redis-server."""
    return redis_process.url
