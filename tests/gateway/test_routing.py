"""The gateway's sans-IO routing core, one behaviour at a time."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwire._gateway._events import _ROUTES_CAP
from agentwire._gateway._held import SUBSCRIPTION_SETTLE
from agentwire._gateway._routing import (
    UNKNOWN_SUBSCRIPTION_MESSAGE,
    Close,
    Conn,
    ConnKind,
    Deliver,
    RoutingError,
    RoutingTable,
)
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._wire import ERROR_KIND_KEY, ErrorKind

from .helpers import control, event, parse, prefix_sub, request, response, type_sub

DATA = ConnKind.DATA
CONTROL = ConnKind.CONTROL


@pytest.fixture
def router() -> RoutingTable:
    return RoutingTable(rpc_timeout=10.0, max_in_flight=3)


def only(actions: list[Deliver | Close]) -> Deliver:
    assert len(actions) == 1
    action = actions[0]
    assert isinstance(action, Deliver)
    return action


# ---------------------------------------------------------------- registration


def test_register_agent_one_owner_per_type(router: RoutingTable) -> None:
    router.register_agent("A", "echo")
    with pytest.raises(RoutingError) as info:
        router.register_agent("B", "echo")
    assert info.value.status is Status.INVALID_ARGUMENT
    assert info.value.message == "Agent type echo already registered with client A."
    # The same client cannot register twice either (as AutoGen).
    with pytest.raises(RoutingError, match="already registered with client A"):
        router.register_agent("A", "echo")
    assert router.owner_of("echo") == "A"
    router.check_invariants()


def test_register_agent_rejects_invalid_type(router: RoutingTable) -> None:
    with pytest.raises(RoutingError) as info:
        router.register_agent("A", "no spaces")
    assert info.value.status is Status.INVALID_ARGUMENT
    assert router.owner_of("no spaces") is None


def test_register_before_channel_then_route(router: RoutingTable) -> None:
    router.register_agent("B", "echo")  # no channel yet: allowed
    a = router.connect("A", DATA)
    rejected = only(router.receive(a, request("1", "echo/k"), 0.0))
    assert "has no open channel" in parse(rejected.data).response.error
    b = router.connect("B", DATA)
    forwarded = only(router.receive(a, request("2", "echo/k"), 0.0))
    assert forwarded.conn == b
    router.check_invariants()


# ---------------------------------------------------------------- subscriptions


def test_duplicate_subscription_by_id_and_by_content(router: RoutingTable) -> None:
    router.add_subscription("A", type_sub("t", "echo", "s1"))
    with pytest.raises(RoutingError) as info:
        router.add_subscription("B", type_sub("other", "x", "s1"))
    assert (info.value.status, info.value.message) == (
        Status.INVALID_ARGUMENT,
        "Subscription already exists",
    )
    with pytest.raises(RoutingError, match="Subscription already exists"):
        router.add_subscription("B", type_sub("t", "echo", "s2"))
    # Same content but a different kind is not a duplicate.
    router.add_subscription("B", prefix_sub("t", "echo", "s3"))
    assert [s.id for s in router.subscriptions()] == ["s1", "s3"]
    router.check_invariants()


def test_invalid_subscription_is_invalid_argument(router: RoutingTable) -> None:
    with pytest.raises(RoutingError) as info:
        router.add_subscription("A", pb.Subscription(id="s"))
    assert info.value.status is Status.INVALID_ARGUMENT
    with pytest.raises(RoutingError) as info:
        router.add_subscription("A", type_sub("t", "bad type", "s"))
    assert info.value.status is Status.INVALID_ARGUMENT
    assert router.subscriptions() == []


def test_remove_unknown_subscription_is_autogen_unknown(router: RoutingTable) -> None:
    with pytest.raises(RoutingError) as info:
        router.remove_subscription("A", "nope")
    assert info.value.status is Status.UNKNOWN
    assert info.value.message == UNKNOWN_SUBSCRIPTION_MESSAGE
    assert UNKNOWN_SUBSCRIPTION_MESSAGE == (
        "Unexpected <class 'ValueError'>: Subscription does not exist"
    )


def test_any_client_may_remove_any_subscription(router: RoutingTable) -> None:
    router.add_subscription("A", type_sub("t", "echo", "s1"))
    router.remove_subscription("B", "s1")
    assert router.subscriptions() == []
    router.check_invariants()
    assert router.statistics().clients == 0


# ---------------------------------------------------------------- RPC


def test_rpc_rewrites_and_restores_request_id(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")
    fwd = only(router.receive(a, request("1", "echo/k", source="caller/c"), 0.0))
    assert fwd.conn == b
    assert not fwd.answer
    forwarded = parse(fwd.data).request
    assert forwarded.request_id != "1"
    assert forwarded.target.type == "echo"
    assert forwarded.source.type == "caller"
    back = only(router.receive(b, response(forwarded.request_id), 0.0))
    assert back.conn == a
    assert back.answer
    answered = parse(back.data).response
    assert answered.request_id == "1"
    assert answered.payload.data == b'{"text": "pong"}'
    assert router.statistics().rpcs_in_flight == 0
    router.check_invariants()


def test_colliding_request_ids_from_two_callers(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    c = router.connect("C", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")
    from_a = parse(only(router.receive(a, request("1", "echo/a"), 0.0)).data).request
    from_c = parse(only(router.receive(c, request("1", "echo/c"), 0.0)).data).request
    assert from_a.request_id != from_c.request_id
    # Answer in the opposite order: each caller gets its own answer.
    to_c = only(router.receive(b, response(from_c.request_id, data=b"C"), 0.0))
    to_a = only(router.receive(b, response(from_a.request_id, data=b"A"), 0.0))
    assert (to_c.conn, parse(to_c.data).response.payload.data) == (c, b"C")
    assert (to_a.conn, parse(to_a.data).response.payload.data) == (a, b"A")
    assert parse(to_a.data).response.request_id == "1"
    router.check_invariants()


def test_unknown_target_gets_error_response(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    answer = only(router.receive(a, request("7", "ghost/k"), 0.0))
    assert answer.conn == a
    assert not answer.answer  # back-pressured like other traffic to the caller
    resp = parse(answer.data).response
    assert resp.request_id == "7"
    assert "ghost" in resp.error
    assert router.statistics().rpcs_failed == 1


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (request("1", "bad type/k"), "invalid target agent type"),
        (
            pb.Message(
                request=pb.RpcRequest(
                    request_id="1", target=pb.AgentId(type="echo", key="k"), source=pb.AgentId()
                )
            ).SerializeToString(),
            "invalid source agent type",
        ),
        (pb.Message(request=pb.RpcRequest(request_id="1")).SerializeToString(), "invalid target"),
    ],
)
def test_invalid_ids_in_request_answered_with_error(
    router: RoutingTable, raw: bytes, needle: str
) -> None:
    router.register_agent("A", "echo")
    a = router.connect("A", DATA)
    resp = parse(only(router.receive(a, raw, 0.0)).data).response
    assert resp.request_id == "1"
    assert needle in resp.error
    assert router.statistics().rpcs_in_flight == 0


def test_response_from_wrong_client_or_unknown_id_is_dropped(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")
    gid = parse(only(router.receive(a, request("1", "echo/k"), 0.0)).data).request.request_id
    assert router.receive(a, response(gid), 0.0) == []  # A is not the target
    assert router.receive(b, response("gw999"), 0.0) == []
    assert router.statistics().responses_dropped == 2
    assert router.statistics().rpcs_in_flight == 1
    router.check_invariants()


def test_rpc_to_own_client(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    router.register_agent("A", "self")
    fwd = only(router.receive(a, request("1", "self/k"), 0.0))
    assert fwd.conn == a
    back = only(router.receive(a, response(parse(fwd.data).request.request_id), 0.0))
    assert back.conn == a
    assert parse(back.data).response.request_id == "1"


def test_deadline_expiry_answers_caller(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "slow")
    gid = parse(only(router.receive(a, request("1", "slow/k"), 100.0)).data).request.request_id
    assert router.next_deadline() == 110.0
    assert router.expire(109.9) == []
    expired = only(router.expire(110.0))
    assert expired.conn == a
    assert expired.answer
    resp = parse(expired.data).response
    assert resp.request_id == "1"
    assert "within 10 s (rpc_timeout)" in resp.error
    assert router.next_deadline() is None
    # The late answer goes nowhere.
    assert router.receive(b, response(gid), 111.0) == []
    router.check_invariants()


def test_caller_deadline_from_metadata_expires_first() -> None:
    router = RoutingTable(rpc_timeout=10.0)
    a = router.connect("A", DATA)
    router.connect("B", DATA)
    router.register_agent("B", "slow")
    router.receive(a, request("long", "slow/k"), 0.0)  # rpc_timeout: 10 s
    router.receive(a, request("short", "slow/k", metadata={"agentwire-timeout": "2.5"}), 1.0)
    router.receive(a, request("junk", "slow/k", metadata={"agentwire-timeout": "soon"}), 1.0)
    router.receive(a, request("more", "slow/k", metadata={"agentwire-timeout": "99"}), 1.0)
    assert router.next_deadline() == 3.5
    short = parse(only(router.expire(3.5)).data).response
    assert short.request_id == "short"
    assert "within 2.5 s (the caller's deadline)" in short.error
    assert router.next_deadline() == 10.0
    expired = [parse(x.data).response for x in router.expire(11.0) if isinstance(x, Deliver)]
    assert [r.request_id for r in expired] == ["long", "junk", "more"]
    assert all("(rpc_timeout)" in r.error for r in expired)
    router.check_invariants()


@pytest.mark.parametrize("left", ["-3", "nan", "-0", "0"])
def test_a_caller_with_no_time_left_gets_its_timeout_at_once(left: str) -> None:
    router = RoutingTable(rpc_timeout=10.0)
    a = router.connect("A", DATA)
    router.connect("B", DATA)
    router.register_agent("B", "slow")
    router.receive(a, request("late", "slow/k", metadata={"agentwire-timeout": left}), 1.0)
    assert router.next_deadline() == 1.0
    late = parse(only(router.expire(1.0)).data).response
    assert "within 0 s (the caller's deadline)" in late.error
    router.check_invariants()


def test_deadline_heap_stays_small() -> None:
    router = RoutingTable(rpc_timeout=10.0, max_in_flight=10)
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")
    for i in range(1000):
        fwd = only(router.receive(a, request(str(i), "echo/k"), float(i)))
        router.receive(b, response(parse(fwd.data).request.request_id), float(i))
        router.answer_consumed(a)
        router.check_invariants()
    assert len(router._pending._deadlines) <= 64


def test_no_timeout_when_disabled() -> None:
    router = RoutingTable(rpc_timeout=None)
    a = router.connect("A", DATA)
    router.connect("B", DATA)
    router.register_agent("B", "slow")
    router.receive(a, request("1", "slow/k"), 0.0)
    assert router.next_deadline() is None
    assert router.expire(1e12) == []
    assert router.statistics().rpcs_in_flight == 1


def test_in_flight_limit_and_answer_consumption(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")
    gids = [
        parse(only(router.receive(a, request(str(i), "echo/k"), 0.0)).data).request.request_id
        for i in range(3)
    ]
    refused = only(router.receive(a, request("4", "echo/k"), 0.0))
    assert refused.conn == a
    assert "too many requests in flight" in parse(refused.data).response.error
    # An answer that has not been consumed still counts.
    only(router.receive(b, response(gids[0]), 0.0))
    refused_again = only(router.receive(a, request("5", "echo/k"), 0.0))
    assert "too many" in parse(refused_again.data).response.error
    router.answer_consumed(a)
    assert only(router.receive(a, request("6", "echo/k"), 0.0)).conn == b
    router.check_invariants()


def test_target_disconnect_answers_callers_and_cleans_up(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")
    router.add_subscription("B", type_sub("default", "echo", "s1"))
    router.receive(a, request("1", "echo/k1"), 0.0)
    router.receive(a, request("2", "echo/k2"), 0.0)
    answers = router.disconnect(b)
    assert [a_.conn for a_ in answers] == [a, a]
    assert all(isinstance(x, Deliver) and x.answer for x in answers)
    responses = [parse(x.data).response for x in answers if isinstance(x, Deliver)]
    assert [r.request_id for r in responses] == ["1", "2"]
    assert all("disconnected before answering" in r.error for r in responses)
    assert router.owner_of("echo") is None
    assert router.subscriptions() == []
    router.register_agent("C", "echo")  # the type is free again
    assert router.disconnect(b) == []  # idempotent
    router.check_invariants()


def test_caller_disconnect_forgets_its_requests(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")
    gid = parse(only(router.receive(a, request("1", "echo/k"), 0.0)).data).request.request_id
    assert router.disconnect(a) == []
    assert router.statistics().rpcs_in_flight == 0
    assert router.receive(b, response(gid), 0.0) == []
    router.check_invariants()


def test_shutdown_answers_everything_and_refuses_connections(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    router.connect("B", DATA)
    router.register_agent("B", "echo")
    router.receive(a, request("1", "echo/k"), 0.0)
    answer = only(router.shutdown())
    assert "shutting down" in parse(answer.data).response.error
    with pytest.raises(RoutingError) as info:
        router.connect("C", DATA)
    assert info.value.status is Status.UNAVAILABLE


def test_reconnect_with_same_client_id_gets_new_conn(router: RoutingTable) -> None:
    a1 = router.connect("A", DATA)
    router.register_agent("A", "echo")
    with pytest.raises(RuntimeError):
        router.connect("A", DATA)
    router.disconnect(a1)
    a2 = router.connect("A", DATA)
    assert a2 != a1
    assert router.receive(a1, request("1", "x/y"), 0.0) == []  # stale conn ignored
    assert router.owner_of("echo") is None


# ---------------------------------------------------------------- publish


def test_publish_fans_out_once_per_client_including_publisher(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.connect("C", DATA)
    router.register_agent("A", "pub")
    router.register_agent("B", "x")
    router.register_agent("B", "y")
    router.add_subscription("A", type_sub("default", "pub", "s1"))
    router.add_subscription("B", type_sub("default", "x", "s2"))
    router.add_subscription("B", prefix_sub("def", "y", "s3"))
    raw = event("default")
    actions = router.receive(a, raw, 0.0)
    assert [(x.conn, x.data) for x in actions if isinstance(x, Deliver)] == [(a, raw), (b, raw)]
    assert router.receive(a, event("nobody"), 0.0) == []
    stats = router.statistics()
    assert (stats.events_received, stats.event_deliveries) == (2, 2)


def test_publish_skips_types_without_owner_or_channel(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    router.add_subscription("A", type_sub("t", "orphan", "s1"))  # type never registered
    router.register_agent("B", "nochannel")
    router.add_subscription("B", type_sub("t", "nochannel", "s2"))
    assert router.receive(a, event("t"), 0.0) == []


def test_publish_with_invalid_topic_is_dropped(router: RoutingTable) -> None:
    a = router.connect("A", DATA)
    assert router.receive(a, event("bad topic"), 0.0) == []
    assert router.receive(a, event("bad topic"), 0.0) == []  # not remembered as routable
    assert router.statistics().events_dropped == 2


def _event_targets(router: RoutingTable, conn: Conn, topic: str = "news") -> list[str]:
    actions = router.receive(conn, event(topic), 0.0)
    router.check_invariants()
    return [action.conn.client_id for action in actions if isinstance(action, Deliver)]


def _connect_c(router: RoutingTable) -> None:
    router.connect("C", DATA)


def _disconnect_b(router: RoutingTable) -> None:
    conn = router.connection_of("B", DATA)
    assert conn is not None
    router.disconnect(conn)


# One change of the routing state each, and the event's targets after it
# (before it: A and B; C registered and subscribed without a channel, D unsubscribed).
CHANGES = {
    "a channel opens": (_connect_c, ["A", "B", "C"]),
    "a channel ends": (_disconnect_b, ["A"]),
    "a type is registered": (lambda r: r.register_agent("D", "late"), ["A", "B", "D"]),
    "a type is unregistered": (lambda r: r.unregister_agent("B", "critic"), ["A"]),
    "a subscription is added": (
        lambda r: r.add_subscription("A", type_sub("news", "spare", "s9")),
        ["A", "B", "D"],
    ),
    "a subscription is removed": (lambda r: r.remove_subscription("A", "s2"), ["A"]),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_an_events_targets_follow_each_change_of_the_routing_state(change: str) -> None:
    router = RoutingTable()
    a = router.connect("A", DATA)
    router.connect("B", DATA)
    router.connect("D", DATA)
    router.register_agent("A", "reader")
    router.register_agent("D", "spare")
    router.register_agent("B", "critic")
    router.register_agent("C", "ghost")
    router.add_subscription("A", type_sub("news", "reader", "s1"))
    router.add_subscription("A", prefix_sub("ne", "critic", "s2"))  # of another client's type
    router.add_subscription("B", type_sub("news", "late", "s3"))  # of nobody's type yet
    router.add_subscription("C", type_sub("news", "ghost", "s4"))
    assert _event_targets(router, a) == ["A", "B"]
    assert router.receive(a, event("news", "other"), 0.0)  # a second route remembered
    mutate, expected = CHANGES[change]
    mutate(router)
    router.check_invariants()  # the remembered routes are the fresh ones (I10)
    assert _event_targets(router, a) == expected
    assert _event_targets(router, a, "other") == []


def test_event_routes_are_remembered_for_a_bounded_number_of_topics() -> None:
    router = RoutingTable()
    a = router.connect("A", DATA)
    router.register_agent("A", "reader")
    router.add_subscription("A", prefix_sub("", "reader", "s1"))
    for i in range(_ROUTES_CAP + 10):
        assert only(router.receive(a, event(f"topic{i}"), 0.0)).conn is a
    assert 0 < len(router._fanout._routes) <= _ROUTES_CAP
    router.check_invariants()


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xff\xff", pb.Message().SerializeToString(), b"\xa2\x06\x01x"],
    ids=["garbage", "empty", "unknown-field"],
)
def test_malformed_message_closes_only_the_sender(router: RoutingTable, raw: bytes) -> None:
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")
    (action,) = router.receive(a, raw, 0.0)
    assert isinstance(action, Close)
    assert action.conn == a
    assert action.status is Status.INVALID_ARGUMENT
    assert router.statistics().protocol_errors == 1
    assert router.is_live(b)


# ---------------------------------------------------------------- control channel


def test_control_routes_by_agent_and_client(router: RoutingTable) -> None:
    ca = router.connect("A", CONTROL)
    cb = router.connect("B", CONTROL)
    router.register_agent("B", "echo")
    raw = control("r1", "agentid=echo/k", respond_to="clientid=A")
    assert only(router.receive_control(ca, raw)) == Deliver(cb, raw)
    raw2 = control("r2", "clientid=A")
    assert only(router.receive_control(cb, raw2)) == Deliver(ca, raw2)
    assert router.statistics().control_forwarded == 2


@pytest.mark.parametrize("save", [True, False])
def test_undeliverable_control_request_is_answered(router: RoutingTable, save: bool) -> None:
    ca = router.connect("A", CONTROL)
    router.register_agent("B", "echo")  # owner has no control channel
    raw = control("r1", "agentid=echo/k", respond_to="clientid=A", save=save)
    reply = only(router.receive_control(ca, raw))
    assert reply.conn == ca
    message = pb.ControlMessage.FromString(reply.data)
    assert message.rpc_id == "r1"
    assert message.destination == "clientid=A"
    assert not message.HasField("respond_to")
    body: pb.SaveStateResponse | pb.LoadStateResponse
    body = pb.SaveStateResponse() if save else pb.LoadStateResponse()
    assert message.rpcMessage.Unpack(body)
    assert "no control channel" in body.error


def test_undeliverable_control_without_respond_to_is_dropped(router: RoutingTable) -> None:
    ca = router.connect("A", CONTROL)
    assert router.receive_control(ca, control("r1", "nonsense")) == []
    assert router.receive_control(ca, control("r1", "agentid=bad type/k")) == []
    assert router.statistics().control_undeliverable == 2


def test_control_garbage_closes_sender(router: RoutingTable) -> None:
    ca = router.connect("A", CONTROL)
    (action,) = router.receive_control(ca, b"\xff\xff")
    assert isinstance(action, Close)
    assert action.status is Status.INVALID_ARGUMENT


def test_control_disconnect_keeps_data_state(router: RoutingTable) -> None:
    router.connect("A", DATA)
    ca = router.connect("A", CONTROL)
    router.register_agent("A", "echo")
    router.disconnect(ca)
    assert router.owner_of("echo") == "A"
    router.check_invariants()


@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=200)
    | st.builds(lambda body: b"\x0a" + bytes([len(body)]) + body, st.binary(max_size=100))
)
def test_arbitrary_bytes_never_break_the_router(raw: bytes) -> None:
    router = RoutingTable(rpc_timeout=10.0)
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")
    router.add_subscription("B", type_sub("default", "echo", "s1"))
    for action in router.receive(a, raw, 0.0):
        if isinstance(action, Close):
            assert action.conn == a
            assert action.status is Status.INVALID_ARGUMENT
        else:
            assert action.conn in (a, b)
    for action in router.receive_control(router.connect("A", CONTROL), raw):
        assert isinstance(action, Close | Deliver)
    router.check_invariants()
    assert router.is_live(b)


def test_registrations_without_a_channel_expire_after_the_grace() -> None:
    router = RoutingTable(registration_grace=30.0)
    router.register_agent("ghost", "phantom", 100.0)
    router.add_subscription("ghost", type_sub("news", "phantom", "s1"), 110.0)
    router.register_agent("late", "worker", 100.0)
    assert router.next_deadline() == 130.0
    router.expire(129.0)
    late = router.connect("late", DATA)  # a channel within the grace keeps the records
    assert router.statistics().agent_types == 2
    router.expire(130.0)
    stats = router.statistics()
    assert (stats.agent_types, stats.subscriptions, stats.clients) == (1, 0, 1)
    assert stats.registrations_expired == 1
    assert router.owner_of("worker") == "late"
    assert router.next_deadline() is None
    router.disconnect(late)
    assert router.statistics().clients == 0
    router.check_invariants()


def test_registration_grace_none_keeps_channel_less_records() -> None:
    router = RoutingTable(registration_grace=None)
    router.register_agent("ghost", "phantom", 0.0)
    assert router.next_deadline() is None
    router.expire(1e9)
    assert router.owner_of("phantom") == "ghost"


def test_agent_types_and_subscriptions_per_client_are_bounded() -> None:
    router = RoutingTable(max_agent_types=2, max_subscriptions=1)
    router.register_agent("A", "t1")
    router.register_agent("A", "t2")
    with pytest.raises(RoutingError) as info:
        router.register_agent("A", "t3")
    assert info.value.status is Status.RESOURCE_EXHAUSTED
    assert "client A already has 2 agent types registered" in info.value.message
    router.register_agent("B", "t3")  # other clients are not affected
    router.add_subscription("A", type_sub("news", "t1", "s1"))
    with pytest.raises(RoutingError) as info:
        router.add_subscription("A", type_sub("news", "t2", "s2"))
    assert info.value.status is Status.RESOURCE_EXHAUSTED
    assert "subscription s2 was not added" in info.value.message
    router.remove_subscription("A", "s1")
    router.add_subscription("A", type_sub("news", "t2", "s2"))
    router.check_invariants()


def _error_of(actions: list[Deliver | Close]) -> tuple[str, str]:
    (action,) = actions
    assert isinstance(action, Deliver)
    response = parse(action.data).response
    assert response.error.startswith("agentwire gateway: ")
    return response.metadata[ERROR_KIND_KEY], response.error


@pytest.mark.parametrize(
    ("raw", "kind", "text"),
    [
        (request("1", "bad type/k"), ErrorKind.INVALID_ARGUMENT, "invalid target agent type"),
        (
            request("1", "echo/k", source="bad type/s"),
            ErrorKind.INVALID_ARGUMENT,
            "invalid source agent type",
        ),
        (request("1", "ghost/k"), ErrorKind.UNDELIVERABLE, "no worker has registered"),
        (request("1", "offline/k"), ErrorKind.UNDELIVERABLE, "has no open channel"),
        (request("1", "echo/k", data=b"x" * 600), ErrorKind.TOO_LARGE, "over the message size"),
    ],
)
def test_refused_requests_carry_their_error_kind(raw: bytes, kind: ErrorKind, text: str) -> None:
    router = RoutingTable(max_message_size=500)
    a = router.connect("A", DATA)
    router.connect("B", DATA)
    router.register_agent("B", "echo")
    router.register_agent("C", "offline")
    assert _error_of(router.receive(a, raw, 0.0))[0] == kind
    assert text in _error_of(router.receive(a, raw, 0.0))[1]


def test_failed_rpcs_carry_their_error_kind() -> None:
    router = RoutingTable(rpc_timeout=5.0, max_in_flight=1, max_message_size=500)
    a = router.connect("A", DATA)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")

    def forward(rid: str) -> str:
        (action,) = router.receive(a, request(rid, "echo/k"), 0.0)
        assert isinstance(action, Deliver)
        return parse(action.data).request.request_id

    gid = forward("1")
    assert _error_of(router.receive(a, request("2", "echo/k"), 0.0))[0] == ErrorKind.OVERLOADED
    assert _error_of(router.expire(5.0)) == (
        ErrorKind.TIMEOUT,
        "agentwire gateway: no response from echo/k within 5 s (rpc_timeout)",
    )
    router.answer_consumed(a)
    gid = forward("3")
    kind, text = _error_of(router.receive(b, response(gid, data=b"y" * 600), 0.0))
    assert (kind, "over the message size limit" in text) == (ErrorKind.TOO_LARGE, True)
    router.answer_consumed(a)
    forward("4")
    assert _error_of(router.disconnect(b))[0] == ErrorKind.CONNECTION_LOST
    router.answer_consumed(a)
    b = router.connect("B", DATA)
    router.register_agent("B", "echo")
    forward("5")
    assert _error_of(router.shutdown())[0] == ErrorKind.SHUTTING_DOWN


def test_held_messages_are_retried_after_a_control_channel_opens_too() -> None:
    router = RoutingTable(startup_grace=5.0)
    a = router.connect("A", DATA)
    assert router.receive(a, request("1", "echo/k"), 0.0) == []  # held
    router.register_agent("B", "echo", 1.0)
    router.connect("B", ConnKind.CONTROL)  # no data channel: nothing deliverable yet
    b = router.connect("B", DATA)
    router.connect("C", ConnKind.CONTROL)
    assert router.wants_release(1.0)
    (forwarded,) = router.release(1.0)
    assert isinstance(forwarded, Deliver)
    assert forwarded.conn is b
    assert not router.wants_release(1.0)
    router.check_invariants()


def test_a_held_event_waits_for_its_subscription_to_settle() -> None:
    # AutoGen's worker knows a subscription only once the answer has arrived.
    router = RoutingTable(startup_grace=5.0)
    a = router.connect("A", DATA)
    router.receive(a, event("news", event_id="early"), 0.0)
    router.receive(a, request("1", "echo/k"), 0.0)
    b = router.connect("B", DATA)
    router.register_agent("B", "listener", 1.0)
    router.release(1.0)  # nobody subscribed yet: the event stays held
    router.add_subscription("B", type_sub("news", "listener", "s1"), 2.0)
    settled = 2.0 + SUBSCRIPTION_SETTLE
    assert router.next_deadline() == settled  # retried without more traffic
    assert not router.wants_release(2.0)
    router.register_agent("B", "echo", 2.0)  # a held request is not delayed
    assert router.wants_release(2.0)
    (forwarded,) = router.release(2.0)
    assert (forwarded.conn, parse(forwarded.data).WhichOneof("message")) == (b, "request")
    assert not router.wants_release(settled - 0.01)
    assert router.wants_release(settled)
    (delivered,) = router.release(settled)
    assert (delivered.conn, parse(delivered.data).cloudEvent.id) == (b, "early")
    assert router.next_deadline() == 5.0  # the grace's end; nothing else is due
    router.check_invariants()


@pytest.mark.parametrize(("rpc_timeout", "expected"), [(10.0, 110.0), (60.0, 130.0)])
def test_the_next_deadline_is_the_earlier_of_a_request_and_a_registration(
    rpc_timeout: float, expected: float
) -> None:
    router = RoutingTable(rpc_timeout=rpc_timeout, registration_grace=30.0)
    a = router.connect("A", DATA)
    router.connect("B", DATA)
    router.register_agent("B", "slow")
    router.register_agent("ghost", "phantom", 100.0)  # no channel: expires at 130
    router.receive(a, request("1", "slow/k"), 100.0)  # expires at 100 + rpc_timeout
    assert router.next_deadline() == expected
