from lada.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SamplingParams(_message.Message):
    __slots__ = ("n", "temperature", "top_p", "max_tokens", "seed")
    N_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    def __init__(self, n: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateReasoningPathsRequest(_message.Message):
    __slots__ = ("sample_ids", "prompts", "sampling", "model_version")
    SAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    sample_ids: _containers.RepeatedScalarFieldContainer[str]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    sampling: SamplingParams
    model_version: str
    def __init__(self, sample_ids: _Optional[_Iterable[str]] = ..., prompts: _Optional[_Iterable[str]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., model_version: _Optional[str] = ...) -> None: ...

class SamplePaths(_message.Message):
    __slots__ = ("sample_id", "prompt", "paths", "cache_hit")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    prompt: str
    paths: _containers.RepeatedCompositeFieldContainer[_common_pb2.ReasoningPath]
    cache_hit: bool
    def __init__(self, sample_id: _Optional[str] = ..., prompt: _Optional[str] = ..., paths: _Optional[_Iterable[_Union[_common_pb2.ReasoningPath, _Mapping]]] = ..., cache_hit: _Optional[bool] = ...) -> None: ...

class GenerateReasoningPathsResponse(_message.Message):
    __slots__ = ("results", "model_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SamplePaths]
    model_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[SamplePaths, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class ScorePathsRequest(_message.Message):
    __slots__ = ("prompt", "completions", "model_version", "return_token_logprobs", "sample_id")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKEN_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    completions: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    return_token_logprobs: bool
    sample_id: str
    def __init__(self, prompt: _Optional[str] = ..., completions: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., return_token_logprobs: _Optional[bool] = ..., sample_id: _Optional[str] = ...) -> None: ...

class PathScore(_message.Message):
    __slots__ = ("joint_logprob", "normalized_logprob", "token_count", "token_logprobs", "correct")
    JOINT_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    joint_logprob: float
    normalized_logprob: float
    token_count: int
    token_logprobs: _containers.RepeatedScalarFieldContainer[float]
    correct: bool
    def __init__(self, joint_logprob: _Optional[float] = ..., normalized_logprob: _Optional[float] = ..., token_count: _Optional[int] = ..., token_logprobs: _Optional[_Iterable[float]] = ..., correct: _Optional[bool] = ...) -> None: ...

class ScorePathsResponse(_message.Message):
    __slots__ = ("scores", "model_version")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[PathScore]
    model_version: str
    def __init__(self, scores: _Optional[_Iterable[_Union[PathScore, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("sample_id", "path", "agent_id")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    path: str
    agent_id: str
    def __init__(self, sample_id: _Optional[str] = ..., path: _Optional[str] = ..., agent_id: _Optional[str] = ...) -> None: ...

class AbsorbOptions(_message.Message):
    __slots__ = ("epochs", "learning_rate", "lora_rank")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    learning_rate: float
    lora_rank: int
    def __init__(self, epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., lora_rank: _Optional[int] = ...) -> None: ...

class AbsorbRequest(_message.Message):
    __slots__ = ("contributions", "options")
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    contributions: _containers.RepeatedCompositeFieldContainer[Contribution]
    options: AbsorbOptions
    def __init__(self, contributions: _Optional[_Iterable[_Union[Contribution, _Mapping]]] = ..., options: _Optional[_Union[AbsorbOptions, _Mapping]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("version", "parent", "samples_absorbed", "created_unix_ms", "serving", "final_loss", "absorb_mode", "absorb_route")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_ABSORBED_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    ABSORB_MODE_FIELD_NUMBER: _ClassVar[int]
    ABSORB_ROUTE_FIELD_NUMBER: _ClassVar[int]
    version: str
    parent: str
    samples_absorbed: int
    created_unix_ms: int
    serving: bool
    final_loss: float
    absorb_mode: str
    absorb_route: str
    def __init__(self, version: _Optional[str] = ..., parent: _Optional[str] = ..., samples_absorbed: _Optional[int] = ..., created_unix_ms: _Optional[int] = ..., serving: _Optional[bool] = ..., final_loss: _Optional[float] = ..., absorb_mode: _Optional[str] = ..., absorb_route: _Optional[str] = ...) -> None: ...

class AbsorbResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: ModelVersion
    def __init__(self, version: _Optional[_Union[ModelVersion, _Mapping]] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions", "serving_version")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    serving_version: str
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., serving_version: _Optional[str] = ...) -> None: ...
