"""Message builders shared by the gateway tests."""

from __future__ import annotations

from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import cloudevent_pb2


def request(
    request_id: str,
    target: str,
    *,
    source: str | None = None,
    data: bytes = b'{"text": "hi"}',
    metadata: dict[str, str] | None = None,
) -> bytes:
    target_type, target_key = target.split("/", 1)
    req = pb.RpcRequest(
        request_id=request_id,
        target=pb.AgentId(type=target_type, key=target_key),
        payload=pb.Payload(data_type="Ping", data_content_type="application/json", data=data),
        metadata=metadata or {},
    )
    if source is not None:
        source_type, source_key = source.split("/", 1)
        req.source.CopyFrom(pb.AgentId(type=source_type, key=source_key))
    return pb.Message(request=req).SerializeToString()


def response(request_id: str, *, data: bytes = b'{"text": "pong"}', error: str = "") -> bytes:
    resp = pb.RpcResponse(request_id=request_id, error=error)
    if not error:
        resp.payload.CopyFrom(
            pb.Payload(data_type="Pong", data_content_type="application/json", data=data)
        )
    return pb.Message(response=resp).SerializeToString()


def event(
    topic_type: str, source: str = "default", *, event_id: str = "e1", data: bytes = b"{}"
) -> bytes:
    ce = cloudevent_pb2.CloudEvent(
        id=event_id, source=source, type=topic_type, spec_version="1.0", binary_data=data
    )
    for key, value in {
        "datacontenttype": "application/json",
        "dataschema": "Ping",
        "agagentsendertype": "unknown",
        "agagentsenderkey": "unknown",
        "agmsgkind": "publish",
    }.items():
        ce.attributes[key].ce_string = value
    return pb.Message(cloudEvent=ce).SerializeToString()


def type_sub(topic_type: str, agent_type: str, sub_id: str) -> pb.Subscription:
    return pb.Subscription(
        id=sub_id,
        typeSubscription=pb.TypeSubscription(topic_type=topic_type, agent_type=agent_type),
    )


def prefix_sub(prefix: str, agent_type: str, sub_id: str) -> pb.Subscription:
    return pb.Subscription(
        id=sub_id,
        typePrefixSubscription=pb.TypePrefixSubscription(
            topic_type_prefix=prefix, agent_type=agent_type
        ),
    )


def parse(data: bytes) -> pb.Message:
    return pb.Message.FromString(data)


def control(
    rpc_id: str, destination: str, *, respond_to: str | None = None, save: bool = True
) -> bytes:
    message = pb.ControlMessage(rpc_id=rpc_id, destination=destination)
    if respond_to is not None:
        message.respond_to = respond_to
    if save:
        message.rpcMessage.Pack(pb.SaveStateRequest(agentId=pb.AgentId(type="a", key="k")))
    else:
        load = pb.LoadStateRequest(agentId=pb.AgentId(type="a", key="k"), state="{}")
        message.rpcMessage.Pack(load)
    return message.SerializeToString()
