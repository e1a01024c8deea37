"""The generated protocol classes: golden vectors from AutoGen 0.7.5 and drift."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import venv

import pytest
from google.protobuf import any_pb2, struct_pb2

from agentwire import serializers_for_type
from agentwire._examples.agentwire.demo import Headline
from agentwire._examples.agentwire.examples import Order, OrderLine
from agentwire._examples.google.protobuf import Struct
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._proto import cloudevent_pb2 as ce
from tests.examples_pb2 import demo_pb2, order_pb2
from tests.proto_messages import CASES, BetterProtoMessage, GoogleProtoMessage

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Message envelopes captured from the real AutoGen 0.7.5 host, hex.
RPC_REQUEST_WITH_SENDER = (
    "0a480a0132120c0a0663616c6c6572120263311a0a0a046563686f12026b312a290a0450696e6712106170706c69"
    "636174696f6e2f6a736f6e1a0f7b2274657874223a2022727063227d"
)
RPC_REQUEST_NO_SENDER = (
    "0a3c0a01311a0a0a046563686f12026b302a2b0a0450696e6712106170706c69636174696f6e2f6a736f6e1a117b"
    "2274657874223a20226e6f736572227d"
)
RPC_RESPONSE_OK = (
    "12330a0132122e0a04506f6e6712106170706c69636174696f6e2f6a736f6e1a147b2274657874223a2022706f6e"
    "673a727063227d"
)
RPC_RESPONSE_ERROR = "120d0a01331a086b61626f6f6d2078"
CLOUD_EVENT_PROTOBUF = (
    "1a92020a2438383832613865632d386133302d343064642d613965302d353064393330333738626533120764656661"
    "756c741a03312e30220764656661756c742a1a0a1161676167656e7473656e6465727479706512051a037075622a2b"
    "0a0f64617461636f6e74656e747479706512181a166170706c69636174696f6e2f782d70726f746f6275662a180a10"
    "61676167656e7473656e6465726b657912041a0270312a230a0a64617461736368656d6112151a136167656e74732e"
    "50726f746f4d6573736167652a160a0961676d73676b696e6412091a077075626c69736842330a27747970652e676f"
    "6f676c65617069732e636f6d2f6167656e74732e50726f746f4d65737361676512080a0648656c6c6f21"
)


def decode(hex_bytes: str) -> pb.Message:
    return pb.Message.FromString(bytes.fromhex(hex_bytes))


def test_rpc_request_with_sender() -> None:
    msg = decode(RPC_REQUEST_WITH_SENDER)
    assert msg.WhichOneof("message") == "request"
    req = msg.request
    assert req.request_id == "2"
    assert req.HasField("source")
    assert (req.source.type, req.source.key) == ("caller", "c1")
    assert (req.target.type, req.target.key) == ("echo", "k1")
    assert req.payload.data_type == "Ping"
    assert req.payload.data_content_type == "application/json"
    assert req.payload.data == b'{"text": "rpc"}'
    assert req.method == ""
    assert dict(req.metadata) == {}
    assert msg.SerializeToString().hex() == RPC_REQUEST_WITH_SENDER


def test_rpc_request_without_sender_omits_source() -> None:
    msg = decode(RPC_REQUEST_NO_SENDER)
    req = msg.request
    assert req.request_id == "1"
    assert not req.HasField("source")
    assert (req.target.type, req.target.key) == ("echo", "k0")
    assert req.payload.data == b'{"text": "noser"}'
    assert msg.SerializeToString().hex() == RPC_REQUEST_NO_SENDER
    rebuilt = pb.Message(
        request=pb.RpcRequest(
            request_id="1",
            target=pb.AgentId(type="echo", key="k0"),
            payload=pb.Payload(
                data_type="Ping",
                data_content_type="application/json",
                data=b'{"text": "noser"}',
            ),
        )
    )
    assert rebuilt.SerializeToString().hex() == RPC_REQUEST_NO_SENDER


def test_rpc_response_ok() -> None:
    msg = decode(RPC_RESPONSE_OK)
    assert msg.WhichOneof("message") == "response"
    assert msg.response.request_id == "2"
    assert msg.response.payload.data_type == "Pong"
    assert msg.response.payload.data == b'{"text": "pong:rpc"}'
    assert msg.response.error == ""
    assert msg.SerializeToString().hex() == RPC_RESPONSE_OK


def test_rpc_response_error_has_no_payload() -> None:
    msg = decode(RPC_RESPONSE_ERROR)
    assert msg.response.request_id == "3"
    assert msg.response.error == "kaboom x"
    assert not msg.response.HasField("payload")
    assert msg.SerializeToString().hex() == RPC_RESPONSE_ERROR


def test_cloud_event_protobuf_mode() -> None:
    msg = decode(CLOUD_EVENT_PROTOBUF)
    assert msg.WhichOneof("message") == "cloudEvent"
    event = msg.cloudEvent
    assert event.id == "8882a8ec-8a30-40dd-a9e0-50d930378be3"
    assert (event.type, event.source, event.spec_version) == ("default", "default", "1.0")
    attrs = {k: v.ce_string for k, v in event.attributes.items()}
    assert attrs == {
        "agagentsendertype": "pub",
        "agagentsenderkey": "p1",
        "datacontenttype": "application/x-protobuf",
        "dataschema": "agents.ProtoMessage",
        "agmsgkind": "publish",
    }
    assert all(v.WhichOneof("attr") == "ce_string" for v in event.attributes.values())
    assert event.WhichOneof("data") == "proto_data"
    assert event.proto_data.type_url == "type.googleapis.com/agents.ProtoMessage"
    # agents.ProtoMessage{message: "Hello!"}: field 1, length 6.
    assert event.proto_data.value == b"\x0a\x06Hello!"
    # Map order on the wire is not fixed: compare by parsing.
    assert pb.Message.FromString(msg.SerializeToString()) == msg


def test_field_numbers_match_the_protocol() -> None:
    numbers = {
        (f.containing_type.full_name, f.name): f.number
        for message in (pb.RpcRequest, pb.Message, pb.Subscription, pb.ControlMessage)
        for f in message.DESCRIPTOR.fields
    }
    assert numbers[("agents.RpcRequest", "source")] == 2
    assert numbers[("agents.RpcRequest", "metadata")] == 6
    assert numbers[("agents.Message", "cloudEvent")] == 3
    assert numbers[("agents.Subscription", "typePrefixSubscription")] == 3
    assert numbers[("agents.ControlMessage", "rpcMessage")] == 4
    assert ce.CloudEvent.DESCRIPTOR.fields_by_name["proto_data"].number == 8
    assert any_pb2.Any.DESCRIPTOR.full_name == "google.protobuf.Any"
    service = pb.DESCRIPTOR.services_by_name["AgentRpc"]
    assert [m.name for m in service.methods] == [
        "OpenChannel",
        "OpenControlChannel",
        "RegisterAgent",
        "AddSubscription",
        "RemoveSubscription",
        "GetSubscriptions",
    ]


def _protoc_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The interpreter that has proto/tools.txt (``nox -s tests`` provides one)."""
    given = os.environ.get("AGENTWIRE_PROTOC_PYTHON")
    if given:
        return given
    env_dir = tmp_path_factory.mktemp("protoc-venv")
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    tools = ROOT / "proto" / "tools.txt"
    subprocess.run([python, "-m", "pip", "install", "-q", "-r", str(tools)], check=True)
    return python


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """What `nox -s proto` writes, generated afresh under a temporary root."""
    python = _protoc_python(tmp_path_factory)
    root = tmp_path_factory.mktemp("regenerated")
    subprocess.run([python, str(ROOT / "proto" / "generate.py"), "--root", str(root)], check=True)
    return root


def _generated_files(folder: pathlib.Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.suffix in {".py", ".pyi"} and "__pycache__" not in p.parts
    )


@pytest.mark.parametrize(
    "target", ["agentwire/_proto", "agentwire/_examples", "tests/examples_pb2"]
)
def test_generated_code_has_not_drifted(regenerated: pathlib.Path, target: str) -> None:
    """Regenerating from proto/ must reproduce the committed code byte for byte."""
    out = regenerated / target
    committed = ROOT / target
    names = _generated_files(committed)
    assert names == _generated_files(out)
    for name in names:
        assert (out / name).read_bytes() == (committed / name).read_bytes(), (
            f"{target}/{name} differs from what `nox -s proto` generates"
        )


def test_generated_code_imports_without_runtime_version_check() -> None:
    source = (ROOT / "agentwire" / "_proto" / "agent_worker_pb2.py").read_text()
    assert "ValidateProtobufRuntimeVersion" not in source
    assert sys.modules["agentwire._proto.cloudevent_pb2"] is ce


# -- the example payloads: one .proto, a betterproto2 class and a google class ---------


def _google_every_field_order() -> order_pb2.Order:
    """CASES["every-field"], built with the google class's own API."""
    order = order_pb2.Order(
        id="o-1",
        status=order_pb2.Order.STATUS_OPEN,
        priority=order_pb2.PRIORITY_HIGH,
        lines=[
            order_pb2.Order.Line(
                sku="tea",
                quantity=2,
                price=order_pb2.Money(currency="EUR", units=3, nanos=500_000_000),
            ),
            order_pb2.Order.Line(sku="cup", quantity=1),
        ],
        notes=["fragile", "gift"],
        labels={"channel": "web", "region": "eu"},
        discounts={
            "spring": order_pb2.Money(currency="EUR", units=1),
            "loyalty": order_pb2.Money(currency="EUR", nanos=250_000_000),
        },
        ship_to=order_pb2.Address(street="1 Main St", city="Lyon"),
        coupon="",
    )
    order.placed_at.FromJsonString("2026-11-30T17:30:00.123456Z")
    order.extra.update({"gift": True, "tags": ["a", 1.5, None], "box": {"size": 3}})
    return order


def test_betterproto2_bytes_are_the_google_class_bytes_for_every_field_kind() -> None:
    ours = CASES["every-field"].order
    theirs = _google_every_field_order()
    assert order_pb2.Order.FromString(bytes(ours)) == theirs
    assert Order.parse(theirs.SerializeToString()) == ours
    assert theirs.HasField("coupon")  # an empty optional string keeps its presence


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_sample_order_reads_the_same_in_both_classes(name: str) -> None:
    case = CASES[name]
    theirs = order_pb2.Order.FromString(bytes(case.order))
    assert (theirs.WhichOneof("delivery") or "-") == case.delivery
    assert order_pb2.Order.Status.Name(theirs.status) == case.status
    placed_at = theirs.placed_at.ToJsonString() if theirs.HasField("placed_at") else "-"
    assert placed_at == case.placed_at
    assert Order.parse(theirs.SerializeToString(deterministic=True)) == case.order


@pytest.mark.parametrize(
    ("cls", "full_name"),
    [
        (BetterProtoMessage, "agents.ProtoMessage"),
        (Headline, "agentwire.demo.Headline"),
        (Order, "agentwire.examples.Order"),
        (OrderLine, "agentwire.examples.Order.Line"),
        (Struct, "google.protobuf.Struct"),
    ],
)
def test_generated_classes_travel_under_their_full_proto_name(cls: type, full_name: str) -> None:
    [serializer] = serializers_for_type(cls)
    assert serializer.type_name == full_name
    google_cls = {
        "agents.ProtoMessage": GoogleProtoMessage,
        "agentwire.demo.Headline": demo_pb2.Headline,
        "agentwire.examples.Order": order_pb2.Order,
        "agentwire.examples.Order.Line": order_pb2.Order.Line,
        "google.protobuf.Struct": struct_pb2.Struct,
    }[full_name]
    assert google_cls.DESCRIPTOR.full_name == full_name


def test_a_generated_order_is_packed_in_any_as_autogen_packs_the_google_class() -> None:
    [serializer] = serializers_for_type(Order)
    data = serializer.serialize(CASES["every-field"].order)
    wrapper = any_pb2.Any.FromString(data)
    assert wrapper.type_url == "type.googleapis.com/agentwire.examples.Order"
    unpacked = order_pb2.Order()
    assert wrapper.Unpack(unpacked)
    assert unpacked == _google_every_field_order()
    packed = any_pb2.Any()
    packed.Pack(_google_every_field_order())
    assert serializer.deserialize(packed.SerializeToString()) == CASES["every-field"].order
