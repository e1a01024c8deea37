"""The gateway carries trace context through untouched: RPC metadata both ways, event attributes."""

from __future__ import annotations

import trio

from agentwire import open_gateway
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import cloudevent_pb2 as ce
from agentwire._transport import open_channel

P = "/agents.AgentRpc/"
GUARD = 20.0  # seconds: a hang guard, never a synchronisation
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


def cid(client_id: str) -> list[tuple[str, str]]:
    return [("client-id", client_id)]


async def test_trace_context_crosses_the_gateway_unchanged_in_rpcs_and_events() -> None:
    request = pb.RpcRequest(
        request_id="7", target=pb.AgentId(type="echo", key="k"), payload=pb.Payload(data=b"{}")
    )
    request.metadata.update({"traceparent": TRACEPARENT, "tracestate": TRACESTATE, "x": "y"})
    event = ce.CloudEvent(id="e1", source="s", type="news", spec_version="1.0", binary_data=b"{}")
    event.attributes["traceparent"].ce_string = TRACEPARENT
    event.attributes["tracestate"].ce_string = TRACESTATE
    answer_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
    with trio.fail_after(GUARD):
        async with open_gateway("127.0.0.1:0") as gw, open_channel(gw.address) as channel:
            register = pb.RegisterAgentTypeRequest(type="echo").SerializeToString()
            await channel.unary(P + "RegisterAgent", register, metadata=cid("B"))
            subscribe = pb.AddSubscriptionRequest(
                subscription=pb.Subscription(
                    id="s1",
                    typeSubscription=pb.TypeSubscription(topic_type="news", agent_type="echo"),
                )
            )
            await channel.unary(
                P + "AddSubscription", subscribe.SerializeToString(), metadata=cid("B")
            )
            async with (
                channel.stream(P + "OpenChannel", metadata=cid("A")) as a,
                channel.stream(P + "OpenChannel", metadata=cid("B")) as b,
            ):
                await gw.wait_until(lambda s: s.data_connections == 2)
                await a.send(pb.Message(request=request).SerializeToString())
                forwarded = pb.Message.FromString(await b.receive()).request
                assert dict(forwarded.metadata) == dict(request.metadata)
                response = pb.RpcResponse(request_id=forwarded.request_id)
                response.metadata["traceparent"] = answer_trace
                await b.send(pb.Message(response=response).SerializeToString())
                answered = pb.Message.FromString(await a.receive()).response
                assert answered.request_id == "7"
                assert dict(answered.metadata) == {"traceparent": answer_trace}
                sent = pb.Message(cloudEvent=event).SerializeToString()
                await a.send(sent)
                assert await b.receive() == sent  # byte for byte
