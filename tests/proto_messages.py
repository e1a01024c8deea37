"""Protobuf test payloads, compiled by ``nox -s proto`` from ``proto/examples``.

Each message has two classes from one ``.proto``: the google protobuf class protoc
writes (``tests/examples_pb2``, what AutoGen agents use) and the dataclass
betterproto2-compiler writes (``agentwire._examples``, what agentwire recommends).

* ``agents.ProtoMessage { string message = 1; }``: :data:`BetterProtoMessage` and
  :data:`GoogleProtoMessage`.
* ``agentwire.examples.Order`` (every kind of proto3 field): :data:`CASES`, sample
  Orders and what the google class reads from each.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Final

from agentwire._examples.agents import ProtoMessage as BetterProtoMessage
from agentwire._examples.agentwire.examples import (
    Address,
    Money,
    Order,
    OrderLine,
    OrderStatus,
    Priority,
)
from agentwire._examples.google.protobuf import Struct
from tests.examples_pb2.proto_message_pb2 import ProtoMessage as GoogleProtoMessage

__all__ = ["CASES", "BetterProtoMessage", "Case", "GoogleProtoMessage"]


@dataclasses.dataclass(frozen=True)
class Case:
    """An Order and what AutoGen's google class must read from it."""

    order: Order
    delivery: str  # the `delivery` oneof case, "-" if unset
    status: str  # the Status enum value's proto name
    placed_at: str  # the Timestamp as proto3 JSON, "-" if unset


CASES: Final = {
    "every-field": Case(
        Order(
            id="o-1",
            status=OrderStatus.OPEN,
            priority=Priority.HIGH,
            lines=[
                OrderLine(sku="tea", quantity=2, price=Money("EUR", 3, 500_000_000)),
                OrderLine(sku="cup", quantity=1),
            ],
            notes=["fragile", "gift"],
            labels={"channel": "web", "region": "eu"},
            discounts={"spring": Money("EUR", 1, 0), "loyalty": Money("EUR", 0, 250_000_000)},
            ship_to=Address("1 Main St", "Lyon"),
            placed_at=datetime.datetime(2026, 11, 30, 17, 30, 0, 123456, tzinfo=datetime.UTC),
            extra=Struct.from_dict({"gift": True, "tags": ["a", 1.5, None], "box": {"size": 3}}),
            coupon="",  # set, though empty: presence crosses too
        ),
        delivery="ship_to",
        status="STATUS_OPEN",
        placed_at="2026-11-30T17:30:00.123456Z",
    ),
    "other-oneof-case": Case(
        Order(id="o-2", pickup_point="locker 7", extra=Struct(), priority=Priority.LOW),
        delivery="pickup_point",
        status="STATUS_UNSPECIFIED",
        placed_at="-",
    ),
    "all-defaults": Case(Order(), delivery="-", status="STATUS_UNSPECIFIED", placed_at="-"),
}
