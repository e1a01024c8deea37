"""agentwire: a trio-native agent runtime speaking AutoGen's Agent Worker Protocol.

The public API is re-exported here; everything else lives in private modules.
"""

from __future__ import annotations

from ._errors import (
    AgentwireError,
    CantHandleError,
    ConnectionLostError,
    InvalidIdentifierError,
    MessageDroppedError,
    RemoteError,
    RuntimeClosedError,
    SerializationError,
    UndeliverableError,
)

__version__ = "0.1.0"

__all__ = [
    "AgentwireError",
    "CantHandleError",
    "ConnectionLostError",
    "InvalidIdentifierError",
    "MessageDroppedError",
    "RemoteError",
    "RuntimeClosedError",
    "SerializationError",
    "UndeliverableError",
    "__version__",
]
