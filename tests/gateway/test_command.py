"""``agentwire gateway`` as a real process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from agentwire._cli import build_parser, main


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["gateway"])
    assert args.address == "127.0.0.1:50051"
    assert args.rpc_timeout == 300.0
    assert args.max_message_size == 4 * 2**20
    assert build_parser().parse_args(["gateway", "--rpc-timeout", "0"]).rpc_timeout is None
    assert args.startup_grace == 5.0
    assert args.registration_grace == 30.0
    disabled = build_parser().parse_args(
        ["gateway", "--startup-grace", "0", "--registration-grace", "0"]
    )
    assert (disabled.startup_grace, disabled.registration_grace) == (0.0, None)


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
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"cannot listen on {address}" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "in use" in proc.stderr  # the OSError's reason, not a nursery's summary


def test_gateway_command_reports_an_unknown_host_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["gateway", "--address", "no-such-host.invalid:0"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "cannot listen on no-such-host.invalid:0: " in err
    assert "Exceptions from Trio nursery" not in err


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1:70000", "port 70000 is out of range (0 to 65535)"),
        ("0.0.0.0:99999", "port 99999 is out of range (0 to 65535)"),
        ("nonsense", "has no port"),
        (":0", "has no host"),
        ("127.0.0.1:-5", "port '-5' is not a number from 0 to 65535"),
        ("::1:80", "write an IPv6 host in brackets"),
    ],
)
def test_gateway_command_rejects_an_invalid_address_in_one_line(
    address: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gateway", "--address", address]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("agentwire gateway: invalid --address: ")
    assert reason in err
