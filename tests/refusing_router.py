"""An in-process runtime whose router refuses what the test tells it to (a gateway saying no)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from agentwire import Runtime, Subscription
from agentwire._runtime._core import open_core
from agentwire._runtime._local import LocalRouter


class RefusingRouter(LocalRouter):
    """The loopback router; ``refuse_add``/``refuse_remove`` return the error to raise, or None."""

    def __init__(self, core: Runtime) -> None:
        super().__init__(core)
        self.refuse_add: Callable[[Subscription], Exception | None] = lambda _sub: None
        self.refuse_remove: Callable[[str], Exception | None] = lambda _id: None

    async def add_subscription(self, subscription: Subscription) -> None:
        error = self.refuse_add(subscription)
        if error is not None:
            raise error

    async def remove_subscription(self, subscription_id: str) -> None:
        error = self.refuse_remove(subscription_id)
        if error is not None:
            raise error


@asynccontextmanager
async def open_refusing_runtime() -> AsyncIterator[tuple[Runtime, RefusingRouter]]:
    routers: list[RefusingRouter] = []

    def make_router(core: Runtime) -> RefusingRouter:
        routers.append(RefusingRouter(core))
        return routers[0]

    async with open_core(lambda services: Runtime(services, make_router)) as runtime:
        yield runtime, routers[0]
