"""Webhooks: a subscription whose deliveries are POSTed as CloudEvents to a URL.

``open_gateway(..., webhooks=[Webhook("orders", "http://billing:8080/hook")])``
(or ``agentwire gateway --webhook orders=http://billing:8080/hook``) subscribes
the gateway itself to the topic type ``orders``: every event published to it
is POSTed to the URL in CloudEvents binary mode (``ce-specversion``,
``ce-id``, ``ce-type`` = topic type, ``ce-source`` = topic source,
``ce-dataschema`` = data type name, ``Content-Type`` = the data's content
type; the body is the data as published).

Bounded everywhere:

1. Deliveries go out one at a time, in order. Each attempt has
   ``timeout`` seconds to get a response status; a 2xx is a success, anything
   else (another status, a refused connection, a target that hangs) is
   retried after a backoff (``retry``: 4 attempts, 1 s doubling to 30 s by
   default).
2. After the last attempt the event is dropped, counted in ``failed`` and
   logged (warning) with the reason.
3. Events wait in a buffer of ``buffer`` events while one is being
   delivered; when it is full a new event is dropped, counted in
   ``overflowed`` and logged -- the gateway and its other clients never wait
   for a slow webhook.
4. At shutdown the events still waiting, and one being delivered, are dropped.

The webhook enters the gateway as the internal client-id
``agentwire-webhook-<n>`` with the agent type ``agentwire.webhook.<n>``
(``agentwire status`` lists them). In a cluster the agent type is
``agentwire.webhook.<gateway-id>.<n>`` (every gateway may have webhooks) and
both it and the subscription are claimed cluster-wide, like a worker's: events
published through any gateway of the cluster reach the webhook. If Redis
cannot be reached at the start, they are recorded on this gateway only and
claimed when the gateway joins the cluster.
"""

from __future__ import annotations

import functools
import logging
import ssl
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import SplitResult, urlsplit

import attrs
import h11
import trio
from grpclib.const import Status

from .._cloudevents import from_cloud_event
from .._errors import AgentwireError, InvalidCloudEventError
from .._proto import agent_worker_pb2 as pb
from .._retry import RetryPolicy
from .._security import AccessGuard, Principal

__all__ = ["Webhook", "WebhookDelivery", "parse_webhook", "serve_webhooks"]

logger = logging.getLogger("agentwire.webhook")

_PRINCIPAL = Principal("agentwire-webhook")
_READ_SIZE = 16 * 1024
DEFAULT_RETRY = RetryPolicy(initial_delay=1.0, max_delay=30.0, max_attempts=4)


class WebhookError(AgentwireError, ValueError):
    """A webhook's URL or topic type is not usable."""


class _DeliveryFailed(Exception):
    """One attempt did not get a 2xx (retried)."""


def _check_url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"webhook URL {value!r} must be http://HOST[:PORT]/PATH or https://...")


@attrs.frozen
class Webhook:
    """POST every event of *topic_type* to *url* (see the module docstring)."""

    topic_type: str
    url: str = attrs.field(validator=_check_url)
    timeout: float = 10.0
    retry: RetryPolicy = DEFAULT_RETRY
    buffer: int = 100


def parse_webhook(text: str) -> Webhook:
    """``TOPIC_TYPE=URL`` (the ``--webhook`` option) as a :class:`Webhook`."""
    topic_type, equals, url = text.partition("=")
    if not equals or not topic_type:
        raise WebhookError(f"--webhook wants TOPIC_TYPE=URL, got {text!r}")
    return Webhook(topic_type, url)


@attrs.define(eq=False)
class WebhookDelivery:
    """A running webhook and what it did so far."""

    webhook: Webhook
    client_id: str
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    """Events dropped after the last attempt."""
    overflowed: int = 0
    """Events dropped because the buffer was full."""


async def serve_webhooks(
    hub: Any,
    guard: AccessGuard,
    webhooks: Sequence[Webhook],
    *,
    task_status: trio.TaskStatus[list[WebhookDelivery]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run *webhooks* for the gateway of *hub* until cancelled or its shutdown."""
    async with trio.open_nursery() as nursery:
        deliveries = []
        for index, webhook in enumerate(webhooks):
            delivery = await nursery.start(_serve_one, hub, guard, webhook, index)
            deliveries.append(delivery)
        task_status.started(deliveries)


async def _serve_one(
    hub: Any,
    guard: AccessGuard,
    webhook: Webhook,
    index: int,
    *,
    task_status: trio.TaskStatus[WebhookDelivery] = trio.TASK_STATUS_IGNORED,
) -> None:
    client_id = f"agentwire-webhook-{index}"
    cluster = hub.cluster
    agent_type = (
        f"agentwire.webhook.{index}"
        if cluster is None
        else f"agentwire.webhook.{cluster.id}.{index}"
    )
    delivery = WebhookDelivery(webhook, client_id)
    url = urlsplit(webhook.url)
    send, receive = trio.open_memory_channel[Any](webhook.buffer)
    async with hub.connect(client_id) as connection, trio.open_nursery() as nursery:
        guard.claim(_PRINCIPAL, client_id)
        subscription = pb.Subscription(
            id=str(uuid.uuid4()),
            typeSubscription=pb.TypeSubscription(
                topic_type=webhook.topic_type, agent_type=agent_type
            ),
        )
        await _enter(hub, client_id, agent_type, subscription)
        nursery.start_soon(_deliver_all, delivery, url, receive)
        logger.info("webhook: events of %s go to %s", webhook.topic_type, webhook.url)
        task_status.started(delivery)
        async with send:
            async for data in connection.from_gateway:
                message = pb.Message.FromString(data)
                if not message.HasField("cloudEvent"):
                    continue
                try:
                    send.send_nowait(message.cloudEvent)
                except trio.WouldBlock:
                    delivery.overflowed += 1
                    logger.warning(
                        "webhook %s: %d events waiting; event %s dropped",
                        webhook.url,
                        webhook.buffer,
                        message.cloudEvent.id,
                    )
        nursery.cancel_scope.cancel()  # the gateway ended the connection: shutting down


async def _enter(hub: Any, client_id: str, agent_type: str, subscription: Any) -> None:
    """Register the webhook's agent type and subscription: cluster-wide in a
    cluster, or on this gateway only while Redis is out of reach (the gateway
    claims what its clients hold when it joins: the names are its own)."""
    from .._gateway._registry import RoutingError  # the gateway package imports this one

    try:
        await hub.register(client_id, agent_type)
        await hub.subscribe(client_id, subscription)
    except RoutingError as exc:
        if hub.cluster is None or exc.status != Status.UNAVAILABLE:
            raise
        logger.warning("webhook %s: %s; serving this gateway's events", agent_type, exc.message)
        if hub.owner_of(agent_type) is None:
            hub.register_agent(client_id, agent_type)
        hub.add_subscription(client_id, subscription)


async def _deliver_all(
    delivery: WebhookDelivery, url: SplitResult, events: trio.MemoryReceiveChannel[Any]
) -> None:
    webhook = delivery.webhook

    def on_retry(attempt: int, error: Exception, delay: float) -> None:
        delivery.retried += 1
        logger.debug("webhook %s: attempt %d failed (%s)", webhook.url, attempt, error)

    retry = attrs.evolve(
        webhook.retry, retry_on=(_DeliveryFailed, OSError, trio.TooSlowError, h11.ProtocolError)
    )
    async for event in events:
        try:
            body, headers = _as_http(event)
        except InvalidCloudEventError as exc:
            delivery.failed += 1
            logger.warning("webhook %s: event %s dropped: %s", webhook.url, event.id, exc)
            continue
        attempt = functools.partial(_attempt, url, body, headers, webhook.timeout)
        try:
            await retry.run(attempt, on_retry=on_retry)
        except (_DeliveryFailed, OSError, trio.TooSlowError, h11.ProtocolError) as exc:
            delivery.failed += 1
            logger.warning(
                "webhook %s: event %s dropped after %d attempts: %s",
                webhook.url,
                event.id,
                retry.max_attempts,
                str(exc) or type(exc).__name__,
            )
        else:
            delivery.delivered += 1


def _as_http(event: Any) -> tuple[bytes, list[tuple[str, str]]]:
    """The CloudEvents HTTP binary mode of *event*: body and headers."""
    received = from_cloud_event(event)
    headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", event.id),
        ("ce-type", received.topic.type),
        ("ce-source", received.topic.source),
        ("ce-dataschema", received.type_name),
        ("content-type", received.content_type),
    ]
    return received.data, headers


async def _attempt(
    url: SplitResult,
    body: bytes,
    headers: list[tuple[str, str]],
    timeout: float,  # noqa: ASYNC109 - each attempt has its own bound
) -> None:
    with trio.fail_after(timeout):
        status = await _post(url, body, headers)
    if not 200 <= status < 300:
        raise _DeliveryFailed(f"the target answered {status}")


async def _post(url: SplitResult, body: bytes, headers: list[tuple[str, str]]) -> int:
    """POST *body* to *url* on a connection of its own; the response status."""
    https = url.scheme == "https"
    host = url.hostname or ""
    port = url.port or (443 if https else 80)
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if https:
        stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=host)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        request = h11.Request(
            method="POST",
            target=target,
            headers=[
                ("host", url.netloc),
                ("content-length", str(len(body))),
                ("connection", "close"),
                *headers,
            ],
        )
        out = b"".join(
            conn.send(event) or b"" for event in (request, h11.Data(data=body), h11.EndOfMessage())
        )
        await stream.send_all(out)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(_READ_SIZE)))
            elif isinstance(event, h11.Response):
                return event.status_code
            elif isinstance(event, h11.ConnectionClosed):
                raise _DeliveryFailed("the target closed the connection without an answer")
