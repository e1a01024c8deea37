"""AutoGen 0.7.5 workers beside a secured agentwire gateway.

AutoGen's worker dials plaintext only (``grpc.insecure_channel``) and sends no
token, so it runs on the gateway's machine against the gateway's plaintext
loopback listener (``plaintext_address``) and acts as the access file's
``loopback`` principal, while agentwire workers reach the same gateway, and
the same routing table, over TLS with a token.
"""

from __future__ import annotations

import functools
import pathlib
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from agentwire import AgentId, Gateway, open_gateway, open_worker, serializers_for_type
from agentwire.security import AccessFileAuthenticator, client_ssl_context, server_ssl_context

from ..security.conftest import Pki, pki  # noqa: F401 (the fixture)
from ..worker.messages import Echo, Ping, Pong
from .test_gateway_autogen import PEER, Peer, error_text

pytestmark = pytest.mark.interop

WAIT = 60.0  # bound for any one expected line (cold AutoGen imports are slow)
TOKEN = "agentwire-worker-0123456789"
ACCESS = f"""
[principals.tls-worker]
token = "{TOKEN}"
register = ["aw_echo"]

[principals.local-autogen]
loopback = true
register = ["ag_echo"]
"""


@asynccontextmanager
async def spawn_peer_at(address: str, name: str) -> AsyncIterator[Peer]:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, str(PEER), address, "json"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                check=False,
            )
        )
        peer = Peer(process, name)
        try:
            peer.client_id = (await peer.expect("STARTED"))[1]
            yield peer
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


@pytest.fixture
async def secured(pki: Pki, tmp_path: pathlib.Path) -> AsyncIterator[Gateway]:  # noqa: F811
    access = tmp_path / "access.toml"
    access.write_text(ACCESS)
    async with open_gateway(
        "127.0.0.1:0",
        ssl_context=server_ssl_context(pki.server_cert, pki.server_key),
        authenticator=AccessFileAuthenticator(access),
        plaintext_address="127.0.0.1:0",
        rpc_timeout=120.0,
    ) as gw:
        yield gw


async def test_an_autogen_worker_on_the_loopback_listener_and_a_tls_worker_share_a_gateway(
    pki: Pki,  # noqa: F811
    secured: Gateway,
) -> None:
    assert secured.plaintext_address is not None
    with trio.fail_after(WAIT):
        async with (
            spawn_peer_at(secured.plaintext_address, "autogen") as autogen,
            open_worker(
                f"localhost:{secured.port}",
                ssl_context=client_ssl_context(ca=pki.ca_file),
                token=TOKEN,
            ) as ours,
        ):
            await autogen.register("ag_echo")
            await Echo.register(ours, "aw_echo", Echo)
            ours.add_message_serializer(serializers_for_type(Pong))
            # agentwire over TLS -> AutoGen on loopback
            assert await ours.send_message(Ping("hi"), AgentId("ag_echo", "k")) == Pong(
                "ag_echo/k:hi"
            )
            # AutoGen on loopback -> agentwire over TLS
            words = await autogen.command("send t1 aw_echo/k yo", "REPLY", "t1")
            assert words[2] == "aw_echo/k:yo"
            # the loopback principal's rights hold for the AutoGen worker
            words = await autogen.command("register aw_other", "ERROR", "register")
            message = error_text(words)
            assert "StatusCode.PERMISSION_DENIED" in message
            assert "principal 'local-autogen' may not register agent type 'aw_other'" in message
    stats = secured.access_statistics()
    assert stats.unauthenticated == 0
    assert stats.denials == 1
