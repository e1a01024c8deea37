"""agentwire: a trio-native agent runtime speaking AutoGen's Agent Worker Protocol.

The public API is re-exported here; everything else lives in private modules.
"""

from __future__ import annotations

from ._agents import (
    Agent,
    AgentInstantiationContext,
    AgentMetadata,
    AgentRuntime,
    BaseAgent,
    Cancellation,
    ClosureAgent,
    ClosureContext,
    MessageContext,
    RoutedAgent,
    default_subscription,
    event,
    message_handler,
    rpc,
    type_subscription,
)
from ._errors import (
    AgentwireError,
    CantHandleError,
    ConnectionLostError,
    DuplicateSubscriptionError,
    GatewayRejectedError,
    InvalidCloudEventError,
    InvalidIdentifierError,
    InvalidSubscriptionError,
    MessageDroppedError,
    RemoteError,
    RequestCancelledError,
    RuntimeClosedError,
    SerializationError,
    UndeliverableError,
    UnknownSubscriptionError,
)
from ._gateway import Gateway, GatewayStatistics, open_gateway, serve_gateway
from ._ids import AgentId, AgentType, DefaultTopicId, TopicId
from ._retry import RetryPolicy
from ._runtime._core import Router, Runtime, RuntimeStatistics
from ._runtime._interventions import DefaultInterventionHandler, DropMessage, InterventionHandler
from ._runtime._local import open_runtime
from ._runtime._worker import ConnectionState, WorkerRuntime, WorkerStatistics, open_worker
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
    "Agent",
    "AgentId",
    "AgentInstantiationContext",
    "AgentMetadata",
    "AgentRuntime",
    "AgentType",
    "AgentwireError",
    "BaseAgent",
    "Cancellation",
    "CantHandleError",
    "ClosureAgent",
    "ClosureContext",
    "ConnectionLostError",
    "ConnectionState",
    "DefaultInterventionHandler",
    "DefaultSubscription",
    "DefaultTopicId",
    "DropMessage",
    "DuplicateSubscriptionError",
    "Gateway",
    "GatewayRejectedError",
    "GatewayStatistics",
    "InterventionHandler",
    "InvalidCloudEventError",
    "InvalidIdentifierError",
    "InvalidSubscriptionError",
    "JsonSerializer",
    "MessageContext",
    "MessageDroppedError",
    "MessageSerializer",
    "ProtobufSerializer",
    "PydanticJsonSerializer",
    "RemoteError",
    "RequestCancelledError",
    "RetryPolicy",
    "RoutedAgent",
    "Router",
    "Runtime",
    "RuntimeClosedError",
    "RuntimeStatistics",
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
    "WorkerRuntime",
    "WorkerStatistics",
    "__version__",
    "default_subscription",
    "event",
    "message_handler",
    "open_gateway",
    "open_runtime",
    "open_worker",
    "rpc",
    "serializers_for_type",
    "serve_gateway",
    "try_get_known_serializers_for_type",
    "type_subscription",
]
