"""The door to the fast paths: which h2 / trio they were checked against, and the fallback."""

from __future__ import annotations

import h2
import pytest
import trio
import trio.testing

from agentwire._transport import _fastpath, _fdio, _h2fast
from agentwire._transport._connection import Http2Connection


def test_the_fast_paths_name_the_versions_they_were_checked_against() -> None:
    assert _h2fast.CHECKED_VERSION == "4.4.1"
    assert _fdio.CHECKED_VERSION == "0.35.0"
    # the installed versions are the checked ones: the fast paths are in use
    assert _fastpath.in_checked_series(h2.__version__, "4.4.1")
    assert _fastpath.in_checked_series(trio.__version__, "0.35.0")
    assert _fastpath.versions_checked()


@pytest.mark.parametrize(
    ("installed", "checked", "expected"),
    [
        ("4.4.1", "4.4.1", True),
        ("4.4.7", "4.4.1", True),
        ("4.5.0", "4.4.1", False),
        ("4.3.2", "4.4.1", False),
        ("5.0.0", "4.4.1", False),
        ("0.35.2", "0.35.0", True),
        ("0.36.0", "0.35.0", False),
    ],
)
def test_only_the_checked_minor_series_counts(installed: str, checked: str, expected: bool) -> None:
    assert _fastpath.in_checked_series(installed, checked) is expected


@pytest.mark.parametrize("module", [h2, trio])
async def test_another_h2_or_trio_series_turns_the_fast_paths_off(
    io_paths: bool, monkeypatch: pytest.MonkeyPatch, module: object
) -> None:
    a, _ = trio.testing.memory_stream_pair()
    assert Http2Connection(a, client_side=True, max_message_size=1).fast_paths is io_paths
    monkeypatch.setattr(module, "__version__", "99.0.0")
    assert not _fastpath.versions_checked()
    conn = Http2Connection(a, client_side=True, max_message_size=1)
    assert conn.fast_paths is False
    assert conn._io is None


async def test_the_switch_turns_the_fast_paths_off(monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = trio.testing.memory_stream_pair()
    monkeypatch.setattr(_fastpath, "ENABLED", False)
    assert Http2Connection(a, client_side=True, max_message_size=1).fast_paths is False


async def test_plain_tcp_is_written_directly_only_on_the_fast_paths(io_paths: bool) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    conn = Http2Connection(client, client_side=True, max_message_size=1)
    assert conn.fast_paths is io_paths
    assert (conn._io is not None) is io_paths
    await client.aclose()
    await listeners[0].aclose()
