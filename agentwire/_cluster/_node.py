"""One gateway's part in a cluster: the glue between its hub, the cluster
view (``_view.py``) and Redis (``_redis.py``).

* Every other live gateway P is one peer connection ``agentwire-peer:<P>`` of
  the local hub, holding P's agent types and subscriptions (so requests and
  events for them are routed to it, an event once per gateway). A pump task
  per peer takes what the hub routes to it in batches and appends each batch
  to P's inbox stream in one round trip. One reader task takes batches from
  this gateway's inbox (XREADGROUP NOACK with COUNT and a finite BLOCK), feeds
  each message into the sender's peer connection as if that client had sent
  it, and deletes what it read every DELETE_EVERY entries (in the round trip
  of a read), or when idle.
* RegisterAgent and AddSubscription of a local client are claimed in Redis
  first (atomically, cluster-wide), then recorded locally; what a client
  leaves behind is released. A follower task applies the change stream to
  the view; the heartbeat renews the lease and tells who is live.
* Redis unreachable: the session ends, every peer connection with it (their
  requests in flight are answered ``gateway-unreachable``), local traffic
  goes on, claims fail fast (UNAVAILABLE); the node retries with backoff
  and, once back, re-joins: lease, inbox, this gateway's own agent types and
  subscriptions re-asserted, the shared state reloaded.
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
import trio
from google.protobuf.message import DecodeError
from grpclib.const import Status

from .._errors import InvalidIdentifierError, InvalidSubscriptionError
from .._gateway._actions import error_response
from .._gateway._hub import Connection, GatewayHub
from .._gateway._registry import UNKNOWN_SUBSCRIPTION_MESSAGE, RoutingError
from .._ids import is_valid_agent_type
from .._proto import agent_worker_pb2 as pb
from .._subscriptions import Subscription, _content_key, subscription_from_proto
from .._wire import ErrorKind
from ._config import PEER_PREFIX, ClusterConfig, ClusterStatistics
from ._redis import NotAMember, RedisBackend, pack_batch, unpack_batch
from ._view import (
    AddSubscription,
    ClusterView,
    ConnectPeer,
    DisconnectPeer,
    Owner,
    RegisterType,
    RemoveSubscription,
    UnregisterType,
)

__all__ = ["PEER_PREFIX", "ClusterConfig", "ClusterNode", "ClusterStatistics", "serve_cluster_node"]

logger = logging.getLogger("agentwire.cluster")

# Entries of the inbox deleted in one go (one command per this many read, while busy).
DELETE_EVERY = 64

# What "Redis cannot be reached" looks like (coredis errors, sockets, timeouts).
REDIS_ERRORS = (coredis.exceptions.RedisError, OSError, NotAMember)


def _unreachable(what: str) -> RoutingError:
    return RoutingError(
        Status.UNAVAILABLE,
        f"agentwire gateway: the cluster's Redis cannot be reached; {what} (retry later)",
    )


class ClusterNode:
    """A gateway's membership of a cluster (see the module docstring).
    Made by :func:`serve_cluster_node`."""

    def __init__(self, hub: GatewayHub, config: ClusterConfig) -> None:
        self.hub = hub
        self.config = config
        self.id = uuid.uuid4().hex[:16]
        self.view = ClusterView(self.id)
        self._backend: RedisBackend | None = None  # while a session is up
        self._session: trio.Nursery | None = None
        self._peers: dict[str, Connection] = {}
        self._lock = trio.Lock()  # claims, releases and view changes, one at a time
        self._released: list[tuple[str, list[str], list[str]]] = []
        # Ids of subscriptions made here with relay=True (operator-made), while they live.
        self._relayed: set[str] = set()
        self._release_wanted = trio.Event()
        self._scope = trio.CancelScope()
        self._batches_sent = self._messages_sent = 0
        self._batches_received = self._messages_received = 0
        self._lost = 0
        self._joins = 0
        hub.on_records_dropped(self._dropped)

    def statistics(self) -> ClusterStatistics:
        return ClusterStatistics(
            gateway_id=self.id,
            joined=self._backend is not None,
            peers=len(self._peers),
            batches_sent=self._batches_sent,
            messages_sent=self._messages_sent,
            batches_received=self._batches_received,
            messages_received=self._messages_received,
            messages_lost=self._lost,
            joins=self._joins,
        )

    def stop(self) -> None:
        """Leave the cluster (at once, not by lease expiry) and stop."""
        self._scope.cancel()

    # ------------------------------------------------------------ claims (hub.cluster)

    async def register_agent(self, client_id: str, agent_type: str) -> None:
        if not is_valid_agent_type(agent_type):
            self.hub.register_agent(client_id, agent_type)  # raises its precise error
        hub = self.hub
        async with self._lock:
            local = hub.owner_of(agent_type)
            if local is not None and not local.startswith(PEER_PREFIX):
                raise RoutingError(
                    Status.INVALID_ARGUMENT,
                    f"Agent type {agent_type} already registered with client {local}.",
                )
            owner = Owner(self.id, client_id)
            try:
                backend = self._joined(f"agent type {agent_type} was not registered")
                await self._flush_releases(backend)
                current = await backend.claim_type(agent_type, owner, None)
            except REDIS_ERRORS:
                raise _unreachable(f"agent type {agent_type} was not registered") from None
            if current is not None:
                raise RoutingError(
                    Status.INVALID_ARGUMENT,
                    f"Agent type {agent_type} already registered with client {current.client}.",
                )
            if local is not None:  # a stale record of a peer: the claim says it is gone
                hub.unregister_agent(local, agent_type)
                self.view.refused(RegisterType(local.removeprefix(PEER_PREFIX), agent_type))
            try:
                hub.register_agent(client_id, agent_type)
            except RoutingError:
                await self._quietly(backend.release_type(agent_type, owner))
                raise

    async def add_subscription(
        self, client_id: str, subscription: pb.Subscription, relay: bool = False
    ) -> None:
        try:
            sub = subscription_from_proto(subscription)
        except (InvalidSubscriptionError, InvalidIdentifierError) as exc:
            raise RoutingError(Status.INVALID_ARGUMENT, str(exc)) from None
        content = _content_key(sub)
        key = "" if content is None else "\x00".join((content[0].__name__, *content[1:]))
        owner = Owner(self.id, client_id)
        hub = self.hub
        async with self._lock:
            try:
                backend = self._joined(f"subscription {sub.id} was not added")
                await self._flush_releases(backend)
                data = _shared_form(subscription, relay)
                added = await backend.add_subscription(sub.id, owner, data, key, None)
            except REDIS_ERRORS:
                raise _unreachable(f"subscription {sub.id} was not added") from None
            if not added:
                raise RoutingError(Status.INVALID_ARGUMENT, "Subscription already exists")
            try:
                try:
                    hub.add_subscription(client_id, subscription, relay=relay)
                except RoutingError:
                    if not self._evict_stale(sub):
                        raise
                    hub.add_subscription(client_id, subscription, relay=relay)
                if relay:
                    self._relayed.add(sub.id)
            except RoutingError:
                await self._quietly(backend.remove_subscription(sub.id, owner))
                raise

    def _evict_stale(self, sub: Subscription) -> bool:
        """Drop the subscriptions of peers equal to *sub* held here: Redis just
        accepted *sub*, so they are gone (their removal has not arrived yet)."""
        hub, evicted = self.hub, False
        for existing in hub.subscriptions():
            peer = hub.subscription_owner(existing.id) or ""
            if peer.startswith(PEER_PREFIX) and subscription_from_proto(existing) == sub:
                hub.remove_subscription(peer, existing.id)
                gateway = peer.removeprefix(PEER_PREFIX)
                self.view.refused(AddSubscription(gateway, existing.id, b""))
                evicted = True
        return evicted

    async def remove_subscription(self, client_id: str, subscription_id: str) -> None:
        hub = self.hub
        async with self._lock:
            try:
                backend = self._joined(f"subscription {subscription_id} was not removed")
                removed = await backend.remove_subscription(subscription_id)
            except REDIS_ERRORS:
                raise _unreachable(f"subscription {subscription_id} was not removed") from None
            owner = hub.subscription_owner(subscription_id)
            if owner is None:
                if not removed:
                    raise RoutingError(Status.UNKNOWN, UNKNOWN_SUBSCRIPTION_MESSAGE)
                return
            hub.remove_subscription(client_id, subscription_id)
            self._relayed.discard(subscription_id)
            if owner.startswith(PEER_PREFIX):
                gateway = owner.removeprefix(PEER_PREFIX)
                self.view.refused(AddSubscription(gateway, subscription_id, b""))

    def _joined(self, what: str) -> RedisBackend:
        if self._backend is None:
            raise _unreachable(what)
        return self._backend

    async def _quietly(self, command: object) -> None:
        try:
            await command  # type: ignore[misc]
        except REDIS_ERRORS:
            logger.warning("could not undo a cluster claim (Redis unreachable)")

    def _dropped(self, client_id: str, types: list[str], subs: list[str]) -> None:
        """A local client left (or expired): release its claims (R6 of the registry)."""
        if not client_id.startswith(PEER_PREFIX):
            self._released.append((client_id, types, subs))
            self._release_wanted.set()

    async def _flush_releases(self, backend: RedisBackend) -> None:
        """Release what local clients left behind (under the lock), unless the
        same client claimed it again since.

        Subscriptions go first: once a type is released, a worker elsewhere
        (a standby) may claim it and at once add the same subscriptions, which
        Redis refuses as duplicates while the old ones are still there."""
        hub = self.hub
        while self._released:
            client_id, types, subs = self._released[0]
            owner = Owner(self.id, client_id)
            while subs:
                if hub.subscription_owner(subs[-1]) != client_id:
                    await backend.remove_subscription(subs[-1], owner)
                    self._relayed.discard(subs[-1])
                subs.pop()
            while types:
                if hub.owner_of(types[-1]) != client_id:
                    await backend.release_type(types[-1], owner)
                types.pop()
            self._released.pop(0)

    # ------------------------------------------------------------ sessions

    async def run(self, *, task_status: trio.TaskStatus[ClusterNode]) -> None:
        """Join, and re-join after every loss of Redis, until stopped."""
        started = False
        backoff = 0.05
        with self._scope:
            while True:
                try:
                    async with self._client() as client, trio.open_nursery() as session:
                        await self._join(RedisBackend(client, self.id, self.config.prefix), session)
                        backoff = 0.05
                        if not started:
                            task_status.started(self)
                            started = True
                except* REDIS_ERRORS as group:
                    logger.log(
                        logging.WARNING if self._backend is not None else logging.DEBUG,
                        "gateway %s cannot reach the cluster's Redis (%s); retrying",
                        self.id,
                        "; ".join(str(e) for e in _leaves(group)),
                    )
                self._end_session()
                if not started:
                    task_status.started(self)
                    started = True
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self.config.heartbeat)

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[coredis.Redis[Any]]:
        client: coredis.Redis[Any] = coredis.Redis.from_url(
            self.config.url,
            stream_timeout=self.config.lease,
            connect_timeout=self.config.heartbeat,
        )
        async with client:
            yield client

    async def _join(self, backend: RedisBackend, session: trio.Nursery) -> None:
        config = self.config
        await backend.heartbeat(config.lease)
        await backend.ensure_inbox()
        async with self._lock:
            await self._flush_releases(backend)
            await self._reassert(backend)
            snapshot, last_id = await backend.snapshot()
            _, live, _ = await backend.heartbeat(config.lease)
            self.view.load(snapshot)
            self.view.set_members(live)
            self._backend, self._session = backend, session
            self.hub.set_cluster_note("")
            self._joins += 1
            await self._sync()
        logger.info("gateway %s joined the cluster (%d other gateways)", self.id, len(live) - 1)
        session.start_soon(self._heartbeat, backend)
        session.start_soon(self._follow, backend, last_id)
        session.start_soon(self._read_inbox, backend)
        session.start_soon(self._release, backend)

    async def _reassert(self, backend: RedisBackend) -> None:
        """Claim again what this gateway's clients hold (after Redis came back)."""
        hub = self.hub
        for client_id, types, _, _ in hub.clients():
            if client_id.startswith(PEER_PREFIX):
                continue
            owner = Owner(self.id, client_id)
            for agent_type in types:
                current = await backend.claim_type(agent_type, owner, owner)
                if current is not None:
                    logger.warning(
                        "agent type %s of client %s is claimed by client %s of gateway %s "
                        "since this gateway lost Redis; both serve it until one leaves",
                        agent_type,
                        client_id,
                        current.client,
                        current.gateway,
                    )
        for subscription in hub.subscriptions():
            client_id = hub.subscription_owner(subscription.id) or ""
            if client_id.startswith(PEER_PREFIX):
                continue
            sub = subscription_from_proto(subscription)
            content = _content_key(sub)
            key = "" if content is None else "\x00".join((content[0].__name__, *content[1:]))
            owner = Owner(self.id, client_id)
            data = _shared_form(subscription, sub.id in self._relayed)
            if not await backend.add_subscription(sub.id, owner, data, key, owner):
                logger.warning(
                    "subscription %s of client %s duplicates another's", sub.id, client_id
                )

    def _end_session(self) -> None:
        """Redis is gone (or the node stops): forget the cluster; peers are disconnected."""
        self._backend = self._session = None
        self.hub.set_cluster_note(
            " on this gateway, and it cannot reach its cluster's Redis, so the agent types "
            "of the other gateways are out of reach"
        )
        self.view.lost()
        self.view.plan()  # the peer connections ended with the session
        for conn in self._peers.values():
            conn.abort(Status.UNAVAILABLE, "agentwire gateway: lost the cluster's Redis")
        self._peers.clear()

    async def _heartbeat(self, backend: RedisBackend) -> None:
        config = self.config
        while True:
            await trio.sleep(config.heartbeat)
            # Under the lock: a peer heard from meanwhile is not dropped by an older answer.
            async with self._lock:
                had, live, _ = await backend.heartbeat(config.lease)
                if not had:
                    raise NotAMember(f"the lease of gateway {self.id} expired; re-joining")
                self.view.set_members(live)
                await self._sync()

    async def _follow(self, backend: RedisBackend, last_id: bytes) -> None:
        block = int(self.config.heartbeat * 1000)
        while True:
            changes = await backend.changes(last_id, block)
            if not changes:
                continue
            async with self._lock:
                for entry_id, change in changes:
                    last_id = entry_id
                    if not self.view.apply(change):
                        snapshot, last_id = await backend.snapshot()
                        self.view.load(snapshot)
                        break
                await self._sync()

    async def _release(self, backend: RedisBackend) -> None:
        while True:
            await self._release_wanted.wait()
            self._release_wanted = trio.Event()
            async with self._lock:
                await self._flush_releases(backend)

    # ------------------------------------------------------------ the local mirror

    async def _sync(self) -> None:
        """Carry out what the view plans (under the lock)."""
        hub = self.hub
        removed, self.view.removed_here = self.view.removed_here, []
        for client_id, subscription_id in removed:
            if hub.subscription_owner(subscription_id) == client_id:
                hub.remove_subscription(client_id, subscription_id)
                self._relayed.discard(subscription_id)
        for op in self.view.plan():
            peer = PEER_PREFIX + op.gateway
            try:
                if isinstance(op, ConnectPeer):
                    assert self._session is not None
                    assert self._backend is not None
                    await self._session.start(self._peer, op.gateway, self._backend)
                elif isinstance(op, DisconnectPeer):
                    conn = self._peers.pop(op.gateway, None)
                    if conn is not None:
                        conn.abort(Status.UNAVAILABLE, "agentwire gateway: the peer left")
                elif isinstance(op, RegisterType):
                    hub.register_agent(peer, op.agent_type, peer=True)
                elif isinstance(op, UnregisterType):
                    hub.unregister_agent(peer, op.agent_type)
                elif isinstance(op, AddSubscription):
                    subscription, relay = _local_form(op.data)
                    hub.add_subscription(peer, subscription, peer=True, relay=relay)
                elif hub.subscription_owner(op.subscription_id) == peer:
                    assert isinstance(op, RemoveSubscription)
                    hub.remove_subscription(peer, op.subscription_id)
            except RoutingError as exc:
                logger.debug("cluster change %s not applied here: %s", op, exc.message)
                self.view.refused(op)

    async def _peer(
        self, gateway: str, backend: RedisBackend, *, task_status: trio.TaskStatus[None]
    ) -> None:
        async with self.hub.connect(PEER_PREFIX + gateway, peer=True) as conn:
            self._peers[gateway] = conn
            task_status.started()
            try:
                await self._pump(gateway, conn, backend)
            finally:
                if self._peers.get(gateway) is conn:
                    # Ended by the hub (a slow consumer), not by the view: the
                    # next plan connects it again, with its agent types.
                    del self._peers[gateway]
                    self.view.refused(ConnectPeer(gateway))

    async def _pump(self, gateway: str, conn: Connection, backend: RedisBackend) -> None:
        """Send what the hub routes to *gateway*, in batches, one round trip each."""
        outbound = conn.from_gateway
        limit, limit_bytes = self.config.batch_messages, self.config.batch_bytes
        while True:
            try:
                first = await outbound.receive()
            except trio.EndOfChannel:
                return
            batch = [first]
            size = len(first)
            while len(batch) < limit and size < limit_bytes:
                try:
                    data = outbound.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                batch.append(data)
                size += len(data)
            try:
                sent = await backend.send(gateway, pack_batch(batch))
            except BaseException:  # Redis gone (the session ends) or stopping: not sent
                self._lost += len(batch)
                raise
            for _ in batch:
                conn.message_sent()
            if sent:
                self._batches_sent += 1
                self._messages_sent += len(batch)
                continue
            # Its lease is gone: what was in flight to it is answered by the table.
            self._lost += len(batch)
            logger.info("gateway %s is gone; %d messages to it not sent", gateway, len(batch))
            async with self._lock:
                self.view.unreachable(gateway)
                await self._sync()
            return

    async def _read_inbox(self, backend: RedisBackend) -> None:
        block = int(self.config.heartbeat * 1000)
        done: list[bytes] = []  # read, to delete (in the round trip of a later read)
        idle = False
        while True:
            due = idle or len(done) >= DELETE_EVERY
            entries = await backend.read_inbox(64, block, done if due else ())
            if due:
                done = []
            idle = not entries
            for entry_id, sender, blob in entries:
                done.append(entry_id)
                try:
                    messages = unpack_batch(blob)
                except struct.error:
                    self._lost += 1
                    logger.warning("dropped a malformed batch from gateway %s", sender)
                    continue
                self._batches_received += 1
                self._messages_received += len(messages)
                await self._deliver(backend, sender, messages)

    async def _deliver(self, backend: RedisBackend, sender: str, messages: list[bytes]) -> None:
        conn = self._peers.get(sender)
        if conn is None:
            async with self._lock:
                self.view.heard_from(sender)
                await self._sync()
            conn = self._peers.get(sender)
        last = len(messages) - 1
        for i, data in enumerate(messages):
            if conn is not None:
                try:
                    await conn.send(data, more=i < last)
                    continue
                except trio.BrokenResourceError:
                    conn = None
            await self._refuse(backend, sender, data)

    async def _refuse(self, backend: RedisBackend, sender: str, data: bytes) -> None:
        """A message from a gateway this one is not connected to: a request is
        answered with an error, anything else dropped (and counted)."""
        self._lost += 1
        try:
            message = pb.Message.FromString(data)
        except DecodeError:
            return
        if message.WhichOneof("message") != "request":
            return
        request = message.request
        answer = error_response(
            request.request_id,
            ErrorKind.GATEWAY_UNREACHABLE,
            f"gateway {self.id} is not connected to gateway {sender} (it left the cluster "
            f"or lost Redis); the request to {request.target.type}/{request.target.key} "
            "was not delivered",
        )
        await backend.send(sender, pack_batch([answer]))


def _shared_form(subscription: pb.Subscription, relay: bool) -> bytes:
    """A subscription as the cluster keeps it: a relay flag byte, the serialized proto."""
    return (b"R" if relay else b"-") + subscription.SerializeToString()


def _local_form(data: bytes) -> tuple[pb.Subscription, bool]:
    return pb.Subscription.FromString(data[1:]), data[:1] == b"R"


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


async def serve_cluster_node(
    hub: GatewayHub, config: ClusterConfig, *, task_status: trio.TaskStatus[ClusterNode]
) -> None:
    """Make *hub*'s gateway a member of the cluster until cancelled or
    stopped; started once the first attempt to join is over (joined or not:
    it keeps retrying). Leaving removes the gateway's agent types and
    subscriptions from the cluster at once."""
    node = ClusterNode(hub, config)
    hub.cluster = node
    try:
        await node.run(task_status=task_status)
    finally:
        hub.cluster = None
        with trio.CancelScope(shield=True), trio.move_on_after(config.heartbeat):
            await _leave(node)


async def _leave(node: ClusterNode) -> None:
    try:
        async with node._client() as client:
            await RedisBackend(client, node.id, node.config.prefix).leave()
    except* REDIS_ERRORS:
        logger.info("gateway %s could not leave the cluster (Redis unreachable)", node.id)
