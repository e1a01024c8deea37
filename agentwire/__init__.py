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
from ._serialization import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    JsonSerializer,
    MessageSerializer,
    ProtobufSerializer,
    PydanticJsonSerializer,
    SerializationRegistry,
    UnknownPayload,
    serializers_for_type,
    try_get_known_serializers_for_type,
)
from ._subscriptions import (
    DefaultSubscription,
    Subscription,
    SubscriptionTable,
    TypePrefixSubscription,
    TypeSubscription,
)

__version__ = "0.1.0"

__all__ = [
    "JSON_DATA_CONTENT_TYPE",
    "PROTOBUF_DATA_CONTENT_TYPE",
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
    "JsonSerializer",
    "MessageDroppedError",
    "MessageSerializer",
    "ProtobufSerializer",
    "PydanticJsonSerializer",
    "RemoteError",
    "RuntimeClosedError",
    "SerializationError",
    "SerializationRegistry",
    "Subscription",
    "SubscriptionTable",
    "TopicId",
    "TypePrefixSubscription",
    "TypeSubscription",
    "UndeliverableError",
    "UnknownPayload",
    "UnknownSubscriptionError",
    "__version__",
    "serializers_for_type",
    "try_get_known_serializers_for_type",
]
