"""The service-nursery policy every ``open_*`` relies on."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from agentwire._nursery import open_service_nursery, open_unwrapping_nursery


async def test_cancelling_the_services_does_not_cancel_the_body() -> None:
    stopped = trio.Event()

    async def service() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stopped.set()

    after_stop = False
    async with open_service_nursery() as services:
        services.start_soon(service)
        await trio.testing.wait_all_tasks_blocked()
        services.cancel_scope.cancel()
        await stopped.wait()
        await trio.lowlevel.checkpoint()  # a checkpoint after the stop must not raise Cancelled
        after_stop = True
    assert after_stop


async def test_leaving_the_block_ends_the_services() -> None:
    ended = trio.Event()

    async def service() -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.set()

    async with open_service_nursery() as services:
        services.start_soon(service)
        await trio.testing.wait_all_tasks_blocked()
    assert ended.is_set()


async def test_a_body_exception_comes_out_bare() -> None:
    async def body() -> None:
        async with open_service_nursery() as services:
            services.start_soon(trio.sleep_forever)
            raise KeyError("body")

    with pytest.raises(KeyError):
        await body()


async def test_a_service_crash_cancels_the_body_and_comes_out_bare() -> None:
    body_cancelled = False

    async def crash() -> None:
        raise ValueError("service")

    async def body() -> None:
        nonlocal body_cancelled
        async with open_service_nursery() as services:
            services.start_soon(crash)
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                body_cancelled = True
                raise

    with pytest.raises(ValueError, match="service"):
        await body()
    assert body_cancelled


async def test_a_group_raised_by_the_body_stays_a_group() -> None:
    async def body() -> None:
        async with open_service_nursery():
            raise ExceptionGroup("mine", [KeyError(1)])

    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert info.value.message == "mine"


async def test_two_failures_come_out_as_a_group() -> None:
    async def crash(n: int) -> None:
        raise ValueError(n)

    async def body() -> None:
        async with open_unwrapping_nursery() as nursery:
            nursery.start_soon(crash, 1)
            nursery.start_soon(crash, 2)

    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert sorted(e.args[0] for e in info.value.exceptions) == [1, 2]
