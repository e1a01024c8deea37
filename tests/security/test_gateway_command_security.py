"""``agentwire gateway`` with TLS and an access file, as a real process."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys

import pytest
import trio

from agentwire import AgentId, open_worker, serializers_for_type
from agentwire.security import client_ssl_context

from .conftest import Pki, Reply, Shout, Shouter

GUARD = 30
TOKEN = "cli-token-0123456789"
ROTATED = "cli-rotated-0123456789"


def _gateway(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_help_lists_the_security_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentwire", "gateway", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for flag in ("--tls-cert", "--tls-key", "--tls-client-ca", "--auth-tokens"):
        assert flag in out
    assert "--plaintext-address" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"),
         "cannot read the server certificate /nonexistent/c.pem"),
        (("--tls-cert", "c.pem"), "--tls-cert and --tls-key go together"),
        (("--auth-tokens", "/nonexistent/a.toml"), "cannot read the access file"),
    ],
)  # fmt: skip
def test_bad_security_options_are_one_line_and_exit_2(argv: tuple[str, ...], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert message in proc.stderr


def test_a_mismatched_key_is_refused_at_start_up(pki: Pki) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0",
         "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.client_key)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "does not belong to the certificate" in proc.stderr


async def test_a_tls_gateway_with_tokens_reloads_them_on_sighup(
    pki: Pki, tmp_path: pathlib.Path
) -> None:
    access = tmp_path / "access.toml"
    access.write_text(f'[principals.w]\ntoken = "{TOKEN}"\nregister = ["shouter"]\n')
    proc = _gateway(
        *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
        *("--auth-tokens", str(access), "--log-level", "info"),
    )
    try:
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        port = int(line.rsplit(":", 1)[1])
        context = client_ssl_context(ca=pki.ca_file)
        logged: list[str] = []
        with trio.fail_after(GUARD):
            async with open_worker(f"localhost:{port}", ssl_context=context, token=TOKEN) as w:
                await Shouter.register(w, "shouter", Shouter)
                w.add_message_serializer(serializers_for_type(Reply))
                access.write_text(f'[principals.w]\ntoken = "{ROTATED}"\nregister = ["*"]\n')
                proc.send_signal(signal.SIGHUP)
                await trio.to_thread.run_sync(_read_until, proc, "reloaded the access file", logged)
                # the connected worker keeps working; a new one needs the new token
                async with open_worker(
                    f"localhost:{port}", ssl_context=context, token=ROTATED
                ) as w2:
                    w2.add_message_serializer(serializers_for_type(Reply))
                    assert await w2.send_message(Shout("x"), AgentId("shouter", "1")) == Reply("X")
                assert await w.send_message(Shout("y"), AgentId("shouter", "1")) == Reply("Y")
        proc.send_signal(signal.SIGTERM)
        _, rest = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=GUARD))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(logged) + rest
    assert proc.returncode == 0, err
    assert TOKEN not in err
    assert ROTATED not in err


def _read_until(proc: subprocess.Popen[str], text: str, logged: list[str]) -> None:
    """Read the gateway's stderr (its log) up to the first line holding *text*."""
    assert proc.stderr is not None
    while text not in (line := proc.stderr.readline()):
        assert line, f"the gateway exited; its log: {''.join(logged)}"
        logged.append(line)
    logged.append(line)
