"""The routing core with shared agent types: several workers register one
type, each agent lives on one of them, and a leaver's agents move on."""

from __future__ import annotations

import pytest
from google.protobuf import empty_pb2, wrappers_pb2
from grpclib.const import Status

from agentwire._gateway._placement import HashPlacement
from agentwire._gateway._routing import Close, Conn, ConnKind, Deliver, RoutingError, RoutingTable
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._wire import DRAIN_DESTINATION, ERROR_KIND_KEY, RELEASE_DESTINATION, ErrorKind

from .helpers import control, event, parse, request, response, type_sub

DATA = ConnKind.DATA
CONTROL = ConnKind.CONTROL


@pytest.fixture
def router() -> RoutingTable:
    return RoutingTable(rpc_timeout=10.0, max_in_flight=1000, placement=HashPlacement())


def targets(actions: list[Deliver | Close]) -> list[Conn]:
    return [a.conn for a in actions if isinstance(a, Deliver)]


def workers(router: RoutingTable, *names: str) -> list[Conn]:
    conns = []
    for name in names:
        conns.append(router.connect(name, DATA))
        router.register_agent(name, "echo")
    return conns


def test_every_worker_registering_a_shared_type_serves_it(router: RoutingTable) -> None:
    w1, w2 = workers(router, "W1", "W2")
    caller = router.connect("C", DATA)
    served = {
        conn
        for i in range(20)
        for conn in targets(router.receive(caller, request(f"r{i}", f"echo/k{i}"), 0.0))
    }
    assert served == {w1, w2}
    stats = router.statistics()
    assert stats.placement["echo"].workers == 2
    assert sum(stats.placement["echo"].keys.values()) == stats.placed_agents == 20
    assert stats.agent_types == 1
    router.check_invariants()


def test_the_same_client_registering_a_shared_type_twice_is_refused(router: RoutingTable) -> None:
    workers(router, "W1")
    with pytest.raises(RoutingError) as info:
        router.register_agent("W1", "echo")
    assert info.value.status is Status.INVALID_ARGUMENT
    assert "already registered with client W1" in info.value.message


def test_all_messages_for_one_agent_go_to_one_worker(router: RoutingTable) -> None:
    workers(router, "W1", "W2", "W3")
    caller = router.connect("C", DATA)
    for key in ("a", "b", "c", "d"):
        seen = {
            conn
            for i in range(10)
            for conn in targets(router.receive(caller, request(f"{key}{i}", f"echo/{key}"), 0.0))
        }
        assert len(seen) == 1
        assert router.placed_on("echo", key) == next(iter(seen)).client_id


def test_a_joining_worker_takes_no_placed_agent(router: RoutingTable) -> None:
    workers(router, "W1", "W2")
    caller = router.connect("C", DATA)
    for i in range(30):
        router.receive(caller, request(f"r{i}", f"echo/k{i}"), 0.0)
    before = {i: router.placed_on("echo", f"k{i}") for i in range(30)}
    (w3,) = workers(router, "W3")
    for i in range(30):
        (target,) = targets(router.receive(caller, request(f"s{i}", f"echo/k{i}"), 0.0))
        assert target.client_id == before[i]
    new = {
        conn
        for i in range(60)
        for conn in targets(router.receive(caller, request(f"n{i}", f"echo/new{i}"), 0.0))
    }
    assert w3 in new


def test_a_registration_before_the_channel_serves_once_the_channel_opens(
    router: RoutingTable,
) -> None:
    router.register_agent("W1", "echo")
    caller = router.connect("C", DATA)
    (refusal,) = router.receive(caller, request("r1", "echo/k"), 0.0)
    assert parse(refusal.data).response.metadata[ERROR_KIND_KEY] == ErrorKind.UNDELIVERABLE
    w1 = router.connect("W1", DATA)
    assert targets(router.receive(caller, request("r2", "echo/k"), 0.0)) == [w1]


def test_a_leaving_worker_fails_its_calls_and_its_agents_move_to_a_survivor(
    router: RoutingTable,
) -> None:
    w1, w2 = workers(router, "W1", "W2")
    caller = router.connect("C", DATA)
    keys = {}
    for i in range(20):
        (target,) = targets(router.receive(caller, request(f"r{i}", f"echo/k{i}"), 0.0))
        keys[f"k{i}"] = (f"r{i}", target)
    on_w1 = [key for key, (_, conn) in keys.items() if conn == w1]
    assert on_w1
    failed = router.disconnect(w1)
    answers = {parse(a.data).response.request_id for a in failed if isinstance(a, Deliver)}
    assert answers == {keys[key][0] for key in on_w1}
    assert all(isinstance(a, Deliver) and a.conn == caller for a in failed)
    for key in on_w1:
        assert router.placed_on("echo", key) is None
        assert targets(router.receive(caller, request(f"again-{key}", f"echo/{key}"), 1.0)) == [w2]
    assert router.statistics().placement["echo"].workers == 1
    router.check_invariants()


def test_a_response_from_the_new_owner_reaches_the_caller(router: RoutingTable) -> None:
    w1, w2 = workers(router, "W1", "W2")
    caller = router.connect("C", DATA)
    (target,) = targets(router.receive(caller, request("r1", "echo/k"), 0.0))
    survivor = w2 if target == w1 else w1
    router.disconnect(target)
    (forwarded,) = router.receive(caller, request("r2", "echo/k"), 0.0)
    assert isinstance(forwarded, Deliver)
    assert forwarded.conn == survivor
    gid = parse(forwarded.data).request.request_id
    (answer,) = router.receive(survivor, response(gid), 0.0)
    assert isinstance(answer, Deliver)
    assert answer.conn == caller
    assert parse(answer.data).response.request_id == "r2"


def test_an_event_for_a_shared_type_goes_only_to_the_owner_of_its_agent(
    router: RoutingTable,
) -> None:
    _w1, _w2 = workers(router, "W1", "W2")
    router.add_subscription("W1", type_sub("news", "echo", "s1"))
    router.add_subscription("W2", type_sub("news", "echo", "s2"))
    publisher = router.connect("P", DATA)
    for source in ("a", "b", "c", "d", "e", "f"):
        raw = event("news", source)
        (delivery,) = router.receive(publisher, raw, 0.0)
        assert isinstance(delivery, Deliver)
        assert delivery.event
        assert delivery.data == raw
        assert delivery.conn.client_id == router.placed_on("echo", source)
    assert router.statistics().event_deliveries == 6


def test_an_event_places_the_agent_that_later_requests_reach(router: RoutingTable) -> None:
    workers(router, "W1", "W2")
    router.add_subscription("W1", type_sub("news", "echo", "s1"))
    publisher = router.connect("P", DATA)
    (delivery,) = router.receive(publisher, event("news", "x"), 0.0)
    (forwarded,) = router.receive(publisher, request("r1", "echo/x"), 0.0)
    assert isinstance(forwarded, Deliver)
    assert forwarded.conn == delivery.conn


def test_a_drained_worker_keeps_its_agents_and_gets_no_new_ones(router: RoutingTable) -> None:
    _w1, w2 = workers(router, "W1", "W2")
    caller = router.connect("C", DATA)
    placed = {
        i: targets(router.receive(caller, request(f"r{i}", f"echo/k{i}"), 0.0))[0]
        for i in range(20)
    }
    assert router.drain("W1")
    assert not router.drain("C")  # serves no shared type
    for i, conn in placed.items():
        assert targets(router.receive(caller, request(f"s{i}", f"echo/k{i}"), 0.0)) == [conn]
    for i in range(20):
        assert targets(router.receive(caller, request(f"n{i}", f"echo/n{i}"), 0.0)) == [w2]
    assert router.statistics().placement["echo"].draining == ("W1",)
    router.drain("W2")
    (refusal,) = router.receive(caller, request("x", "echo/brand-new"), 0.0)
    response_ = parse(refusal.data).response
    assert response_.metadata[ERROR_KIND_KEY] == ErrorKind.UNDELIVERABLE
    assert "draining" in response_.error


def test_a_new_agent_beyond_max_placed_keys_is_refused_as_overloaded() -> None:
    router = RoutingTable(placement=HashPlacement(), max_placed_keys=2)
    workers(router, "W1")
    caller = router.connect("C", DATA)
    router.receive(caller, request("r1", "echo/a"), 0.0)
    router.receive(caller, request("r2", "echo/b"), 0.0)
    (refusal,) = router.receive(caller, request("r3", "echo/c"), 0.0)
    response_ = parse(refusal.data).response
    assert response_.metadata[ERROR_KIND_KEY] == ErrorKind.OVERLOADED
    assert "max_placed_keys" in response_.error


def test_control_messages_for_an_agent_go_to_its_owner(router: RoutingTable) -> None:
    w1, _w2 = workers(router, "W1", "W2")
    c1 = router.connect("W1", CONTROL)
    c2 = router.connect("W2", CONTROL)
    caller = router.connect("C", DATA)
    (forwarded,) = router.receive(caller, request("r1", "echo/k"), 0.0)
    assert isinstance(forwarded, Deliver)
    owner_control = c1 if forwarded.conn == w1 else c2
    asker = router.connect("C", CONTROL)
    (delivery,) = router.receive_control(
        asker, control("x1", "agentid=echo/k", respond_to="clientid=C")
    )
    assert isinstance(delivery, Deliver)
    assert delivery.conn == owner_control


def test_without_placement_a_second_worker_of_a_type_is_refused_as_autogen() -> None:
    router = RoutingTable()
    router.register_agent("W1", "echo")
    with pytest.raises(RoutingError, match="already registered with client W1"):
        router.register_agent("W2", "echo")
    assert router.statistics().placement == {}


def test_a_malformed_message_still_closes_only_its_sender(router: RoutingTable) -> None:
    (w1,) = workers(router, "W1")
    (action,) = router.receive(w1, b"\xff\xff", 0.0)
    assert isinstance(action, Close)
    assert action.conn == w1


def test_workers_of_a_shared_type_may_add_equal_subscriptions(router: RoutingTable) -> None:
    workers(router, "W1", "W2")
    router.add_subscription("W1", type_sub("news", "echo", "s1"))
    router.add_subscription("W2", type_sub("news", "echo", "s2"))  # AutoGen would refuse
    with pytest.raises(RoutingError, match="Subscription already exists"):
        router.add_subscription("W2", type_sub("news", "echo", "s3"))  # its own duplicate
    with pytest.raises(RoutingError, match="Subscription already exists"):
        router.add_subscription("W1", type_sub("other", "echo", "s2"))  # a taken id
    assert [s.id for s in router.subscriptions()] == ["s1"]
    assert router.statistics().subscriptions == 1
    router.check_invariants()


def test_an_equal_subscription_of_a_survivor_keeps_events_flowing(router: RoutingTable) -> None:
    w1, w2 = workers(router, "W1", "W2")
    router.add_subscription("W1", type_sub("news", "echo", "s1"))
    router.add_subscription("W2", type_sub("news", "echo", "s2"))
    publisher = router.connect("P", DATA)
    router.disconnect(w1)
    router.check_invariants()
    assert [s.id for s in router.subscriptions()] == ["s2"]
    for source in ("a", "b", "c"):
        assert targets(router.receive(publisher, event("news", source), 0.0)) == [w2]
    router.remove_subscription("P", "s2")
    assert router.receive(publisher, event("news", "a"), 0.0) == []
    router.check_invariants()


def test_removing_a_shadow_subscription_leaves_the_original(router: RoutingTable) -> None:
    workers(router, "W1", "W2")
    router.add_subscription("W1", type_sub("news", "echo", "s1"))
    router.add_subscription("W2", type_sub("news", "echo", "s2"))
    router.remove_subscription("W2", "s2")
    assert [s.id for s in router.subscriptions()] == ["s1"]
    with pytest.raises(RoutingError):
        router.remove_subscription("W2", "s2")
    router.check_invariants()


def drain_request(rpc_id: str, destination: str) -> bytes:
    message = pb.ControlMessage(rpc_id=rpc_id, destination=destination, respond_to="clientid=W1")
    message.rpcMessage.Pack(empty_pb2.Empty())
    return message.SerializeToString()


def bool_answer(action: Deliver | Close) -> bool:
    assert isinstance(action, Deliver)
    reply = pb.ControlMessage.FromString(action.data)
    answer = wrappers_pb2.BoolValue()
    assert reply.rpcMessage.Unpack(answer)
    return answer.value


def test_drain_and_release_requests_on_the_control_channel(router: RoutingTable) -> None:
    w1, w2 = workers(router, "W1", "W2")
    c1 = router.connect("W1", CONTROL)
    caller = router.connect("C", DATA)
    for i in range(20):
        router.receive(caller, request(f"r{i}", f"echo/k{i}"), 0.0)
    mine = [f"k{i}" for i in range(20) if router.placed_on("echo", f"k{i}") == "W1"]
    assert mine
    (answer,) = router.receive_control(c1, drain_request("d1", DRAIN_DESTINATION))
    assert answer.conn == c1
    assert bool_answer(answer)
    assert router.statistics().placement["echo"].draining == ("W1",)
    (answer,) = router.receive_control(c1, drain_request("d2", RELEASE_DESTINATION))
    assert bool_answer(answer)
    for key in mine:
        assert targets(router.receive(caller, request(f"a-{key}", f"echo/{key}"), 0.0)) == [w2]
    router.register_agent("W1", "other")  # a released worker takes no new type either
    assert router.statistics().placement["echo"].workers == 1
    assert "other" not in router.statistics().placement
    router.check_invariants()
    router.disconnect(w1)
    w1 = router.connect("W1", DATA)  # a new connection serves again
    router.register_agent("W1", "echo")
    assert router.statistics().placement["echo"].workers == 2
    router.check_invariants()


def test_drain_requests_are_refused_without_shared_types() -> None:
    router = RoutingTable()
    router.connect("W1", DATA)
    router.register_agent("W1", "echo")
    c1 = router.connect("W1", CONTROL)
    (answer,) = router.receive_control(c1, drain_request("d1", DRAIN_DESTINATION))
    assert not bool_answer(answer)
    (answer,) = router.receive_control(c1, drain_request("d2", RELEASE_DESTINATION))
    assert not bool_answer(answer)
