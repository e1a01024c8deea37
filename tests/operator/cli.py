"""Running the ``agentwire`` command in a subprocess from a trio test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

COMMAND = [sys.executable, "-m", "agentwire"]


@attrs.frozen
class Result:
    status: int
    out: str
    err: str


async def agentwire(*args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> Result:
    """Run ``agentwire *args`` to its end (bounded by the caller's deadline)."""
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTWIRE_")}
    full_env.update(env or {})
    done = await trio.run_process(
        [*COMMAND, *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=full_env,
    )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    """One line from *stream* (a process's stdout); what follows it is left unread
    only if it came in the same chunk, which a process printing one line cannot do."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


@asynccontextmanager
async def running(*args: str) -> AsyncIterator[trio.Process]:
    """``agentwire *args`` as a process for the block; killed if it is still running after."""
    process = await trio.lowlevel.open_process(
        [*COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(process: trio.Process) -> int:
    """SIGTERM *process* and wait for its exit status."""
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        return await process.wait()
