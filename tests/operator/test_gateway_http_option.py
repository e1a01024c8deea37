"""``agentwire gateway --http-address``: the gateway command takes CloudEvents over HTTP."""

from __future__ import annotations

import httpx
import trio

from tests.operator.cli import agentwire, read_line, running, stop


async def test_the_gateway_command_prints_where_it_takes_events_and_accepts_them() -> None:
    args = ("gateway", "--address", "127.0.0.1:0", "--http-address", "127.0.0.1:0")
    async with running(*args) as process:
        assert process.stdout is not None
        with trio.fail_after(30):
            lines = await read_line(process.stdout)
            while lines.count("\n") < 2:
                lines += await read_line(process.stdout)
        listening, events = lines.splitlines()
        assert listening.startswith("agentwire gateway listening on 127.0.0.1:")
        assert events.startswith("agentwire gateway events on http://127.0.0.1:")
        url = events.rsplit(" ", 1)[1]
        headers = {
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-type": "t",
            "ce-source": "s",
            "content-type": "application/json",
        }
        async with httpx.AsyncClient() as client:
            response = await client.post(url, content=b"{}", headers=headers)
        assert response.status_code == 202
        status = await stop(process)
    assert status == 0


async def test_an_invalid_http_address_is_one_line_and_exit_2() -> None:
    done = await agentwire("gateway", "--http-address", "nonsense")
    assert done.status == 2
    assert done.err.startswith("agentwire gateway: invalid --http-address: ")
    assert done.err.count("\n") == 1


async def test_a_bad_webhook_option_is_one_line_and_exit_2() -> None:
    done = await agentwire("gateway", "--webhook", "orders=ftp://example.org/")
    assert done.status == 2
    assert done.err.startswith("agentwire gateway: webhook URL 'ftp://example.org/' must be")
    assert done.err.count("\n") == 1
