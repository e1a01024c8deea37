"""Control-channel routing helpers: where a ``ControlMessage`` goes, and the
error reply to an undeliverable control request."""

from __future__ import annotations

from collections.abc import Callable

from .._errors import InvalidIdentifierError
from .._ids import AgentId
from .._proto import agent_worker_pb2 as pb
from .._proto import agentwire_state_pb2 as spb
from .._wire import StateErrorKind
from ._registry import Conn, Registry

__all__ = ["control_error_reply", "resolve"]


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
