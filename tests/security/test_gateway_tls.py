"""The gateway over TLS and mutual TLS, with agentwire workers, grpcio clients,
and clients that get it wrong (which must not disturb the others)."""

from __future__ import annotations

import contextlib
import datetime
import pathlib
import socket
import ssl
from collections.abc import AsyncIterator

import grpc
import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from agentwire import AgentId, open_gateway, open_worker, serializers_for_type
from agentwire._gateway import Gateway
from agentwire._proto import agent_worker_pb2 as pb
from agentwire._security import CertificateAuthenticator, client_ssl_context, server_ssl_context
from agentwire._transport import open_channel
from agentwire.security import PlaintextListenerError

from .conftest import Pki, Reply, Shout, Shouter

GUARD = 20  # seconds: a hang guard, never a synchronisation
P = "/agents.AgentRpc/"


def _server(pki: Pki, *, mutual: bool = False) -> ssl.SSLContext:
    return server_ssl_context(
        pki.server_cert, pki.server_key, client_ca=pki.ca_file if mutual else None
    )


def _client(pki: Pki, *, certificate: bool = False) -> ssl.SSLContext:
    if certificate:
        return client_ssl_context(ca=pki.ca_file, cert=pki.client_cert, key=pki.client_key)
    return client_ssl_context(ca=pki.ca_file)


def _tls_address(gateway: Gateway) -> str:
    return f"localhost:{gateway.port}"  # the certificate names localhost


async def _round_trip(address: str, **options: object) -> None:
    """Two workers through the gateway: an RPC from one to the other."""
    async with (
        open_worker(address, **options) as server_side,  # type: ignore[arg-type]
        open_worker(address, **options) as client_side,  # type: ignore[arg-type]
    ):
        await Shouter.register(server_side, "shouter", Shouter)
        client_side.add_message_serializer(serializers_for_type(Reply))
        reply = await client_side.send_message(Shout("hi"), AgentId("shouter", "1"))
        assert reply == Reply("HI")


async def test_workers_talk_through_a_tls_gateway(pki: Pki) -> None:
    with trio.fail_after(GUARD):
        async with open_gateway("127.0.0.1:0", ssl_context=_server(pki)) as gw:
            await _round_trip(_tls_address(gw), ssl_context=_client(pki))
            assert gw.statistics().rpcs_forwarded == 1


async def test_workers_with_certificates_talk_through_an_mtls_gateway(pki: Pki) -> None:
    with trio.fail_after(GUARD):
        async with open_gateway(
            "127.0.0.1:0",
            ssl_context=_server(pki, mutual=True),
            authenticator=CertificateAuthenticator(),
        ) as gw:
            await _round_trip(_tls_address(gw), ssl_context=_client(pki, certificate=True))
            assert gw.access_statistics().unauthenticated == 0


def _grpcio_get_subscriptions(target: str, credentials: grpc.ChannelCredentials) -> bytes:
    with grpc.secure_channel(target, credentials) as channel:
        call = channel.unary_unary(P + "GetSubscriptions")
        response: bytes = call(
            pb.GetSubscriptionsRequest().SerializeToString(),
            metadata=(("client-id", "grpcio-1"),),
            timeout=GUARD,
        )
        return response


async def test_a_grpcio_client_calls_a_tls_and_an_mtls_gateway(pki: Pki) -> None:
    ca = pki.ca_file.read_bytes()
    with trio.fail_after(GUARD):
        async with open_gateway("127.0.0.1:0", ssl_context=_server(pki)) as gw:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca)
            data = await trio.to_thread.run_sync(
                _grpcio_get_subscriptions, _tls_address(gw), credentials
            )
            assert pb.GetSubscriptionsResponse.FromString(data).subscriptions == []
        async with open_gateway("127.0.0.1:0", ssl_context=_server(pki, mutual=True)) as gw:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=pki.client_key.read_bytes(),
                certificate_chain=pki.client_cert.read_bytes(),
            )
            data = await trio.to_thread.run_sync(
                _grpcio_get_subscriptions, _tls_address(gw), credentials
            )
            assert pb.GetSubscriptionsResponse.FromString(data).subscriptions == []


@pytest.fixture
async def tls_gateway(pki: Pki) -> AsyncIterator[Gateway]:
    async with open_gateway("127.0.0.1:0", ssl_context=_server(pki, mutual=True)) as gw:
        yield gw


async def _get_subscriptions(address: str, context: ssl.SSLContext | None) -> None:
    async with open_channel(address, ssl_context=context, connect_timeout=GUARD) as channel:
        await channel.unary(
            P + "GetSubscriptions", b"", metadata=(("client-id", "probe"),), timeout=GUARD
        )


async def test_plaintext_and_certificate_less_clients_are_refused_while_others_work(
    pki: Pki, tls_gateway: Gateway
) -> None:
    address = _tls_address(tls_gateway)
    with trio.fail_after(GUARD):
        async with (
            open_worker(address, ssl_context=_client(pki, certificate=True)) as a,
            open_worker(address, ssl_context=_client(pki, certificate=True)) as b,
        ):
            await Shouter.register(a, "shouter", Shouter)
            b.add_message_serializer(serializers_for_type(Reply))
            with pytest.raises(GRPCError) as plaintext:
                await _get_subscriptions(address, None)
            assert plaintext.value.status is Status.UNAVAILABLE
            with pytest.raises(GRPCError) as no_certificate:
                await _get_subscriptions(address, _client(pki))
            assert no_certificate.value.status is Status.UNAVAILABLE
            assert await b.send_message(Shout("still"), AgentId("shouter", "1")) == Reply("STILL")


def _still_open(stream: trio.SocketStream) -> bool:
    """Whether the peer has neither closed *stream* nor sent anything on it."""
    fd = stream.socket.fileno()
    with socket.fromfd(fd, stream.socket.family, stream.socket.type) as peek:
        try:
            peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # data, or b"" at EOF
        except BlockingIOError:
            return True
        return False


async def test_a_stalled_tls_handshake_does_not_block_other_clients(
    pki: Pki, tls_gateway: Gateway
) -> None:
    address = _tls_address(tls_gateway)
    with trio.fail_after(GUARD):
        stalled = await trio.open_tcp_stream("127.0.0.1", tls_gateway.port)
        async with stalled:
            await stalled.send_all(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello's first bytes
            await _round_trip(address, ssl_context=_client(pki, certificate=True))
            # ... done while the stalled handshake was still pending: not behind it
            assert _still_open(stalled)


async def test_a_plaintext_loopback_listener_serves_the_same_gateway_as_tls(pki: Pki) -> None:
    with trio.fail_after(GUARD):
        async with open_gateway(
            "127.0.0.1:0", ssl_context=_server(pki), plaintext_address="127.0.0.1:0"
        ) as gw:
            assert gw.plaintext_address is not None
            assert gw.plaintext_address != gw.address
            async with (
                open_worker(gw.plaintext_address) as plain,
                open_worker(_tls_address(gw), ssl_context=_client(pki)) as secure,
            ):
                await Shouter.register(plain, "shouter", Shouter)
                secure.add_message_serializer(serializers_for_type(Reply))
                assert await secure.send_message(Shout("a"), AgentId("shouter", "1")) == Reply("A")
                assert gw.statistics().data_connections == 2


async def test_a_plaintext_listener_must_be_on_loopback(pki: Pki) -> None:
    with pytest.raises(PlaintextListenerError, match="loopback"):
        async with open_gateway(
            "127.0.0.1:0", ssl_context=_server(pki), plaintext_address="0.0.0.0:0"
        ):
            pass  # pragma: no cover


async def test_an_expired_client_certificate_is_refused_while_others_work(
    pki: Pki, tls_gateway: Gateway, tmp_path: pathlib.Path
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = pki.ca.issue_cert(
        "worker-old",
        common_name="worker-old",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    cert, key = tmp_path / "old.pem", tmp_path / "old-key.pem"
    expired.cert_chain_pems[0].write_to_path(str(cert))
    expired.private_key_pem.write_to_path(str(key))
    address = _tls_address(tls_gateway)
    with trio.fail_after(GUARD):
        with pytest.raises(GRPCError) as refused:
            await _get_subscriptions(
                address, client_ssl_context(ca=pki.ca_file, cert=cert, key=key)
            )
        assert refused.value.status is Status.UNAVAILABLE
        await _round_trip(address, ssl_context=_client(pki, certificate=True))


async def test_a_connection_that_never_starts_its_tls_handshake_is_closed(pki: Pki) -> None:
    with trio.fail_after(GUARD):
        async with open_gateway(ssl_context=_server(pki), handshake_timeout=0.2) as gateway:
            silent = await trio.open_tcp_stream("127.0.0.1", gateway.port)
            async with silent:
                # well before the 10 s default; a reset is a close too
                with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
                    assert await silent.receive_some(1024) == b""
            await _round_trip(_tls_address(gateway), ssl_context=_client(pki))  # others served


def test_the_gateway_command_takes_a_handshake_timeout() -> None:
    from agentwire._cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["gateway"]).handshake_timeout == 10.0
    assert parser.parse_args(["gateway", "--handshake-timeout", "2.5"]).handshake_timeout == 2.5
    assert parser.parse_args(["gateway", "--handshake-timeout", "0"]).handshake_timeout is None
