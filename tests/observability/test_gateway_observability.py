"""The gateway's health service and metrics endpoint, from trio and from the command line."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error

import grpc
import pytest
import trio
from grpc_health.v1 import health_pb2

from agentwire import AgentwireError, open_gateway
from agentwire._cli import build_parser, main

from .test_health import check, watching
from .test_metrics import samples, scrape

GUARD = 20.0  # seconds: a hang guard, never a synchronisation
ServingStatus = health_pb2.HealthCheckResponse.ServingStatus


async def test_a_gateway_is_serving_while_up_for_the_server_and_agent_rpc() -> None:
    with trio.fail_after(GUARD):
        async with open_gateway("127.0.0.1:0") as gw:
            assert await check(gw.address, "") == ServingStatus.SERVING
            assert await check(gw.address, "agents.AgentRpc") == ServingStatus.SERVING
            with pytest.raises(grpc.RpcError) as info:
                await check(gw.address, "agents.Nope")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_watcher_sees_not_serving_once_the_gateway_shuts_down() -> None:
    with trio.fail_after(GUARD):
        async with (
            open_gateway("127.0.0.1:0", grace_period=GUARD) as gw,
            watching(gw.address, "agents.AgentRpc") as watcher,
        ):
            assert await watcher.next() == ServingStatus.SERVING
            async with trio.open_nursery() as nursery:
                nursery.start_soon(gw.shutdown)
                assert await watcher.next() == ServingStatus.NOT_SERVING
                # The watch ends at once: it does not hold the shutdown up for the grace period.
                assert await watcher.next() == grpc.StatusCode.UNAVAILABLE


async def test_open_gateway_serves_metrics_while_it_runs() -> None:
    with trio.fail_after(GUARD):
        async with open_gateway("127.0.0.1:0", metrics_address="127.0.0.1:0") as gw:
            assert gw.metrics_address is not None
            url = f"http://{gw.metrics_address}/metrics"
            status, _, text = await scrape(url)
            assert status == 200
            assert samples(text)[("agentwire_gateway_workers", ())] == 0
        with pytest.raises(urllib.error.URLError):
            await scrape(url)


async def test_a_gateway_without_a_metrics_address_serves_none() -> None:
    async with open_gateway("127.0.0.1:0") as gw:
        assert gw.metrics_address is None


async def test_metrics_without_the_extra_fail_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in sys.modules if n.partition(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "agentwire._observability._metrics", raising=False)
    with pytest.raises(AgentwireError, match=r"pip install 'trio-agentwire\[metrics\]'"):
        async with open_gateway("127.0.0.1:0", metrics_address="127.0.0.1:0"):
            raise AssertionError("the gateway started without its metrics")


def test_an_invalid_metrics_address_is_refused_before_starting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["gateway", "--address", "127.0.0.1:0", "--metrics-address", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "invalid --metrics-address" in captured.err


def test_gateway_help_lists_the_metrics_address() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    text = commands["gateway"].format_help()
    assert "--metrics-address HOST:PORT" in text
    assert build_parser().parse_args(["gateway"]).metrics_address is None


async def test_the_gateway_command_serves_metrics_at_the_address_it_prints() -> None:
    command = [sys.executable, "-m", "agentwire", "gateway", "--address", "127.0.0.1:0"]
    command += ["--metrics-address", "127.0.0.1:0"]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        with trio.fail_after(GUARD * 2):
            assert process.stdout is not None
            lines = b""
            while lines.count(b"\n") < 2:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"the gateway exited: {lines!r}"
                lines += chunk
            first, second = lines.decode().splitlines()[:2]
            assert first.startswith("agentwire gateway listening on 127.0.0.1:")
            assert second.startswith("agentwire gateway metrics on http://127.0.0.1:")
            url = second.rsplit(" ", 1)[1]
            status, _, text = await scrape(url)
            assert status == 200
            assert ("agentwire_gateway_clients", ()) in samples(text)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()
