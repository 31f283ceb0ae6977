from lada.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATUS_UNSPECIFIED: _ClassVar[AgentStatus]
    AGENT_STATUS_ACTIVE: _ClassVar[AgentStatus]
    AGENT_STATUS_DEREGISTERED: _ClassVar[AgentStatus]
    AGENT_STATUS_REVOKED: _ClassVar[AgentStatus]

class AgentRoundState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_ROUND_STATE_UNSPECIFIED: _ClassVar[AgentRoundState]
    AGENT_ROUND_STATE_ALLOCATED: _ClassVar[AgentRoundState]
    AGENT_ROUND_STATE_TRAINING: _ClassVar[AgentRoundState]
    AGENT_ROUND_STATE_REPORTED: _ClassVar[AgentRoundState]
    AGENT_ROUND_STATE_LATE: _ClassVar[AgentRoundState]
    AGENT_ROUND_STATE_LOST: _ClassVar[AgentRoundState]

class InvitationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVITATION_STATE_UNSPECIFIED: _ClassVar[InvitationState]
    INVITATION_STATE_PENDING: _ClassVar[InvitationState]
    INVITATION_STATE_USED: _ClassVar[InvitationState]
    INVITATION_STATE_EXPIRED: _ClassVar[InvitationState]
    INVITATION_STATE_REVOKED: _ClassVar[InvitationState]
AGENT_STATUS_UNSPECIFIED: AgentStatus
AGENT_STATUS_ACTIVE: AgentStatus
AGENT_STATUS_DEREGISTERED: AgentStatus
AGENT_STATUS_REVOKED: AgentStatus
AGENT_ROUND_STATE_UNSPECIFIED: AgentRoundState
AGENT_ROUND_STATE_ALLOCATED: AgentRoundState
AGENT_ROUND_STATE_TRAINING: AgentRoundState
AGENT_ROUND_STATE_REPORTED: AgentRoundState
AGENT_ROUND_STATE_LATE: AgentRoundState
AGENT_ROUND_STATE_LOST: AgentRoundState
INVITATION_STATE_UNSPECIFIED: InvitationState
INVITATION_STATE_PENDING: InvitationState
INVITATION_STATE_USED: InvitationState
INVITATION_STATE_EXPIRED: InvitationState
INVITATION_STATE_REVOKED: InvitationState

class RegisterAgentRequest(_message.Message):
    __slots__ = ("name", "model_description", "tokenizer_name", "domain_tags", "capacity", "pool_fingerprint", "enrollment_secret")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_TAGS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    POOL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_description: str
    tokenizer_name: str
    domain_tags: _containers.RepeatedScalarFieldContainer[str]
    capacity: int
    pool_fingerprint: str
    enrollment_secret: str
    def __init__(self, name: _Optional[str] = ..., model_description: _Optional[str] = ..., tokenizer_name: _Optional[str] = ..., domain_tags: _Optional[_Iterable[str]] = ..., capacity: _Optional[int] = ..., pool_fingerprint: _Optional[str] = ..., enrollment_secret: _Optional[str] = ...) -> None: ...

class RegisterAgentResponse(_message.Message):
    __slots__ = ("agent_id", "token", "first_round", "resumed", "total_rounds")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FIRST_ROUND_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    token: str
    first_round: int
    resumed: bool
    total_rounds: int
    def __init__(self, agent_id: _Optional[str] = ..., token: _Optional[str] = ..., first_round: _Optional[int] = ..., resumed: _Optional[bool] = ..., total_rounds: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("current_round", "phase", "server_time_unix_ms")
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    current_round: int
    phase: _common_pb2.RoundPhase
    server_time_unix_ms: int
    def __init__(self, current_round: _Optional[int] = ..., phase: _Optional[_Union[_common_pb2.RoundPhase, str]] = ..., server_time_unix_ms: _Optional[int] = ...) -> None: ...

class DeregisterRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class DeregisterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAllocationRequest(_message.Message):
    __slots__ = ("agent_id", "round")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    round: int
    def __init__(self, agent_id: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class AllocatedSample(_message.Message):
    __slots__ = ("sample_id", "llm_model_version", "cluster", "scan_only")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    LLM_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SCAN_ONLY_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    llm_model_version: str
    cluster: int
    scan_only: bool
    def __init__(self, sample_id: _Optional[str] = ..., llm_model_version: _Optional[str] = ..., cluster: _Optional[int] = ..., scan_only: _Optional[bool] = ...) -> None: ...

class GetAllocationResponse(_message.Message):
    __slots__ = ("round", "samples", "deadline_unix_ms", "policy", "contribution_requests")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    round: int
    samples: _containers.RepeatedCompositeFieldContainer[AllocatedSample]
    deadline_unix_ms: int
    policy: str
    contribution_requests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round: _Optional[int] = ..., samples: _Optional[_Iterable[_Union[AllocatedSample, _Mapping]]] = ..., deadline_unix_ms: _Optional[int] = ..., policy: _Optional[str] = ..., contribution_requests: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchRoundsRequest(_message.Message):
    __slots__ = ("agent_id", "from_round", "phases")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ROUND_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    from_round: int
    phases: _containers.RepeatedScalarFieldContainer[_common_pb2.RoundPhase]
    def __init__(self, agent_id: _Optional[str] = ..., from_round: _Optional[int] = ..., phases: _Optional[_Iterable[_Union[_common_pb2.RoundPhase, str]]] = ...) -> None: ...

class RoundEvent(_message.Message):
    __slots__ = ("round", "phase", "timestamp_unix_ms", "total_rounds", "run_finished", "fetch_window_ms")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    RUN_FINISHED_FIELD_NUMBER: _ClassVar[int]
    FETCH_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    round: int
    phase: _common_pb2.RoundPhase
    timestamp_unix_ms: int
    total_rounds: int
    run_finished: bool
    fetch_window_ms: int
    def __init__(self, round: _Optional[int] = ..., phase: _Optional[_Union[_common_pb2.RoundPhase, str]] = ..., timestamp_unix_ms: _Optional[int] = ..., total_rounds: _Optional[int] = ..., run_finished: _Optional[bool] = ..., fetch_window_ms: _Optional[int] = ...) -> None: ...

class PathStats(_message.Message):
    __slots__ = ("llm_normalized_logprob", "correct", "slm_normalized_logprob_before", "slm_normalized_logprob_after")
    LLM_NORMALIZED_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    SLM_NORMALIZED_LOGPROB_BEFORE_FIELD_NUMBER: _ClassVar[int]
    SLM_NORMALIZED_LOGPROB_AFTER_FIELD_NUMBER: _ClassVar[int]
    llm_normalized_logprob: float
    correct: bool
    slm_normalized_logprob_before: float
    slm_normalized_logprob_after: float
    def __init__(self, llm_normalized_logprob: _Optional[float] = ..., correct: _Optional[bool] = ..., slm_normalized_logprob_before: _Optional[float] = ..., slm_normalized_logprob_after: _Optional[float] = ...) -> None: ...

class SampleStats(_message.Message):
    __slots__ = ("sample_id", "paths", "correct_before", "correct_after", "scan_only")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    CORRECT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    CORRECT_AFTER_FIELD_NUMBER: _ClassVar[int]
    SCAN_ONLY_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    paths: _containers.RepeatedCompositeFieldContainer[PathStats]
    correct_before: bool
    correct_after: bool
    scan_only: bool
    def __init__(self, sample_id: _Optional[str] = ..., paths: _Optional[_Iterable[_Union[PathStats, _Mapping]]] = ..., correct_before: _Optional[bool] = ..., correct_after: _Optional[bool] = ..., scan_only: _Optional[bool] = ...) -> None: ...

class ReportStatsRequest(_message.Message):
    __slots__ = ("agent_id", "round", "stats")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    round: int
    stats: _containers.RepeatedCompositeFieldContainer[SampleStats]
    def __init__(self, agent_id: _Optional[str] = ..., round: _Optional[int] = ..., stats: _Optional[_Iterable[_Union[SampleStats, _Mapping]]] = ...) -> None: ...

class ReportStatsResponse(_message.Message):
    __slots__ = ("accepted", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class ContributedPath(_message.Message):
    __slots__ = ("sample_id", "text")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    text: str
    def __init__(self, sample_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ContributePathsRequest(_message.Message):
    __slots__ = ("agent_id", "round", "paths")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    round: int
    paths: _containers.RepeatedCompositeFieldContainer[ContributedPath]
    def __init__(self, agent_id: _Optional[str] = ..., round: _Optional[int] = ..., paths: _Optional[_Iterable[_Union[ContributedPath, _Mapping]]] = ...) -> None: ...

class ContributePathsResponse(_message.Message):
    __slots__ = ("accepted", "rejected_incorrect", "rejected_unsound", "rejected_over_cap")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_INCORRECT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_UNSOUND_FIELD_NUMBER: _ClassVar[int]
    REJECTED_OVER_CAP_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected_incorrect: int
    rejected_unsound: int
    rejected_over_cap: int
    def __init__(self, accepted: _Optional[int] = ..., rejected_incorrect: _Optional[int] = ..., rejected_unsound: _Optional[int] = ..., rejected_over_cap: _Optional[int] = ...) -> None: ...

class ContributionCounts(_message.Message):
    __slots__ = ("accepted", "rejected_incorrect", "rejected_unsound", "rejected_over_cap")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_INCORRECT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_UNSOUND_FIELD_NUMBER: _ClassVar[int]
    REJECTED_OVER_CAP_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected_incorrect: int
    rejected_unsound: int
    rejected_over_cap: int
    def __init__(self, accepted: _Optional[int] = ..., rejected_incorrect: _Optional[int] = ..., rejected_unsound: _Optional[int] = ..., rejected_over_cap: _Optional[int] = ...) -> None: ...

class GetClusterModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClusterModelResponse(_message.Message):
    __slots__ = ("num_clusters", "vocabulary", "idf", "domains", "centroids", "feature_count", "cluster_pool_share", "domain_feature_weight", "difficulty_feature_weight")
    NUM_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    IDF_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    CENTROIDS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_POOL_SHARE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FEATURE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DIFFICULTY_FEATURE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    num_clusters: int
    vocabulary: _containers.RepeatedScalarFieldContainer[str]
    idf: _containers.RepeatedScalarFieldContainer[float]
    domains: _containers.RepeatedScalarFieldContainer[str]
    centroids: _containers.RepeatedScalarFieldContainer[float]
    feature_count: int
    cluster_pool_share: _containers.RepeatedScalarFieldContainer[float]
    domain_feature_weight: float
    difficulty_feature_weight: float
    def __init__(self, num_clusters: _Optional[int] = ..., vocabulary: _Optional[_Iterable[str]] = ..., idf: _Optional[_Iterable[float]] = ..., domains: _Optional[_Iterable[str]] = ..., centroids: _Optional[_Iterable[float]] = ..., feature_count: _Optional[int] = ..., cluster_pool_share: _Optional[_Iterable[float]] = ..., domain_feature_weight: _Optional[float] = ..., difficulty_feature_weight: _Optional[float] = ...) -> None: ...

class GetRoundStatusRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class AgentRoundStatus(_message.Message):
    __slots__ = ("agent_id", "name", "state", "allocated", "reported", "contribution_requests")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    name: str
    state: AgentRoundState
    allocated: int
    reported: int
    contribution_requests: int
    def __init__(self, agent_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[AgentRoundState, str]] = ..., allocated: _Optional[int] = ..., reported: _Optional[int] = ..., contribution_requests: _Optional[int] = ...) -> None: ...

class GetRoundStatusResponse(_message.Message):
    __slots__ = ("round", "phase", "deadline_unix_ms", "policy", "total_rounds", "agents", "pool_fingerprint", "pool_size", "contributions")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    POOL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    round: int
    phase: _common_pb2.RoundPhase
    deadline_unix_ms: int
    policy: str
    total_rounds: int
    agents: _containers.RepeatedCompositeFieldContainer[AgentRoundStatus]
    pool_fingerprint: str
    pool_size: int
    contributions: ContributionCounts
    def __init__(self, round: _Optional[int] = ..., phase: _Optional[_Union[_common_pb2.RoundPhase, str]] = ..., deadline_unix_ms: _Optional[int] = ..., policy: _Optional[str] = ..., total_rounds: _Optional[int] = ..., agents: _Optional[_Iterable[_Union[AgentRoundStatus, _Mapping]]] = ..., pool_fingerprint: _Optional[str] = ..., pool_size: _Optional[int] = ..., contributions: _Optional[_Union[ContributionCounts, _Mapping]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("agent_id", "name", "model_description", "tokenizer_name", "domain_tags", "capacity", "first_round", "last_heartbeat_unix_ms", "status")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_TAGS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    FIRST_ROUND_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    name: str
    model_description: str
    tokenizer_name: str
    domain_tags: _containers.RepeatedScalarFieldContainer[str]
    capacity: int
    first_round: int
    last_heartbeat_unix_ms: int
    status: AgentStatus
    def __init__(self, agent_id: _Optional[str] = ..., name: _Optional[str] = ..., model_description: _Optional[str] = ..., tokenizer_name: _Optional[str] = ..., domain_tags: _Optional[_Iterable[str]] = ..., capacity: _Optional[int] = ..., first_round: _Optional[int] = ..., last_heartbeat_unix_ms: _Optional[int] = ..., status: _Optional[_Union[AgentStatus, str]] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class GetLearnabilityGapsRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class ClusterArm(_message.Message):
    __slots__ = ("cluster", "mean_reward", "pulls", "ucb_score")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MEAN_REWARD_FIELD_NUMBER: _ClassVar[int]
    PULLS_FIELD_NUMBER: _ClassVar[int]
    UCB_SCORE_FIELD_NUMBER: _ClassVar[int]
    cluster: int
    mean_reward: float
    pulls: int
    ucb_score: float
    def __init__(self, cluster: _Optional[int] = ..., mean_reward: _Optional[float] = ..., pulls: _Optional[int] = ..., ucb_score: _Optional[float] = ...) -> None: ...

class AgentGaps(_message.Message):
    __slots__ = ("agent_id", "histogram_edges", "histogram_counts", "band_low_quantile", "band_high_quantile", "band_low_gap", "band_high_gap", "arms", "samples_with_gap")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_EDGES_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_COUNTS_FIELD_NUMBER: _ClassVar[int]
    BAND_LOW_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    BAND_HIGH_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    BAND_LOW_GAP_FIELD_NUMBER: _ClassVar[int]
    BAND_HIGH_GAP_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_WITH_GAP_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    histogram_edges: _containers.RepeatedScalarFieldContainer[float]
    histogram_counts: _containers.RepeatedScalarFieldContainer[int]
    band_low_quantile: float
    band_high_quantile: float
    band_low_gap: float
    band_high_gap: float
    arms: _containers.RepeatedCompositeFieldContainer[ClusterArm]
    samples_with_gap: int
    def __init__(self, agent_id: _Optional[str] = ..., histogram_edges: _Optional[_Iterable[float]] = ..., histogram_counts: _Optional[_Iterable[int]] = ..., band_low_quantile: _Optional[float] = ..., band_high_quantile: _Optional[float] = ..., band_low_gap: _Optional[float] = ..., band_high_gap: _Optional[float] = ..., arms: _Optional[_Iterable[_Union[ClusterArm, _Mapping]]] = ..., samples_with_gap: _Optional[int] = ...) -> None: ...

class GetLearnabilityGapsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentGaps]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentGaps, _Mapping]]] = ...) -> None: ...

class RevokeAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class RevokeAgentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InviteAgentRequest(_message.Message):
    __slots__ = ("name", "expires_in_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    expires_in_s: int
    def __init__(self, name: _Optional[str] = ..., expires_in_s: _Optional[int] = ...) -> None: ...

class InviteAgentResponse(_message.Message):
    __slots__ = ("invitation_id", "enrollment_secret", "expires_unix_ms")
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    invitation_id: str
    enrollment_secret: str
    expires_unix_ms: int
    def __init__(self, invitation_id: _Optional[str] = ..., enrollment_secret: _Optional[str] = ..., expires_unix_ms: _Optional[int] = ...) -> None: ...

class Invitation(_message.Message):
    __slots__ = ("invitation_id", "name", "state", "created_unix_ms", "expires_unix_ms", "agent_id", "open_enrollment")
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_ENROLLMENT_FIELD_NUMBER: _ClassVar[int]
    invitation_id: str
    name: str
    state: InvitationState
    created_unix_ms: int
    expires_unix_ms: int
    agent_id: str
    open_enrollment: bool
    def __init__(self, invitation_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[InvitationState, str]] = ..., created_unix_ms: _Optional[int] = ..., expires_unix_ms: _Optional[int] = ..., agent_id: _Optional[str] = ..., open_enrollment: _Optional[bool] = ...) -> None: ...

class ListInvitationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListInvitationsResponse(_message.Message):
    __slots__ = ("invitations",)
    INVITATIONS_FIELD_NUMBER: _ClassVar[int]
    invitations: _containers.RepeatedCompositeFieldContainer[Invitation]
    def __init__(self, invitations: _Optional[_Iterable[_Union[Invitation, _Mapping]]] = ...) -> None: ...

class RevokeInvitationRequest(_message.Message):
    __slots__ = ("invitation_id",)
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    invitation_id: str
    def __init__(self, invitation_id: _Optional[str] = ...) -> None: ...

class RevokeInvitationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetTotalRoundsRequest(_message.Message):
    __slots__ = ("total_rounds",)
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    total_rounds: int
    def __init__(self, total_rounds: _Optional[int] = ...) -> None: ...

class SetTotalRoundsResponse(_message.Message):
    __slots__ = ("total_rounds", "current_round")
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    total_rounds: int
    current_round: int
    def __init__(self, total_rounds: _Optional[int] = ..., current_round: _Optional[int] = ...) -> None: ...
