"""What configures a gateway's part in a cluster and what it counts; the
client-id its peer connections carry. No coredis here: importing this costs
nothing for a gateway without a cluster."""

from __future__ import annotations

import attrs

from .._gateway._config import _positive

__all__ = ["PEER_PREFIX", "ClusterConfig", "ClusterStatistics"]

PEER_PREFIX = "agentwire-peer:"
"""The client-id prefix of the peer connections (one per other gateway)."""


@attrs.frozen(slots=True)
class ClusterConfig:
    """``url``: ``redis://HOST:PORT/DB``. ``lease``: seconds a gateway stays a
    member without renewing (the others fail its requests in flight once it
    is over); ``heartbeat``: seconds between renewals (well under ``lease``).
    ``prefix``: of every Redis key (several clusters can share one Redis)."""

    url: str
    lease: float = attrs.field(default=5.0, validator=_positive)
    heartbeat: float = attrs.field(default=1.0, validator=_positive)
    prefix: str = "agentwire:"
    batch_messages: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    batch_bytes: int = attrs.field(default=1 << 20, validator=attrs.validators.ge(1))

    def __attrs_post_init__(self) -> None:
        if not self.heartbeat < self.lease:
            raise ValueError(
                f"the heartbeat ({self.heartbeat:g} s) must be shorter than the lease "
                f"({self.lease:g} s)"
            )


@attrs.frozen(slots=True)
class ClusterStatistics:
    gateway_id: str
    joined: bool  # a session with Redis is up
    peers: int  # other gateways connected
    batches_sent: int
    messages_sent: int
    batches_received: int
    messages_received: int
    messages_lost: (
        int  # could not be delivered to or from a peer (events dropped, requests answered)
    )
    joins: int  # sessions begun (1 + re-joins)
