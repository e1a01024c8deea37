from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StateSync(_message.Message):
    __slots__ = ("agent_id", "version", "state_delta", "affected_keys", "snapshot")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_DELTA_FIELD_NUMBER: _ClassVar[int]
    AFFECTED_KEYS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    version: int
    state_delta: str
    affected_keys: _containers.RepeatedScalarFieldContainer[str]
    snapshot: bool
    def __init__(self, agent_id: _Optional[str] = ..., version: _Optional[int] = ..., state_delta: _Optional[str] = ..., affected_keys: _Optional[_Iterable[str]] = ..., snapshot: bool = ...) -> None: ...

class StateSyncRequest(_message.Message):
    __slots__ = ("state_updates", "force_sync")
    STATE_UPDATES_FIELD_NUMBER: _ClassVar[int]
    FORCE_SYNC_FIELD_NUMBER: _ClassVar[int]
    state_updates: _containers.RepeatedCompositeFieldContainer[StateSync]
    force_sync: bool
    def __init__(self, state_updates: _Optional[_Iterable[_Union[StateSync, _Mapping]]] = ..., force_sync: bool = ...) -> None: ...

class StateSyncResponse(_message.Message):
    __slots__ = ("states", "error", "error_kind", "current_version")
    STATES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedCompositeFieldContainer[StateSync]
    error: str
    error_kind: str
    current_version: int
    def __init__(self, states: _Optional[_Iterable[_Union[StateSync, _Mapping]]] = ..., error: _Optional[str] = ..., error_kind: _Optional[str] = ..., current_version: _Optional[int] = ...) -> None: ...
