"""The gateway's state store, seen from a worker: a :class:`StateStore` whose
loads and commits are ``agentwire.state.v1`` requests on the worker's
control channel to the agentwire gateway's state service
(:data:`~agentwire._wire.STATE_DESTINATION`), which applies each write with
compare-and-set in the store the gateway was started with
(``open_gateway(state_store=...)``).

A :class:`~agentwire.state.StatefulAgent` registered without a store uses it
when it runs on an agentwire worker. Each call waits at most ``timeout``
seconds for the answer, then raises :class:`StateStoreUnavailableError` (no
state store on the gateway, AutoGen's host, or the gateway is unreachable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .._ids import AgentId
from .._proto import agentwire_state_pb2 as spb
from .._wire import STATE_DESTINATION
from ._log import Change, StateStoreUnavailableError, StoredState
from ._sync import raise_for, stored_of, sync_of

if TYPE_CHECKING:
    from .._worker._link import WorkerLink

__all__ = ["DEFAULT_GATEWAY_TIMEOUT", "GatewayStateStore"]

DEFAULT_GATEWAY_TIMEOUT = 10.0


class GatewayStateStore:
    """The agentwire gateway's state store, through one worker's link to it."""

    def __init__(self, link: WorkerLink, timeout: float = DEFAULT_GATEWAY_TIMEOUT) -> None:
        self._link = link
        self._timeout = timeout

    async def load(self, agent_id: AgentId) -> StoredState:
        request = spb.StateSyncRequest(
            state_updates=[spb.StateSync(agent_id=str(agent_id))], force_sync=True
        )
        response = await self._call(request, agent_id)
        raise_for(response, agent_id, 0)
        return stored_of(list(response.states))

    async def commit(self, agent_id: AgentId, base_version: int, change: Change) -> int:
        request = spb.StateSyncRequest(state_updates=[sync_of(agent_id, base_version + 1, change)])
        response = await self._call(request, agent_id)
        raise_for(response, agent_id, base_version)
        if len(response.states) != 1:
            raise StateStoreUnavailableError("the gateway's state store answered a write wrongly")
        return response.states[0].version

    async def _call(
        self, request: spb.StateSyncRequest, agent_id: AgentId
    ) -> spb.StateSyncResponse:
        answer = None
        with trio.move_on_after(self._timeout):
            answer = await self._link.control_call(STATE_DESTINATION, request)
        response = spb.StateSyncResponse()
        if answer is None or not answer.Unpack(response):
            raise StateStoreUnavailableError(
                f"no answer about the state of {agent_id} from the gateway's state store within "
                f"{self._timeout:g} s: start the gateway with a state store "
                "(agentwire gateway --state-store ...), or give the agent a store of its own"
            )
        return response
