"""CloudEvents over HTTP into a gateway, with a real HTTP client (httpx) and curl."""

from __future__ import annotations

import json
import pathlib
import shutil

import httpx
import pytest
import trio
import trio.testing

from agentwire import Gateway, WorkerRuntime, open_gateway
from agentwire._observability._http import HttpRequest, HttpServer
from agentwire._operator._cloudevents_http import event_from_http
from agentwire._operator._ingress import HttpIngress, _handle
from agentwire._security import AccessGuard
from agentwire.security import AccessFileAuthenticator
from tests.operator.agents import RECEIVED

HOOK_TOKEN = "hook-token-0123456789"


def binary_headers(source: str, **extra: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": f"id-{source}",
        "ce-type": "greetings",
        "ce-source": source,
        "ce-dataschema": "Greet",
        "content-type": "application/json",
        **extra,
    }


async def post(gateway: Gateway, content: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"http://{gateway.http_address}/", content=content, headers=headers
        )


async def wait_received(source: str) -> tuple[str, str, str]:
    with trio.fail_after(10):
        while True:
            for item in RECEIVED.items:
                if item[1] == source:
                    return item
            await RECEIVED.wait_for(len(RECEIVED.items) + 1)


async def test_a_binary_mode_event_reaches_the_subscribed_agent(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    response = await post(gateway, b'{"name": "ed"}', binary_headers("hook-binary"))
    assert response.status_code == 202, response.text
    assert await wait_received("hook-binary") == ("greetings", "hook-binary", "ed")
    ingress = gateway.http_ingress
    assert ingress is not None
    assert ingress.accepted == 1


async def test_a_structured_mode_event_reaches_the_subscribed_agent(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    event = {
        "specversion": "1.0",
        "id": "s-1",
        "type": "greetings",
        "source": "hook-structured",
        "dataschema": "Greet",
        "data": {"name": "flo", "times": 3},
    }
    response = await post(
        gateway, json.dumps(event).encode(), {"content-type": "application/cloudevents+json"}
    )
    assert response.status_code == 202, response.text
    assert await wait_received("hook-structured") == ("greetings", "hook-structured", "flo")


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({"content-type": "application/json"}, b"{}", 400, "not a CloudEvent"),
        (binary_headers("s", **{"ce-specversion": "9.9"}), b"{}", 400, "malformed"),
        (binary_headers("s"), b"{not json", 400, "not valid JSON"),
        (binary_headers("s"), b"", 400, "no data"),
        (binary_headers("s", **{"ce-type": "no spaces allowed"}), b"{}", 400, "topic type"),
        (binary_headers("s", **{"content-type": "text/plain"}), b"hi", 415, "not JSON"),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", 415, "batched"),
        (binary_headers("s"), b'{"name": "' + b"x" * 1024 * 1024 + b'"}', 413, "over"),
    ],
)
async def test_a_bad_request_gets_a_precise_refusal_and_others_are_still_served(
    gateway: Gateway,
    greeter: WorkerRuntime,
    headers: dict[str, str],
    body: bytes,
    status: int,
    reason: str,
) -> None:
    response = await post(gateway, body, headers)
    assert response.status_code == status
    assert reason in response.text
    assert response.text.count("\n") == 1
    ingress = gateway.http_ingress
    assert ingress is not None
    assert ingress.refused == {status: 1}
    assert gateway.statistics().events_received == 0
    good = await post(gateway, b'{"name": "gil"}', binary_headers(f"after-{status}-{reason}"))
    assert good.status_code == 202


async def test_other_methods_are_refused(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{gateway.http_address}/")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_the_access_file_decides_who_may_publish_what(tmp_path: pathlib.Path) -> None:
    access = tmp_path / "access.toml"
    access.write_text(f'[principals.hooks]\ntoken = "{HOOK_TOKEN}"\npublish = ["greetings"]\n')
    authenticator = AccessFileAuthenticator(access)
    async with open_gateway(authenticator=authenticator, http_address="127.0.0.1:0") as gw:
        anonymous = await post(gw, b"{}", binary_headers("a"))
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        bearer = {"authorization": f"Bearer {HOOK_TOKEN}"}
        elsewhere = await post(gw, b"{}", binary_headers("a", **{"ce-type": "orders"}, **bearer))
        assert elsewhere.status_code == 403
        assert "may not publish to topic type 'orders'" in elsewhere.text
        allowed = await post(gw, b"{}", binary_headers("a", **bearer))
        assert allowed.status_code == 202, allowed.text
        assert gw.statistics().events_received == 1
        assert gw.statistics().events_dropped == 0  # the gateway's own policy let it through


async def test_a_slow_client_does_not_hold_up_the_others(
    gateway: Gateway, greeter: WorkerRuntime
) -> None:
    host, port = str(gateway.http_address).rsplit(":", 1)
    slow = await trio.open_tcp_stream(host, int(port))
    async with slow:
        await slow.send_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        response = await post(gateway, b'{"name": "hal"}', binary_headers("beside-slow"))
        assert response.status_code == 202
        assert await wait_received("beside-slow") == ("greetings", "beside-slow", "hal")


async def test_a_client_that_never_finishes_its_request_is_disconnected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_gateway(
        startup_grace=0, keepalive_interval=None, http_address="127.0.0.1:0"
    ) as gw:
        host, port = str(gw.http_address).rsplit(":", 1)
        slow = await trio.open_tcp_stream(host, int(port))
        async with slow:
            await slow.send_all(b"POST / HTTP/1.1\r\nhost: x\r\n")  # and never the rest
            with trio.fail_after(60):
                assert await slow.receive_some() == b""  # closed, without an answer
        ingress = gw.http_ingress
        assert ingress is not None
        assert ingress.timed_out == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_can_post_an_event(gateway: Gateway, greeter: WorkerRuntime) -> None:
    headers = [f"-H{name}: {value}" for name, value in binary_headers("curl").items()]
    done = await trio.run_process(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            *headers,
            "--data-binary",
            '{"name": "ivy"}',
            f"http://{gateway.http_address}/",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"202"
    assert await wait_received("curl") == ("greetings", "curl", "ivy")


class _FullGateway:
    """A gateway connection that cannot take anything now (a worker's lane is full)."""

    def __init__(self) -> None:
        self.offered = 0

    def try_send(self, data: bytes, *, more: bool = False) -> bool:
        self.offered += 1
        return False


async def test_a_gateway_that_cannot_take_more_answers_503_and_buffers_nothing() -> None:
    ingress = HttpIngress(HttpServer("127.0.0.1", 0, trio.CancelScope()), trio.CancelScope())
    connection = _FullGateway()
    headers = [(k.encode(), v.encode()) for k, v in binary_headers("busy").items()]
    request = HttpRequest("/", headers, b'{"name": "jo"}', "127.0.0.1:1")
    status, body, response_headers = await _handle(
        ingress, AccessGuard(), connection, 4 * 2**20, request
    )
    assert status == 503
    assert (b"retry-after", b"1") in response_headers
    assert b"retry" in body
    assert connection.offered == 1
    assert (ingress.accepted, ingress.refused) == (0, {503: 1})


def test_without_a_dataschema_the_event_type_names_the_data() -> None:
    headers = binary_headers("s")
    del headers["ce-dataschema"]
    event = event_from_http([(k.encode(), v.encode()) for k, v in headers.items()], b'{"a": 1}')
    assert event.attributes["dataschema"].ce_string == "greetings"
    assert event.binary_data == b'{"a": 1}'  # re-encoded as json.dumps writes a dataclass
