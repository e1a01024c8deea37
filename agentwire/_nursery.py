"""The one shape every ``open_*`` of agentwire has: a body with background tasks beside it.

``async with open_service_nursery() as services:`` yields a nursery for the
object's background tasks (readers, pumps, mailboxes, timers). The policy,
written once here and relied on by every ``open_*``:

1. **Stopping never cancels the body.** The service nursery runs in a task of
   its own, under a cancel scope of its own: ``services.cancel_scope.cancel()``
   (what a ``stop()`` / ``stop_when_idle()`` does) ends the background tasks
   and nothing else. The code in the caller's ``async with`` block keeps
   running and sees no ``Cancelled``.
2. **Leaving the block ends the services.** When the body finishes, normally or
   not, the service nursery is cancelled and awaited, so no background task
   outlives the block. (An object that wants a graceful shutdown does it in
   its own ``finally`` before this exit.)
3. **A crash is never hidden.** If a background task raises, the body is
   cancelled (structured concurrency has no other honest choice) and the
   exception propagates out of the ``async with``.
4. **A lone exception comes out bare.** Exactly one exception (the body's own,
   or one background failure) is raised as itself, not inside the
   ``ExceptionGroup`` trio's nurseries would wrap it in; several come out as a
   group. An exception group the body raised itself stays a group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["open_service_nursery", "open_unwrapping_nursery"]


@asynccontextmanager
async def open_unwrapping_nursery() -> AsyncIterator[trio.Nursery]:
    """A plain nursery whose lone exception comes out bare (rule 4 above)."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _run_services(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    async with open_unwrapping_nursery() as services:
        task_status.started(services)
        # Holds the nursery open until its cancel scope is cancelled: by a
        # stop, or by the exit of the block (rule 2).
        await trio.sleep_forever()


@asynccontextmanager
async def open_service_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for background tasks that never cancels the body on a stop (see above)."""
    async with open_unwrapping_nursery() as outer:
        services: trio.Nursery = await outer.start(_run_services)
        try:
            yield services
        finally:
            services.cancel_scope.cancel()
