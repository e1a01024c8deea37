"""The gRPC worker: ``open_worker(address)``, the runtime core on a gateway link.

Layers, each below the one before:

* ``_runtime``: :func:`open_worker` and :class:`WorkerRuntime` (the core's API
  plus the link's state);
* ``_router``: :class:`WorkerRouter`, the core's router and the sessions'
  handler (payloads, local short-circuit, echoes, remote state);
* ``_link``: :class:`WorkerLink`, one session after the other, with reconnect
  and replay;
* ``_session``: :class:`WorkerSession`, one ``client-id``'s streams and calls,
  with ``_control`` (the control channel) and ``_outbox`` (the two lanes it
  writes from);
* ``_protocol``: what a session needs from a transport, request ids, paths;
  ``_kinds``: error answers and the exceptions they raise.
"""

from ._link import ConnectionState
from ._router import WorkerRouter, WorkerStatistics
from ._runtime import WorkerRuntime, WorkerRuntimeStatistics, open_worker

__all__ = [
    "ConnectionState",
    "WorkerRouter",
    "WorkerRuntime",
    "WorkerRuntimeStatistics",
    "WorkerStatistics",
    "open_worker",
]
