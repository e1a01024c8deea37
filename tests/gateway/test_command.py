"""``agentwire gateway`` as a real process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from agentwire._cli import build_parser


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["gateway"])
    assert args.address == "127.0.0.1:50051"
    assert args.rpc_timeout == 300.0
    assert args.max_message_size == 4 * 2**20
    assert build_parser().parse_args(["gateway", "--rpc-timeout", "0"]).rpc_timeout is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_gateway_command_prints_address_and_stops_on_signal(signum: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the gateway listens
        assert line.startswith("agentwire gateway listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        assert port > 0
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == ""  # exactly one line in total


def test_gateway_command_reports_bind_failure() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = subprocess.run(
            [sys.executable, "-m", "agentwire", "gateway", "--address", address],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"cannot listen on {address}" in proc.stderr
