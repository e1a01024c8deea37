"""Control-channel routing: where a ``ControlMessage`` goes, and the error
reply to an undeliverable control request. Sans-IO; ``_routing.py`` holds one
:class:`ControlRouting` and hands it every well-formed control message of a
live connection.

A control message to an agent (``agentid=type/key``) goes to the control
connection of its type's owner (with shared agent types: of the worker the
agent is placed on), one to ``clientid=...`` to that client's. One to the
gateway itself (drain, release) is answered by ``_shared.py``. An
undeliverable or refused control *request* is answered with an error reply;
a refusal goes back to the sender only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .._errors import InvalidIdentifierError
from .._ids import AgentId
from .._proto import agent_worker_pb2 as pb
from .._proto import agentwire_state_pb2 as spb
from .._security._guard import MessagePolicy
from .._wire import DRAIN_DESTINATION, RELEASE_DESTINATION, StateErrorKind
from ._actions import ERROR_PREFIX, Action, Deliver
from ._registry import Conn, Registry
from ._shared import SharedTypes, answer

__all__ = ["ControlRouting", "control_error_reply", "resolve"]

logger = logging.getLogger("agentwire.gateway")


class ControlRouting:
    """The control-channel half of one routing table."""

    __slots__ = ("_reg", "_shared", "forwarded", "undeliverable")

    def __init__(self, reg: Registry, shared: SharedTypes | None) -> None:
        self._reg = reg
        self._shared = shared
        self.forwarded = 0
        self.undeliverable = 0

    def route(
        self, conn: Conn, message: pb.ControlMessage, data: bytes, policy: MessagePolicy | None
    ) -> list[Action]:
        """*message* (serialized: *data*) arrived on control connection *conn*."""
        if message.destination in (DRAIN_DESTINATION, RELEASE_DESTINATION):
            if self._shared is not None:
                return self._shared.gateway_request(conn, message)
            return [answer(conn, message, False)] if message.respond_to else []
        denied = None
        if policy is not None:
            denied = policy.refuse_control(
                conn.client_id, message.destination, request=bool(message.respond_to)
            )
        placed = None if self._shared is None else self._shared.control_of
        target = resolve(self._reg, message.destination, placed) if denied is None else None
        if target is not None:
            self.forwarded += 1
            return [Deliver(target, data)]
        self.undeliverable += 1
        reason = (
            ERROR_PREFIX
            + f"cannot deliver control message {message.rpc_id!r}: "
            + (denied or f"no control channel for destination {message.destination!r}")
        )
        reply = control_error_reply(message, reason)
        if reply is None:
            logger.warning("%s (dropped)", reason)
            return []
        # A refusal goes back to the sender only: its respond_to may name another's client.
        back = conn if denied else resolve(self._reg, message.respond_to) or conn
        return [Deliver(back, reply.SerializeToString())]


def resolve(
    registry: Registry,
    destination: str,
    placed: Callable[[str, str], Conn | None] | None = None,
) -> Conn | None:
    """The control connection of ``agentid=type/key`` (its type's owner, or
    with shared agent types ``placed(type, key)``) or ``clientid=...``, if any."""
    if destination.startswith("agentid="):
        try:
            agent = AgentId.from_str(destination[len("agentid=") :])
        except InvalidIdentifierError:
            return None
        if registry.shared and placed is not None:
            return placed(agent.type, agent.key)
        owner = registry.owner.get(agent.type)
        client = None if owner is None else registry.clients[owner]
    elif destination.startswith("clientid="):
        client = registry.clients.get(destination[len("clientid=") :])
    else:
        return None
    return None if client is None else client.control


def control_error_reply(message: pb.ControlMessage, reason: str) -> pb.ControlMessage | None:
    """The error response for an undeliverable control *request*, if it is one."""
    if not message.HasField("respond_to") or not message.respond_to:
        return None
    if not message.HasField("rpcMessage"):
        return None
    answer: pb.SaveStateResponse | pb.LoadStateResponse | spb.StateSyncResponse
    type_name = message.rpcMessage.TypeName()
    if type_name == "agents.SaveStateRequest":
        answer = pb.SaveStateResponse(error=reason)
    elif type_name == "agents.LoadStateRequest":
        answer = pb.LoadStateResponse(error=reason)
    elif type_name == "agentwire.state.v1.StateSyncRequest":  # no state store here
        answer = spb.StateSyncResponse(error=reason, error_kind=StateErrorKind.UNAVAILABLE)
    else:
        return None
    reply = pb.ControlMessage(rpc_id=message.rpc_id, destination=message.respond_to)
    reply.rpcMessage.Pack(answer)
    return reply
