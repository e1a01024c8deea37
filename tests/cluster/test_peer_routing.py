"""The routing table's rules for peer gateways (I9, kept in ``_gateway/_peers.py``), sans-IO."""

from __future__ import annotations

from agentwire._gateway._routing import ConnKind, Deliver, RoutingTable
from agentwire._wire import ERROR_KIND_KEY, ErrorKind
from tests.gateway.helpers import event, parse, request, response, type_sub


def table() -> RoutingTable:
    return RoutingTable(startup_grace=0.0, max_agent_types=1, max_subscriptions=1)


def test_an_event_from_a_peer_goes_to_local_clients_only() -> None:
    router = table()
    local = router.connect("w", ConnKind.DATA)
    east = router.connect("peer:east", ConnKind.DATA, peer=True)
    west = router.connect("peer:west", ConnKind.DATA, peer=True)
    router.register_agent("w", "a")
    router.register_agent("peer:east", "b", peer=True)
    router.register_agent("peer:west", "c", peer=True)
    for i, agent_type in enumerate("abc"):
        owner = {"a": "w", "b": "peer:east", "c": "peer:west"}[agent_type]
        router.add_subscription(owner, type_sub("news", agent_type, f"s{i}"), peer=owner != "w")
    from_peer = router.receive(east, event("news"), now=0.0)
    assert [a.conn for a in from_peer if isinstance(a, Deliver)] == [local]
    from_local = router.receive(local, event("news"), now=0.0)
    assert {a.conn for a in from_local if isinstance(a, Deliver)} == {local, east, west}
    router.check_invariants()


def test_a_request_from_a_peer_is_never_forwarded_to_another_peer() -> None:
    router = table()
    east = router.connect("peer:east", ConnKind.DATA, peer=True)
    router.connect("peer:west", ConnKind.DATA, peer=True)
    router.register_agent("peer:west", "c", peer=True)
    [refusal] = router.receive(east, request("r1", "c/k"), now=0.0)
    assert isinstance(refusal, Deliver)
    assert refusal.conn is east
    answer = parse(refusal.data).response
    assert answer.metadata[ERROR_KIND_KEY] == ErrorKind.UNDELIVERABLE


def test_requests_in_flight_to_a_peer_that_leaves_are_answered_gateway_unreachable() -> None:
    router = table()
    local = router.connect("w", ConnKind.DATA)
    east = router.connect("peer:east", ConnKind.DATA, peer=True)
    router.register_agent("peer:east", "b", peer=True)
    [forwarded] = router.receive(local, request("r1", "b/k"), now=0.0)
    assert isinstance(forwarded, Deliver)
    assert forwarded.conn is east
    [failed] = router.disconnect(east)
    assert isinstance(failed, Deliver)
    assert failed.conn is local
    answer = parse(failed.data).response
    assert answer.request_id == "r1"
    assert answer.metadata[ERROR_KIND_KEY] == ErrorKind.GATEWAY_UNREACHABLE
    assert "left the cluster or became unreachable" in answer.error
    router.check_invariants()


def test_a_peer_has_no_per_client_bounds_and_loses_single_types() -> None:
    router = table()
    local = router.connect("w", ConnKind.DATA)
    east = router.connect("peer:east", ConnKind.DATA, peer=True)
    for agent_type in ("b", "c", "d"):
        router.register_agent("peer:east", agent_type, peer=True)
    router.add_subscription("peer:east", type_sub("x", "b", "s1"), peer=True)
    router.add_subscription("peer:east", type_sub("y", "c", "s2"), peer=True)
    router.check_invariants()
    router.unregister_agent("peer:east", "c")
    assert router.owner_of("c") is None
    assert router.owner_of("b") == "peer:east"
    # The peer answers for what it served: a response still settles its request.
    [forwarded] = router.receive(local, request("r1", "b/k"), now=0.0)
    assert isinstance(forwarded, Deliver)
    gateway_id = parse(forwarded.data).request.request_id
    [answer] = router.receive(east, response(gateway_id), now=0.0)
    assert isinstance(answer, Deliver)
    assert answer.conn is local
    assert parse(answer.data).response.request_id == "r1"
    router.check_invariants()
