"""Pytest fixtures for code built on agentwire (re-exported by ``agentwire.testing``).

Use them from a ``conftest.py``::

    from agentwire.testing import runtime  # noqa: F401  (the fixture)

    async def test_greeter(runtime):
        await Greeter.register(runtime, "greeter", Greeter)
        assert await runtime.send_message(Greet("x"), AgentId("greeter", "k")) == ...

The fixtures are trio fixtures: they need pytest-trio (``trio_mode = true``
or ``@pytest.mark.trio``). pytest is imported only when they are defined, so
``import agentwire.testing`` works without it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._runtime._core import Runtime
from ._runtime._local import open_runtime

__all__ = ["runtime", "strict_runtime"]


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    """An in-process runtime, open for the test; closed (at once) afterwards."""
    async with open_runtime() as opened:
        yield opened


@pytest.fixture
async def strict_runtime() -> AsyncIterator[Runtime]:
    """Like ``runtime``, but publish-handler exceptions are not ignored: the test
    fails with the first one (at ``stop_when_idle()``/``wait_idle()`` or teardown)."""
    async with open_runtime(ignore_unhandled_exceptions=False) as opened:
        yield opened
