"""Relayed (operator-made) subscriptions in the gateway's routing table: L1-L2 of ``_relay.py``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentwire._gateway._placement import placement_strategy
from agentwire._gateway._routing import ConnKind, Deliver, RoutingTable
from agentwire._ids import TopicId
from agentwire._operator._relay import Relays
from agentwire._subscriptions import SubscriptionTable, subscription_from_proto
from tests.gateway.helpers import event, parse, prefix_sub, type_sub

DATA = ConnKind.DATA


def _deliveries(actions: list[object]) -> list[tuple[str, str]]:
    """``(client-id, topic type)`` per event delivery."""
    out = []
    for action in actions:
        assert isinstance(action, Deliver)
        out.append((action.conn.client_id, parse(action.data).cloudEvent.type))
    return out


def _worker_and_operator() -> RoutingTable:
    table = RoutingTable()
    table.connect("worker", DATA)
    table.register_agent("worker", "billing")
    table.add_subscription("worker", prefix_sub("billing:", "billing", "direct"))
    table.connect("operator", DATA)
    table.add_subscription("operator", type_sub("orders", "billing", "op1"), relay=True)
    return table


def test_an_event_of_a_relayed_subscription_reaches_its_worker_as_a_direct_message() -> None:
    table = _worker_and_operator()
    publisher = table.connect("publisher", DATA)
    actions = table.receive(publisher, event("orders", "o1", event_id="e7"), 0.0)
    # The event itself (the worker finds no recipient for it) and the relayed copy.
    assert _deliveries(actions) == [("worker", "orders"), ("worker", "billing:orders")]
    copy = parse(actions[1].data).cloudEvent  # type: ignore[attr-defined]
    assert (copy.source, copy.id) == ("o1", "e7")
    assert table.statistics().event_deliveries == 2
    table.check_invariants()


def test_no_copy_when_the_workers_own_subscription_delivers_the_event() -> None:
    table = _worker_and_operator()
    table.add_subscription("worker", prefix_sub("ord", "billing", "own"))
    publisher = table.connect("publisher", DATA)
    actions = table.receive(publisher, event("orders", "o1"), 0.0)
    assert _deliveries(actions) == [("worker", "orders")]
    table.remove_subscription("worker", "own")
    actions = table.receive(publisher, event("orders", "o1"), 0.0)
    assert _deliveries(actions) == [("worker", "orders"), ("worker", "billing:orders")]


def test_the_relayed_subscription_outlives_its_agent_types_worker() -> None:
    table = _worker_and_operator()
    worker = table.connection_of("worker", DATA)
    assert worker is not None
    table.disconnect(worker)
    publisher = table.connect("publisher", DATA)
    assert table.receive(publisher, event("orders", "o1"), 0.0) == []
    table.connect("worker2", DATA)
    table.register_agent("worker2", "billing")
    table.add_subscription("worker2", prefix_sub("billing:", "billing", "direct2"))
    actions = table.receive(publisher, event("orders", "o2"), 0.0)
    assert _deliveries(actions) == [("worker2", "orders"), ("worker2", "billing:orders")]
    table.check_invariants()


def test_a_relayed_subscription_leaves_with_its_row() -> None:
    table = _worker_and_operator()
    table.remove_subscription("worker", "op1")
    table.check_invariants()
    publisher = table.connect("publisher", DATA)
    assert table.receive(publisher, event("orders", "o1"), 0.0) == []
    table.add_subscription("operator", type_sub("orders", "billing", "op2"), relay=True)
    operator = table.connection_of("operator", DATA)
    assert operator is not None
    table.disconnect(operator)  # the operator client's records go with it
    table.check_invariants()
    assert table.receive(publisher, event("orders", "o1"), 0.0) == []


def test_with_shared_agent_types_the_copy_goes_to_the_agents_worker() -> None:
    table = RoutingTable(placement=placement_strategy("hash"))
    for worker in ("w1", "w2"):
        table.connect(worker, DATA)
        table.register_agent(worker, "billing")
    table.connect("operator", DATA)
    table.add_subscription("operator", type_sub("orders", "billing", "op1"), relay=True)
    publisher = table.connect("publisher", DATA)
    for source in ("a", "b", "c", "d"):
        actions = table.receive(publisher, event("orders", source), 0.0)
        placed = table.placed_on("billing", source)
        assert _deliveries(actions) == [(placed, "orders"), (placed, "billing:orders")]
    table.check_invariants()


_types = st.sampled_from(["a", "b"])
_topics = st.sampled_from(["t", "tx", "u"])
_rows = st.lists(
    st.tuples(st.booleans(), st.booleans(), _topics, _types), max_size=6, unique=True
)  # (relayed, prefix, topic or prefix, agent type)


@given(rows=_rows, topic=_topics)
def test_copies_go_exactly_to_types_only_relayed_rows_map_the_topic_to(
    rows: list[tuple[bool, bool, str, str]], topic: str
) -> None:
    table, relays = SubscriptionTable(), Relays()
    own: set[str] = set()
    relayed: set[str] = set()
    for index, (relay, prefix, name, agent_type) in enumerate(rows):
        proto = (prefix_sub if prefix else type_sub)(name, agent_type, f"s{index}")
        sub = subscription_from_proto(proto)
        if any(sub == other for other in table):
            continue  # the registry refuses an equal row
        table.add(sub)
        if relay:
            relays.add(proto)
        if sub.is_match(TopicId(topic, "k")):
            (relayed if relay else own).add(agent_type)
    relays.check_invariants(table)
    copies = relays.copies(TopicId(topic, "k"), event(topic, "k"), table)
    copied = [agent_type for agent_type, _ in copies]
    assert len(copied) == len(set(copied))
    assert set(copied) == relayed - own
    for agent_type, data in copies:
        assert parse(data).cloudEvent.type == f"{agent_type}:{topic}"
