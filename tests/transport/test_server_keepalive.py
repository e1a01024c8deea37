"""Server keepalive: a frozen client is detected and dropped, a live one never is."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import trio
import trio.testing

from agentwire._transport import (
    GRPCError,
    ServerStream,
    Status,
    bidi,
    open_channel_over_stream,
    open_grpc_server,
    unary,
)

from .conftest import request_headers, run_peer_client, serving_in_memory


class Handler:
    """A call that sends ``first`` messages then waits; records how it ended."""

    def __init__(self, flood: bool = False) -> None:
        self.flood = flood
        self.started = trio.Event()
        self.ended = trio.Event()
        self.error: GRPCError | None = None
        self.stream: ServerStream | None = None

    async def __call__(self, stream: ServerStream) -> None:
        self.stream = stream
        try:
            await stream.send(b"started")
            self.started.set()
            while self.flood:
                await stream.send(b"y" * 65536)
            await trio.sleep_forever()
        finally:
            self.error = stream.error
            self.ended.set()


async def _echo(request: bytes, stream: ServerStream) -> bytes:
    return request


def _raw_client(path: str) -> tuple[h2.connection.H2Connection, bytes]:
    """A bare h2 client's preface, SETTINGS and one request's headers."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    client.increment_flow_control_window(2**31 - 1 - 65535)
    client.send_headers(client.get_next_available_stream_id(), request_headers(path))
    return client, client.data_to_send()


async def test_a_frozen_client_is_dropped_after_the_keepalive_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    handler = Handler()
    methods = {"/t/Hang": bidi(handler)}
    async with serving_in_memory(methods, keepalive_interval=10, keepalive_timeout=5) as (
        raw,
        server,
    ):
        _, opening = _raw_client("/t/Hang")
        await raw.send_all(opening)
        await handler.started.wait()
        # from now on the client reads nothing and answers nothing
        with trio.move_on_after(14.9):
            await handler.ended.wait()
        assert not handler.ended.is_set()
        with trio.fail_after(0.2):
            await handler.ended.wait()
        assert handler.error is not None
        assert handler.error.status is Status.UNAVAILABLE
        assert handler.error.message == "keepalive ping not acknowledged"
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().connections == 0


async def test_a_live_client_with_a_quiet_call_stays_connected(
    autojump_clock: trio.abc.Clock,
) -> None:
    handler = Handler()
    methods = {"/t/Hang": bidi(handler), "/t/Echo": unary(_echo)}
    async with (
        serving_in_memory(methods, keepalive_interval=10, keepalive_timeout=5) as (
            client_stream,
            _,
        ),
        open_channel_over_stream(client_stream) as channel,
        channel.stream("/t/Hang") as stream,
    ):
        assert await stream.receive() == b"started"
        await trio.sleep(3600)
        assert not handler.ended.is_set()
        assert not channel.closed
        assert handler.stream is not None
        assert handler.stream._conn.pings_acknowledged >= 100
        assert await channel.unary("/t/Echo", b"alive") == b"alive"


async def test_no_pings_while_no_call_is_open(autojump_clock: trio.abc.Clock) -> None:
    methods = {"/t/Echo": unary(_echo)}
    async with (
        serving_in_memory(methods, keepalive_interval=10, idle_timeout=None) as (
            client_stream,
            server,
        ),
        open_channel_over_stream(client_stream) as channel,
    ):
        assert await channel.unary("/t/Echo", b"one") == b"one"
        await trio.sleep(3600)
        (conn,) = server._connections
        assert conn.pings_acknowledged == 0
        assert await channel.unary("/t/Echo", b"two") == b"two"


async def test_a_frozen_client_blocking_a_sender_is_dropped_over_tcp() -> None:
    handler = Handler(flood=True)
    methods = {"/t/Flood": bidi(handler)}
    async with open_grpc_server(
        methods, "127.0.0.1", 0, keepalive_interval=0.5, keepalive_timeout=0.5
    ) as server:
        raw = await trio.open_tcp_stream("127.0.0.1", server.port)
        _, opening = _raw_client("/t/Flood")
        await raw.send_all(opening)
        # the client never reads: the handler ends up blocked on the full socket
        with trio.fail_after(30):
            await handler.ended.wait()
        assert handler.error is not None
        assert handler.error.message == "keepalive ping not acknowledged"
        await raw.aclose()


async def test_grpcio_client_answers_server_pings_and_keeps_working() -> None:
    acknowledged: list[int] = []

    async def quiet(stream: ServerStream) -> None:
        await stream.send(b"started")
        await trio.sleep(1.0)  # the call is silent for ten ping intervals
        acknowledged.append(stream._conn.pings_acknowledged)
        await stream.send(b"done")

    methods = {"/test.Test/Quiet": bidi(quiet), "/test.Test/Echo": unary(_echo)}
    with trio.fail_after(60):
        async with open_grpc_server(
            methods, "127.0.0.1", 0, keepalive_interval=0.1, keepalive_timeout=5
        ) as server:
            results = await run_peer_client("grpcio", server.address, "quiet")
    assert results == {"quiet": {"result": True, "code": Status.OK.value}}
    assert acknowledged[0] >= 1


async def test_keepalive_is_off_by_default(autojump_clock: trio.abc.Clock) -> None:
    handler = Handler()
    async with serving_in_memory({"/t/Hang": bidi(handler)}) as (raw, _):
        _, opening = _raw_client("/t/Hang")
        await raw.send_all(opening)
        await handler.started.wait()
        await trio.sleep(24 * 3600)
        assert not handler.ended.is_set()
