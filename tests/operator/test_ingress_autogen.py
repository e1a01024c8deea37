"""An event POSTed over HTTP reaches a real AutoGen 0.7.5 worker like any other event
(run by ``nox -s interop``)."""

from __future__ import annotations

import httpx
import pytest

from agentwire import open_gateway
from tests.interop.test_gateway_autogen import spawn_peer

pytestmark = pytest.mark.interop


async def test_an_autogen_worker_receives_an_event_posted_over_http() -> None:
    async with (
        open_gateway(startup_grace=0, http_address="127.0.0.1:0") as gw,
        spawn_peer(gw, "sub") as sub,
    ):
        await sub.register("listener", "topic=hooks")
        headers = {
            "ce-specversion": "1.0",
            "ce-id": "h-1",
            "ce-type": "hooks",
            "ce-source": "s1",
            "ce-dataschema": "Ping",
            "content-type": "application/json",
        }
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"http://{gw.http_address}/", content=b'{"text": "from-http"}', headers=headers
            )
        assert response.status_code == 202, response.text
        words = await sub.expect("EVENT", "listener/s1")
        assert words[2:4] == ["json", "from-http"]
