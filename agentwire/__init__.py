"""agentwire: a trio-native agent runtime speaking AutoGen's Agent Worker Protocol.

The public API is re-exported here; everything else lives in private modules. The names are
loaded on first use (PEP 562), so an in-process program never imports the gateway, the
transport, h2, grpclib or protobuf.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        InvalidRequestError,
        InvalidSubscriptionError,
        MessageDroppedError,
        MessageTooLargeError,
        OverloadedError,
        RemoteError,
        RequestCancelledError,
        RpcTimeoutError,
        RuntimeClosedError,
        SerializationError,
        UndeliverableError,
        UnknownSubscriptionError,
    )
    from ._gateway import Gateway, GatewayOptions, GatewayStatistics, open_gateway, serve_gateway
    from ._ids import AgentId, AgentType, DefaultTopicId, TopicId
    from ._observability._metrics import MetricsServer, serve_gateway_metrics
    from ._observability._trace_context import TraceContext, current_trace_context
    from ._retry import RetryPolicy
    from ._runtime._core import Router, Runtime, RuntimeStatistics
    from ._runtime._interventions import (
        DefaultInterventionHandler,
        DropMessage,
        InterventionHandler,
    )
    from ._runtime._local import open_runtime
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
    from ._worker import (
        ConnectionState,
        WorkerRuntime,
        WorkerRuntimeStatistics,
        WorkerStatistics,
        open_worker,
    )

__version__ = "0.1.0"

#: Where each public name lives: one line per name.
_EXPORTS: dict[str, str] = {
    "Agent": "._agents",
    "AgentInstantiationContext": "._agents",
    "AgentMetadata": "._agents",
    "AgentRuntime": "._agents",
    "BaseAgent": "._agents",
    "Cancellation": "._agents",
    "ClosureAgent": "._agents",
    "ClosureContext": "._agents",
    "MessageContext": "._agents",
    "RoutedAgent": "._agents",
    "default_subscription": "._agents",
    "event": "._agents",
    "message_handler": "._agents",
    "rpc": "._agents",
    "type_subscription": "._agents",
    "AgentwireError": "._errors",
    "CantHandleError": "._errors",
    "ConnectionLostError": "._errors",
    "DuplicateSubscriptionError": "._errors",
    "GatewayRejectedError": "._errors",
    "InvalidCloudEventError": "._errors",
    "InvalidIdentifierError": "._errors",
    "InvalidRequestError": "._errors",
    "InvalidSubscriptionError": "._errors",
    "MessageDroppedError": "._errors",
    "MessageTooLargeError": "._errors",
    "OverloadedError": "._errors",
    "RpcTimeoutError": "._errors",
    "RemoteError": "._errors",
    "RequestCancelledError": "._errors",
    "RuntimeClosedError": "._errors",
    "SerializationError": "._errors",
    "UndeliverableError": "._errors",
    "UnknownSubscriptionError": "._errors",
    "Gateway": "._gateway",
    "GatewayStatistics": "._gateway",
    "open_gateway": "._gateway",
    "GatewayOptions": "._gateway",
    "serve_gateway": "._gateway",
    "AgentId": "._ids",
    "AgentType": "._ids",
    "DefaultTopicId": "._ids",
    "TopicId": "._ids",
    "MetricsServer": "._observability._metrics",
    "serve_gateway_metrics": "._observability._metrics",
    "TraceContext": "._observability._trace_context",
    "current_trace_context": "._observability._trace_context",
    "RetryPolicy": "._retry",
    "Router": "._runtime._core",
    "Runtime": "._runtime._core",
    "RuntimeStatistics": "._runtime._core",
    "DefaultInterventionHandler": "._runtime._interventions",
    "DropMessage": "._runtime._interventions",
    "InterventionHandler": "._runtime._interventions",
    "open_runtime": "._runtime._local",
    "ConnectionState": "._worker",
    "WorkerRuntime": "._worker",
    "WorkerRuntimeStatistics": "._worker",
    "WorkerStatistics": "._worker",
    "open_worker": "._worker",
    "JSON_DATA_CONTENT_TYPE": "._serialization",
    "PROTOBUF_DATA_CONTENT_TYPE": "._serialization",
    "JsonSerializer": "._serialization",
    "MessageSerializer": "._serialization",
    "ProtobufSerializer": "._serialization",
    "PydanticJsonSerializer": "._serialization",
    "SerializationRegistry": "._serialization",
    "UnknownPayload": "._serialization",
    "serializers_for_type": "._serialization",
    "try_get_known_serializers_for_type": "._serialization",
    "DefaultSubscription": "._subscriptions",
    "Subscription": "._subscriptions",
    "SubscriptionTable": "._subscriptions",
    "TypePrefixSubscription": "._subscriptions",
    "TypeSubscription": "._subscriptions",
}


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
    "GatewayOptions",
    "GatewayRejectedError",
    "GatewayStatistics",
    "InterventionHandler",
    "InvalidCloudEventError",
    "InvalidIdentifierError",
    "InvalidRequestError",
    "InvalidSubscriptionError",
    "JsonSerializer",
    "MessageContext",
    "MessageDroppedError",
    "MessageSerializer",
    "MessageTooLargeError",
    "MetricsServer",
    "OverloadedError",
    "ProtobufSerializer",
    "PydanticJsonSerializer",
    "RemoteError",
    "RequestCancelledError",
    "RetryPolicy",
    "RoutedAgent",
    "Router",
    "RpcTimeoutError",
    "Runtime",
    "RuntimeClosedError",
    "RuntimeStatistics",
    "SerializationError",
    "SerializationRegistry",
    "Subscription",
    "SubscriptionTable",
    "TopicId",
    "TraceContext",
    "TypePrefixSubscription",
    "TypeSubscription",
    "UndeliverableError",
    "UnknownPayload",
    "UnknownSubscriptionError",
    "WorkerRuntime",
    "WorkerRuntimeStatistics",
    "WorkerStatistics",
    "__version__",
    "current_trace_context",
    "default_subscription",
    "event",
    "message_handler",
    "open_gateway",
    "open_runtime",
    "open_worker",
    "rpc",
    "serializers_for_type",
    "serve_gateway",
    "serve_gateway_metrics",
    "try_get_known_serializers_for_type",
    "type_subscription",
]


if not TYPE_CHECKING:  # hidden from type checkers, so that a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
