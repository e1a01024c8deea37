"""agentwire: a trio-native agent runtime speaking AutoGen's Agent Worker Protocol.

The public API is re-exported here; everything else lives in private modules.
"""

from __future__ import annotations

from ._errors import (
    AgentwireError,
    CantHandleError,
    ConnectionLostError,
    DuplicateSubscriptionError,
    InvalidCloudEventError,
    InvalidIdentifierError,
    InvalidSubscriptionError,
    MessageDroppedError,
    RemoteError,
    RuntimeClosedError,
    SerializationError,
    UndeliverableError,
    UnknownSubscriptionError,
)
from ._ids import AgentId, AgentType, DefaultTopicId, TopicId
from ._subscriptions import (
    DefaultSubscription,
    Subscription,
    SubscriptionTable,
    TypePrefixSubscription,
    TypeSubscription,
)

__version__ = "0.1.0"

__all__ = [
    "AgentId",
    "AgentType",
    "AgentwireError",
    "CantHandleError",
    "ConnectionLostError",
    "DefaultSubscription",
    "DefaultTopicId",
    "DuplicateSubscriptionError",
    "InvalidCloudEventError",
    "InvalidIdentifierError",
    "InvalidSubscriptionError",
    "MessageDroppedError",
    "RemoteError",
    "RuntimeClosedError",
    "SerializationError",
    "Subscription",
    "SubscriptionTable",
    "TopicId",
    "TypePrefixSubscription",
    "TypeSubscription",
    "UndeliverableError",
    "UnknownSubscriptionError",
    "__version__",
]
