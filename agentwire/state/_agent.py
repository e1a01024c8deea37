"""``StatefulAgent``: a ``RoutedAgent`` whose ``state`` is versioned and durable."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import trio

from .._agents import MessageContext, RoutedAgent
from .._errors import SerializationError
from .._serialization._json import JsonSerializer, is_record
from ._log import JsonObject, StateConflictError, StateError, StateTracker, normalize_state
from ._stores import StateStore

__all__ = ["StatefulAgent"]

logger = logging.getLogger("agentwire.state")


class StatefulAgent(RoutedAgent):
    """A :class:`~agentwire.RoutedAgent` whose ``self.state`` (a JSON object, or
    a dataclass or attrs class instance) is kept in a
    :class:`~agentwire.state.StateStore`.

    * **Activation.** Before its first message is handled the agent loads its
      state from the store (``initial_state()`` if it was never written).
    * **Commit.** After each handled message (``commit="after-each-message"``,
      the default) or only on ``await self.checkpoint()`` (``commit="explicit"``),
      a changed state is written: a JSON Patch against the last committed
      version, or the whole state when that is no smaller and after every
      ``snapshot_every`` deltas. An RPC is answered after its commit, so an
      answered call's change is durable.
    * **Conflict.** A write based on a version the store no longer holds (another
      activation of this agent wrote first) raises
      :class:`~agentwire.state.StateConflictError` to that message's sender and
      the agent reloads its state before its next message.
    * A handler that raises commits nothing; its changes to ``self.state`` stay
      in memory and are committed with the next message's.
    * **Records.** When ``initial_state()`` returns a dataclass or attrs class
      instance, the state is stored as its JSON object (as agentwire
      serializes such a message) and given back as an instance of that class.
    * **No store** (``store=None``): on an agentwire worker, the state lives in
      the gateway's state store (``open_gateway(state_store=...)``), loaded and
      committed over the worker's control channel; elsewhere activation raises
      :class:`~agentwire.state.StateError`.
    """

    def __init__(
        self,
        description: str = "",
        *,
        store: StateStore | None = None,
        commit: Literal["after-each-message", "explicit"] = "after-each-message",
        snapshot_every: int = 16,
    ) -> None:
        super().__init__(description)
        if commit not in ("after-each-message", "explicit"):
            raise ValueError(f"commit must be 'after-each-message' or 'explicit', not {commit!r}")
        self._store: StateStore | None = store
        self._commit_each = commit == "after-each-message"
        self._tracker = StateTracker(snapshot_every)
        self._state_lock = trio.Lock()
        self._activated = False
        self.state: Any = self.initial_state()
        self._codec = _codec_of(self.state)

    def initial_state(self) -> Any:
        """The state of an agent whose state was never written (override it): a
        JSON object, or a dataclass or attrs class instance."""
        return {}

    @property
    def state_version(self) -> int:
        """The version of the last state loaded or committed (0: never written)."""
        return self._tracker.version

    async def on_message(self, message: Any, ctx: MessageContext) -> Any:
        if not self._activated:
            await self._activate()
        result = await super().on_message(message, ctx)
        if self._commit_each:
            await self.checkpoint()
        return result

    async def _activate(self) -> None:
        async with self._state_lock:
            if self._activated:
                return
            stored = await self._store_in_use().load(self.id)
            state = self._tracker.loaded(stored)
            if state is None:
                self.state = self.initial_state()
            elif self._codec is None:
                self.state = state
            else:
                self.state = self._codec.decode(state)
            self._activated = True
            logger.debug("state of %s loaded at version %d", self.id, stored.version)

    def _store_in_use(self) -> StateStore:
        if self._store is None:
            self._store = gateway_store(self.runtime)
        return self._store

    async def checkpoint(self) -> int:
        """Commit ``self.state`` if it changed since the last commit; return its version."""
        if not self._activated:
            await self._activate()
        lock = self._state_lock
        try:
            lock.acquire_nowait()  # uncontended (the usual case): no trip to the scheduler
        except trio.WouldBlock:
            await lock.acquire()
        try:
            state = self.state if self._codec is None else self._codec.encode(self.state)
            prepared = self._tracker.prepare(state)
            if prepared is None:
                return self._tracker.version
            change, normal = prepared
            try:
                # Once started, a commit finishes even if the handler's caller is
                # cancelled: else the store could hold a version the tracker missed.
                with trio.CancelScope(shield=True):
                    version = await self._store_in_use().commit(
                        self.id, self._tracker.version, change
                    )
            except StateConflictError:
                self._activated = False  # stale: reload before the next message
                raise
            self._tracker.committed_as(change, normal, version)
            return version
        finally:
            lock.release()

    async def save_state(self) -> Mapping[str, Any]:
        """The current state (a copy; a record's JSON object), as
        ``runtime.agent_save_state`` returns it."""
        if not self._activated:
            await self._activate()
        if self._codec is not None:
            return normalize_state(self._codec.encode(self.state))
        return dict(self.state)

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace the state by *state* and commit it (``runtime.agent_load_state``)."""
        if not self._activated:
            await self._activate()
        self.state = dict(state) if self._codec is None else self._codec.decode(dict(state))
        await self.checkpoint()


@attrs.frozen
class _RecordCodec:
    """A dataclass or attrs class state to and from its JSON object."""

    serializer: JsonSerializer[Any]

    def encode(self, state: Any) -> JsonObject:
        if not isinstance(state, self.serializer.message_type):
            raise StateError(
                f"the state is a {type(state).__name__}, not the "
                f"{self.serializer.message_type.__name__} initial_state() returned"
            )
        try:
            encoded: JsonObject = self.serializer._encode(state)
        except (TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"the state cannot be stored as JSON: {exc}") from None
        return encoded

    def decode(self, state: JsonObject) -> Any:
        try:
            return self.serializer._decode(state, self.serializer.type_name)
        except SerializationError as exc:
            raise StateError(
                f"the stored state does not fit {self.serializer.message_type.__name__}: {exc}"
            ) from None


def _codec_of(state: Any) -> _RecordCodec | None:
    if is_record(type(state)):
        return _RecordCodec(JsonSerializer(type(state)))
    return None


def gateway_store(runtime: object) -> StateStore:
    """The state store of the gateway *runtime* (a worker) is connected to."""
    from .._worker._runtime import WorkerRuntime
    from ._remote import GatewayStateStore

    if not isinstance(runtime, WorkerRuntime):
        raise StateError(
            "a StatefulAgent without a store keeps its state in the gateway's state store, "
            "so it must run on an agentwire worker (open_worker): pass store=... here"
        )
    return GatewayStateStore(runtime._worker.link)
