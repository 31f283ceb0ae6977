from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]

class RoundPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_PHASE_UNSPECIFIED: _ClassVar[RoundPhase]
    ROUND_PHASE_OPEN: _ClassVar[RoundPhase]
    ROUND_PHASE_ALLOCATED: _ClassVar[RoundPhase]
    ROUND_PHASE_TRAINING: _ClassVar[RoundPhase]
    ROUND_PHASE_REPORTED: _ClassVar[RoundPhase]
    ROUND_PHASE_CLOSED: _ClassVar[RoundPhase]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
ROUND_PHASE_UNSPECIFIED: RoundPhase
ROUND_PHASE_OPEN: RoundPhase
ROUND_PHASE_ALLOCATED: RoundPhase
ROUND_PHASE_TRAINING: RoundPhase
ROUND_PHASE_REPORTED: RoundPhase
ROUND_PHASE_CLOSED: RoundPhase

class ReasoningPath(_message.Message):
    __slots__ = ("text", "token_count", "joint_logprob", "normalized_logprob", "finish_reason", "correct")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    JOINT_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_count: int
    joint_logprob: float
    normalized_logprob: float
    finish_reason: FinishReason
    correct: bool
    def __init__(self, text: _Optional[str] = ..., token_count: _Optional[int] = ..., joint_logprob: _Optional[float] = ..., normalized_logprob: _Optional[float] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., correct: _Optional[bool] = ...) -> None: ...
