"""A gateway (with CloudEvents over HTTP) and a worker serving the greeter agent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentwire import Gateway, WorkerRuntime, open_gateway, open_worker
from tests.operator.agents import setup


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with open_gateway("127.0.0.1:0", startup_grace=0, http_address="127.0.0.1:0") as gw:
        yield gw


@pytest.fixture
async def greeter(gateway: Gateway) -> AsyncIterator[WorkerRuntime]:
    async with open_worker(gateway.address) as runtime:
        await setup(runtime)
        yield runtime
