"""Running the ``agentwire`` command in a subprocess from a trio test."""

from __future__ import annotations

import os
import sys

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
