"""The standard gRPC health service (``grpc.health.v1.Health``) on agentwire's transport.

:class:`HealthTable` is the sans-IO core: each known service's status, and the
server's shutdown. :class:`HealthService` serves it as ``Check`` and ``Watch``
through :func:`agentwire._transport.serve_grpc` (``methods()`` is a method
table to merge with the server's others).

Invariants (``tests/observability/test_health_stateful.py`` checks them after
every step):

H1  The server as a whole (service ``""``) is always known.
H2  Once shutdown has begun every known service is NOT_SERVING, and stays so:
    a later ``set`` records nothing (a server never comes back from shutdown).
H3  ``version`` grows by exactly one on every change of a status (and on the
    start of shutdown) and never otherwise, so a watcher that saw ``version``
    *v* has missed a change iff ``version > v``.
H4  Statuses are SERVING or NOT_SERVING; UNKNOWN and SERVICE_UNKNOWN are
    answers (a service not in the table), never stored.

Protocol (as grpc's own servers answer):

* ``Check`` of a known service answers its status; of an unknown one fails
  with NOT_FOUND.
* ``Watch`` answers the status at once (SERVICE_UNKNOWN for an unknown
  service, without failing the call), then once per change. A watcher that
  reads slowly gets the latest status, not every intermediate one. Once
  shutdown has begun a watcher gets NOT_SERVING and its call ends with
  UNAVAILABLE, so that watchers never hold a shutdown up.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping

import trio
from google.protobuf.message import DecodeError
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._proto import health_pb2
from .._transport import Method, ServerStream, bidi, unary
from .._wire import SERVICE_PREFIX

__all__ = [
    "AGENT_RPC_SERVICE",
    "HEALTH_SERVICE_PREFIX",
    "SERVER",
    "HealthService",
    "HealthStatus",
    "HealthTable",
]

logger = logging.getLogger("agentwire.health")

HEALTH_SERVICE_PREFIX = "/grpc.health.v1.Health/"
SERVER = ""
"""The service name that stands for the server as a whole."""
AGENT_RPC_SERVICE = SERVICE_PREFIX.strip("/")
"""``agents.AgentRpc``: the gateway's service, known to its health table."""


class HealthStatus(enum.IntEnum):
    """``HealthCheckResponse.ServingStatus``: the same numbers on the wire."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3


_STORED = (HealthStatus.SERVING, HealthStatus.NOT_SERVING)


class HealthTable:
    """Which services are serving (sans-IO; see the invariants at the top)."""

    def __init__(self, services: Mapping[str, HealthStatus] | None = None) -> None:
        self._statuses: dict[str, HealthStatus] = {SERVER: HealthStatus.SERVING}
        self.version = 0
        self.shutting_down = False
        for service, status in (services or {}).items():
            self.set(service, status)
        self.version = 0

    def status(self, service: str) -> HealthStatus | None:
        """The status of *service*, ``None`` if it is not known."""
        return self._statuses.get(service)

    def services(self) -> dict[str, HealthStatus]:
        return dict(self._statuses)

    def set(self, service: str, status: HealthStatus) -> bool:
        """Record *status* for *service*; ``True`` if that changed anything."""
        if status not in _STORED:
            raise ValueError(f"a service is SERVING or NOT_SERVING, not {status.name}")
        if self.shutting_down:
            status = HealthStatus.NOT_SERVING
        if self._statuses.get(service) is status:
            return False
        self._statuses[service] = status
        self.version += 1
        return True

    def begin_shutdown(self) -> bool:
        """Every service NOT_SERVING from now on; ``True`` the first time."""
        if self.shutting_down:
            return False
        self.shutting_down = True
        for service in self._statuses:
            self._statuses[service] = HealthStatus.NOT_SERVING
        self.version += 1
        return True

    def check_invariants(self) -> None:
        assert SERVER in self._statuses  # H1
        if self.shutting_down:  # H2
            assert all(s is HealthStatus.NOT_SERVING for s in self._statuses.values())
        assert all(s in _STORED for s in self._statuses.values())  # H4
        assert self.version >= 0


_RESPONSES = {
    status: health_pb2.HealthCheckResponse(status=status.name).SerializeToString()
    for status in HealthStatus
}


def _service_of(data: bytes) -> str:
    try:
        return health_pb2.HealthCheckRequest.FromString(data).service
    except DecodeError as exc:
        raise GRPCError(
            Status.INVALID_ARGUMENT, f"malformed grpc.health.v1.HealthCheckRequest ({exc})"
        ) from None


class HealthService:
    """``grpc.health.v1.Health`` over a :class:`HealthTable`.

    ``set_status`` and ``begin_shutdown`` are synchronous and wake watchers.
    """

    def __init__(self, table: HealthTable | None = None) -> None:
        self.table = table if table is not None else HealthTable()
        self._changed = trio.Event()

    def methods(self) -> dict[str, Method]:
        return {
            HEALTH_SERVICE_PREFIX + "Check": unary(self.check),
            HEALTH_SERVICE_PREFIX + "Watch": bidi(self.watch),
        }

    def set_status(self, service: str, status: HealthStatus) -> None:
        if self.table.set(service, status):
            logger.debug("health of %r: %s", service, status.name)
            self._wake()

    def begin_shutdown(self) -> None:
        """Every service NOT_SERVING; watchers get that and their calls end."""
        if self.table.begin_shutdown():
            logger.debug("health: shutting down, every service NOT_SERVING")
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def check(self, data: bytes, stream: ServerStream) -> bytes:
        service = _service_of(data)
        status = self.table.status(service)
        if status is None:
            raise GRPCError(Status.NOT_FOUND, f"unknown service {service!r}")
        return _RESPONSES[status]

    async def watch(self, stream: ServerStream) -> None:
        data = await stream.receive()
        if data is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "Watch needs a HealthCheckRequest")
        service = _service_of(data)
        sent: HealthStatus | None = None
        while True:
            changed = self._changed
            status = self.table.status(service) or HealthStatus.SERVICE_UNKNOWN
            if status is not sent:
                await stream.send(_RESPONSES[status])
                sent = status
                continue  # it may have changed while the client was slow to read
            if self.table.shutting_down:
                raise GRPCError(Status.UNAVAILABLE, "the server is shutting down")
            await changed.wait()
