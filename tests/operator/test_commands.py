"""``agentwire call / publish / subscriptions / status`` as processes against a real gateway."""

from __future__ import annotations

import json
import pathlib

import pytest
import trio

from agentwire import Gateway, WorkerRuntime, open_gateway
from agentwire.security import AccessFileAuthenticator
from tests.operator.agents import RECEIVED
from tests.operator.cli import agentwire

TOKEN = "operator-token-0123456789"


async def test_call_prints_the_agents_result_as_json(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    done = await agentwire(
        "call",
        "--gateway",
        gateway.address,
        "greeter/k1",
        "--type",
        "Greet",
        "--json",
        '{"name": "ada", "times": 2}',
    )
    assert done.status == 0, done.err
    assert json.loads(done.out) == {"text": "hello ada x2 from k1"}


async def test_call_reads_the_payload_from_stdin(gateway: Gateway, greeter: WorkerRuntime) -> None:
    done = await agentwire(
        "call",
        "--gateway",
        gateway.address,
        "greeter/k2",
        "--type",
        "Greet",
        "--json",
        "-",
        stdin=b'{"name": "bob"}',
    )
    assert done.status == 0, done.err
    assert json.loads(done.out) == {"text": "hello bob x1 from k2"}


async def test_a_handlers_exception_is_one_line_and_exit_1(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    done = await agentwire(
        "call",
        "--gateway",
        gateway.address,
        "greeter/k",
        "--type",
        "Greet",
        "--json",
        '{"name":"fail"}',
    )
    assert done.status == 1
    assert done.out == ""
    assert done.err.count("\n") == 1
    assert "no greeting for fail" in done.err


async def test_an_unknown_agent_type_is_one_line_and_exit_1(gateway: Gateway) -> None:
    done = await agentwire(
        "call", "--gateway", gateway.address, "nobody/k", "--type", "Greet", "--json", "{}"
    )
    assert done.status == 1
    assert done.err.startswith("agentwire call: ")
    assert "nobody" in done.err
    assert done.err.count("\n") == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
async def test_bad_json_is_one_line_and_exit_2(gateway: Gateway, payload: str, reason: str) -> None:
    done = await agentwire(
        "publish", "--gateway", gateway.address, "t/s", "--type", "Greet", "--json", payload
    )
    assert done.status == 2
    assert reason in done.err
    assert done.err.count("\n") == 1
    assert gateway.statistics().events_received == 0


async def test_an_unreachable_gateway_is_one_line_and_exit_2() -> None:
    with trio.socket.socket() as unused:
        await unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: connections are refused
        done = await agentwire("status", "--gateway", f"127.0.0.1:{port}", "--timeout", "5")
    assert done.status == 2
    assert done.err.startswith(f"agentwire status: cannot reach the gateway at 127.0.0.1:{port}")
    assert done.err.count("\n") == 1


async def test_publish_reaches_the_subscribed_agent(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    done = await agentwire(
        "publish",
        "--gateway",
        gateway.address,
        "greetings/from-cli",
        "--type",
        "Greet",
        "--json",
        '{"name": "cy"}',
    )
    assert done.status == 0, done.err
    assert done.out == ""
    # The command returns once the gateway has routed the event.
    assert gateway.statistics().event_deliveries >= 1
    with trio.fail_after(10):
        await RECEIVED.wait_for(1)
    assert ("greetings", "from-cli", "cy") in RECEIVED.items


async def test_subscriptions_lists_them_for_people_and_scripts(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    text = await agentwire("subscriptions", "--gateway", gateway.address)
    assert text.status == 0, text.err
    assert "greetings -> greeter" in text.out
    as_json = await agentwire("subscriptions", "--gateway", gateway.address, "--json")
    assert as_json.status == 0, as_json.err
    subscriptions = json.loads(as_json.out)
    # Registering a type also subscribes it to its direct-message prefix, as AutoGen does.
    assert {
        (s.get("topic_type"), s.get("topic_type_prefix"), s["agent_type"]) for s in subscriptions
    } == {
        ("greetings", None, "greeter"),
        (None, "greeter:", "greeter"),
    }


async def test_status_shows_workers_types_and_counters(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    done = await agentwire("status", "--gateway", gateway.address, "--json")
    assert done.status == 0, done.err
    status = json.loads(done.out)
    clients = {client["client_id"]: client for client in status["clients"]}
    # The gateway's HTTP ingress publishes through a client of its own.
    assert clients.pop("agentwire-http-ingress")["agent_types"] == []
    [client] = clients.values()
    assert client["agent_types"] == ["greeter"]
    assert client["connected"] is True
    assert client["subscriptions"] == 2
    assert "greetings" in [sub.get("topic_type") for sub in status["subscriptions"]]
    assert status["statistics"]["data_connections"] == 2
    text = await agentwire("status", "--gateway", gateway.address)
    assert text.status == 0, text.err
    assert "clients: 2" in text.out
    assert "types: greeter" in text.out
    assert "data_connections: 2" in text.out


async def test_a_gateway_with_an_access_file_wants_the_token(tmp_path: pathlib.Path) -> None:
    access = tmp_path / "access.toml"
    access.write_text(f'[principals.ops]\ntoken = "{TOKEN}"\n')
    async with open_gateway(authenticator=AccessFileAuthenticator(access)) as gw:
        refused = await agentwire("status", "--gateway", gw.address, "--json")
        assert refused.status == 1
        assert "refused the credentials" in refused.err
        by_env = await agentwire(
            "status", "--gateway", gw.address, "--json", env={"AGENTWIRE_TOKEN": TOKEN}
        )
        assert by_env.status == 0, by_env.err
        assert json.loads(by_env.out)["clients"] == []
