"""``agentwire.state.v1`` messages (``proto/agentwire_state.proto``) to and from
the state model: how writes, loads and their failures travel between a worker
and the gateway's state store. Sans-IO; both sides use it."""

from __future__ import annotations

import json
from typing import Any

from .._ids import AgentId
from .._proto import agentwire_state_pb2 as spb
from .._wire import StateErrorKind
from ._log import (
    Change,
    Delta,
    Snapshot,
    StateConflictError,
    StateError,
    StateStoreUnavailableError,
    StoredState,
)

__all__ = [
    "agent_of",
    "change_of",
    "error_response",
    "raise_for",
    "stored_of",
    "sync_of",
    "syncs_of",
]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _top_key(path: str) -> str:
    return path.split("/", 2)[1].replace("~1", "/").replace("~0", "~") if path else ""


def sync_of(agent_id: AgentId, version: int, change: Change) -> spb.StateSync:
    """The ``StateSync`` of *change*, written as *version*."""
    if isinstance(change, Snapshot):
        return spb.StateSync(
            agent_id=str(agent_id),
            version=version,
            state_delta=_json(change.state),
            affected_keys=sorted(change.state),
            snapshot=True,
        )
    keys = sorted({_top_key(operation["path"]) for operation in change.patch})
    return spb.StateSync(
        agent_id=str(agent_id),
        version=version,
        state_delta=_json(change.patch),
        affected_keys=keys,
    )


def agent_of(sync: spb.StateSync) -> AgentId:
    """The agent a ``StateSync`` names; :class:`StateError` if it is no agent id."""
    try:
        return AgentId.from_str(sync.agent_id)
    except ValueError as exc:
        raise StateError(f"a state update names no agent: {exc}") from None


def change_of(sync: spb.StateSync) -> tuple[AgentId, Change]:
    """The agent and change a ``StateSync`` carries; :class:`StateError` if malformed."""
    agent_id = agent_of(sync)
    try:
        value = json.loads(sync.state_delta)
    except ValueError as exc:
        raise StateError(f"a malformed state update for {sync.agent_id!r}: {exc}") from None
    if sync.snapshot:
        if not isinstance(value, dict):
            raise StateError(f"the snapshot of {agent_id} is not a JSON object")
        return agent_id, Snapshot(value)
    if not isinstance(value, list) or not all(
        isinstance(op, dict) and isinstance(op.get("op"), str) and isinstance(op.get("path"), str)
        for op in value
    ):
        raise StateError(f"the delta of {agent_id} is not a JSON Patch")
    return agent_id, Delta(value)


def syncs_of(agent_id: AgentId, stored: StoredState) -> list[spb.StateSync]:
    """What a store holds for *agent_id*: its snapshot, then each delta since."""
    if stored.snapshot is None:
        return []
    syncs = [sync_of(agent_id, stored.snapshot_version, Snapshot(stored.snapshot))]
    for n, patch in enumerate(stored.deltas, stored.snapshot_version + 1):
        syncs.append(sync_of(agent_id, n, Delta(patch)))
    return syncs


def stored_of(syncs: list[spb.StateSync]) -> StoredState:
    """The inverse of :func:`syncs_of`; :class:`StateError` if the versions do not follow."""
    if not syncs:
        return StoredState()
    changes = [change_of(sync)[1] for sync in syncs]
    first, *rest = changes
    snapshot_version = syncs[0].version
    if not isinstance(first, Snapshot) or any(isinstance(c, Snapshot) for c in rest):
        raise StateError("the gateway's answer is not a snapshot followed by deltas")
    if [s.version for s in syncs] != list(range(snapshot_version, snapshot_version + len(syncs))):
        raise StateError("the versions in the gateway's answer do not follow each other")
    patches = tuple(c.patch for c in rest if isinstance(c, Delta))
    return StoredState(snapshot_version + len(rest), snapshot_version, first.state, patches)


def error_response(exc: Exception) -> spb.StateSyncResponse:
    """The answer telling a writer why its request failed."""
    if isinstance(exc, StateConflictError):
        return spb.StateSyncResponse(
            error=str(exc), error_kind=StateErrorKind.CONFLICT, current_version=exc.current_version
        )
    kind = StateErrorKind.INVALID if isinstance(exc, StateError) else StateErrorKind.UNAVAILABLE
    return spb.StateSyncResponse(error=str(exc) or type(exc).__name__, error_kind=kind)


def raise_for(response: spb.StateSyncResponse, agent_id: AgentId, base_version: int) -> None:
    """Raise what the gateway's error answer says (nothing if it is none)."""
    if not response.error and not response.error_kind:
        return
    if response.error_kind == StateErrorKind.CONFLICT:
        raise StateConflictError(str(agent_id), base_version, response.current_version)
    if response.error_kind == StateErrorKind.INVALID:
        raise StateError(f"the gateway's state store refused it: {response.error}")
    raise StateStoreUnavailableError(f"the gateway's state store failed: {response.error}")
