"""Guards that keep every test able to fail.

Two ways a test can pass without checking anything, each turned into a failure:

* **A leaked ``trio.Cancelled``.** When code cancels a scope around the test's
  body (a runtime cancelling the block it runs in, say), the ``Cancelled``
  unwinds the test past its remaining assertions, and pytest-trio treats a
  test that ends in ``Cancelled`` as cancelled by its fixtures, not as a
  failure. The guard checks, when a ``Cancelled`` leaves a test function,
  that the test's own surroundings are being cancelled (pytest-trio tearing a
  crashed test down); if not, the ``Cancelled`` leaked and the test fails.
* **An assertion swallowed by agentwire.** An ``assert`` inside a callback or
  handler that agentwire runs and whose exception it only logs (a pending-map
  ``on_abandon`` hook, a published message's handler) fails nothing. The guard
  collects ``AssertionError``s that ``agentwire.*`` loggers record with their
  traceback during a test and fails the test with them.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import trio

from tests.redis_server import _redis_session, redis_process, redis_url  # noqa: F401


def _guard_against_leaked_cancellation(
    test: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(test)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await test(*args, **kwargs)
        except trio.Cancelled:
            if trio.current_effective_deadline() != -math.inf:
                pytest.fail(
                    "the test's body was cancelled by a cancel scope that does not enclose "
                    "the test (a leaked trio.Cancelled): the code after it never ran",
                    pytrace=True,
                )
            raise

    return guarded


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    function = getattr(item, "obj", None)
    wrap = (
        isinstance(item, pytest.Function)
        and function is not None
        and not hasattr(function, "hypothesis")
        and inspect.iscoroutinefunction(function)
    )
    if wrap:
        assert isinstance(item, pytest.Function)
        item.obj = _guard_against_leaked_cancellation(function)
    try:
        yield
    finally:
        if wrap:
            assert isinstance(item, pytest.Function)
            item.obj = function


class _SwallowedAssertions(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and isinstance(record.exc_info[1], AssertionError):
            self.records.append(record)


@pytest.fixture(autouse=True)
def _fail_on_assertions_swallowed_by_agentwire() -> Iterator[None]:
    handler = _SwallowedAssertions()
    logger = logging.getLogger("agentwire")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.records:
        details = "\n".join(
            f"{record.name}: {record.getMessage()}: {record.exc_info[1]!r}"
            for record in handler.records
            if record.exc_info
        )
        pytest.fail(f"assertions failed where agentwire only logged them:\n{details}")
