from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetAgentStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAgentStatusResponse(_message.Message):
    __slots__ = ("agent_id", "name", "last_reported_round", "activity", "last_accuracy", "bytes_sent")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORTED_ROUND_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    LAST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    name: str
    last_reported_round: int
    activity: str
    last_accuracy: float
    bytes_sent: int
    def __init__(self, agent_id: _Optional[str] = ..., name: _Optional[str] = ..., last_reported_round: _Optional[int] = ..., activity: _Optional[str] = ..., last_accuracy: _Optional[float] = ..., bytes_sent: _Optional[int] = ...) -> None: ...

class GetAuditLogRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("timestamp_unix_ms", "rpc", "target", "round", "bytes", "field_names")
    TIMESTAMP_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FIELD_NAMES_FIELD_NUMBER: _ClassVar[int]
    timestamp_unix_ms: int
    rpc: str
    target: str
    round: int
    bytes: int
    field_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, timestamp_unix_ms: _Optional[int] = ..., rpc: _Optional[str] = ..., target: _Optional[str] = ..., round: _Optional[int] = ..., bytes: _Optional[int] = ..., field_names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetAuditLogResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ...) -> None: ...
