"""Webhooks: events of a topic type POSTed as CloudEvents to a URL, bounded retries."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from agentwire import AgentId, Gateway, JsonSerializer, RetryPolicy, TopicId, open_gateway
from agentwire import open_worker as open_agentwire_worker
from agentwire._observability._http import HttpRequest, HttpResponse, HttpServer, serve_http
from agentwire._operator._webhook import Webhook, WebhookError, parse_webhook
from tests.operator.agents import Greet, Greeting, setup

FAST_RETRY = RetryPolicy(initial_delay=1.0, max_delay=2.0, max_attempts=3)


class Target:
    """An HTTP endpoint that records what it is sent and answers *status* (None: hangs)."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self.status: dict[str, int | None] = {}  # by ce-source; default 202
        self._changed = trio.Event()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        self._changed.set()
        self._changed = trio.Event()
        status = self.status.get(header(request, "ce-source"), 202)
        if status is None:
            await trio.sleep_forever()
        assert status is not None
        return status, b"", [(b"content-type", b"text/plain")]

    def seen(self, source: str) -> int:
        return sum(1 for r in self.requests if header(r, "ce-source") == source)

    async def wait_for(self, source: str, count: int = 1) -> None:
        with trio.fail_after(60):
            while self.seen(source) < count:
                await self._changed.wait()


def header(request: HttpRequest, name: str) -> str:
    return next((v.decode() for k, v in request.headers if k == name.encode()), "")


@pytest.fixture
async def target() -> AsyncIterator[tuple[Target, str]]:
    endpoint = Target()
    async with trio.open_nursery() as nursery:
        server: HttpServer = await nursery.start(
            functools.partial(
                serve_http, {}, "127.0.0.1", 0, post_routes={"/hook": endpoint.handle}
            )
        )
        yield endpoint, f"http://{server.address}/hook"
        nursery.cancel_scope.cancel()


async def publish(gateway: Gateway, *sources: str) -> None:
    async with open_agentwire_worker(gateway.address) as runtime:
        runtime.add_message_serializer(JsonSerializer(Greet))
        for source in sources:
            await runtime.publish_message(Greet(source), TopicId("greetings", source))
        # Leaving after the gateway has routed them: wait for its count.
        with trio.fail_after(30):
            await gateway.wait_until(lambda s: s.events_received >= len(sources))


async def test_events_of_the_topic_type_are_posted_as_cloudevents(
    target: tuple[Target, str],
) -> None:
    endpoint, url = target
    async with open_gateway(startup_grace=0, webhooks=[Webhook("greetings", url)]) as gw:
        await publish(gw, "first", "second")
        await endpoint.wait_for("second")
        [delivery] = gw.webhooks
        first = endpoint.requests[0]
        assert header(first, "ce-specversion") == "1.0"
        assert header(first, "ce-type") == "greetings"
        assert header(first, "ce-source") == "first"
        assert header(first, "ce-dataschema") == "Greet"
        assert header(first, "content-type") == "application/json"
        assert first.body == b'{"name": "first", "times": 1}'
        # One at a time, in order: the second was sent once the first was answered.
        assert delivery.delivered >= 1
        assert (delivery.failed, delivery.overflowed) == (0, 0)


async def test_a_target_that_fails_forever_gets_bounded_retries_then_the_event_is_dropped(
    target: tuple[Target, str], autojump_clock: trio.testing.MockClock
) -> None:
    endpoint, url = target
    endpoint.status["doomed"] = 500
    webhook = Webhook("greetings", url, retry=FAST_RETRY, timeout=5.0)
    async with open_gateway(startup_grace=0, keepalive_interval=None, webhooks=[webhook]) as gw:
        await publish(gw, "doomed", "next")
        await endpoint.wait_for("next")
        [delivery] = gw.webhooks
        assert endpoint.seen("doomed") == 3
        assert (delivery.failed, delivery.retried) == (1, 2)


async def test_a_target_that_hangs_is_timed_out_and_the_gateway_serves_everyone_else(
    target: tuple[Target, str], autojump_clock: trio.testing.MockClock
) -> None:
    endpoint, url = target
    endpoint.status["stuck"] = None
    webhook = Webhook("greetings", url, retry=FAST_RETRY, timeout=5.0)
    async with (
        open_gateway(startup_grace=0, keepalive_interval=None, webhooks=[webhook]) as gw,
        open_agentwire_worker(gw.address, keepalive_interval=None) as greeter,
        open_agentwire_worker(gw.address, keepalive_interval=None) as caller,
    ):
        await setup(greeter)
        caller.add_message_serializer(JsonSerializer(Greeting))
        await publish(gw, "stuck")
        await endpoint.wait_for("stuck")
        answer = await caller.send_message(Greet("lu"), AgentId("greeter", "x"))
        assert answer == Greeting("hello lu x1 from x")
        await publish(gw, "unstuck")
        await endpoint.wait_for("unstuck")
        [delivery] = gw.webhooks
        assert endpoint.seen("stuck") == 3
        assert delivery.failed == 1


async def test_a_full_buffer_drops_new_events_and_counts_them(
    target: tuple[Target, str],
) -> None:
    endpoint, url = target
    endpoint.status["slow"] = None
    webhook = Webhook("greetings", url, timeout=1000.0, buffer=1)
    async with open_gateway(startup_grace=0, webhooks=[webhook]) as gw:
        await publish(gw, "slow")
        await endpoint.wait_for("slow")  # being delivered: the buffer is empty again
        await publish(gw, "waits", "dropped")
        with trio.fail_after(30):
            await gw.wait_until(lambda s: s.event_deliveries >= 3)
        await trio.testing.wait_all_tasks_blocked()
        [delivery] = gw.webhooks
        assert delivery.overflowed == 1


@pytest.mark.parametrize("text", ["no-equals", "=http://x/", "t=ftp://x/", "t=http:///path"])
def test_a_bad_webhook_option_is_refused(text: str) -> None:
    with pytest.raises(WebhookError):
        parse_webhook(text)
