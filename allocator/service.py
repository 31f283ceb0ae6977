"""The Allocator gRPC servicers: authenticate, translate messages, map refusals to status
codes. Everything else is in `AllocatorCore` and `RoundDriver`.

Two servicers share one translation of each RPC (`_Translations`): `AioAllocatorServicer`
for the grpc.aio server (the default: one event loop; unary RPCs call the sync core inline
on it, WatchRounds streams are coroutines, not threads) and `AllocatorServicer` for gRPC's
threaded server (`AllocatorConfig.server_mode: threaded`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc

from allocator.core import AllocatorCore, InvalidArgument, RoundEventView
from lada.learnability import ClusterModel
from lada.state import (
    AgentRecord,
    AgentStatus,
    AlreadyExists,
    Conflict,
    InvitationRecord,
    InvitationState,
    NotFound,
    PermissionDenied,
    Phase,
    RunOver,
    StateError,
    Unauthenticated,
)
from lada.v1 import allocator_pb2, allocator_pb2_grpc, common_pb2

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

STATUS_OF: dict[type[StateError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    RunOver: grpc.StatusCode.OUT_OF_RANGE,
}


def status_of(error: StateError) -> grpc.StatusCode:
    return next(
        (c for kind, c in STATUS_OF.items() if isinstance(error, kind)), grpc.StatusCode.INTERNAL
    )


def refusals_to_status(method: F) -> F:
    """Turn state-store and core refusals into gRPC status codes with their message."""

    @functools.wraps(method)
    def wrapped(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except StateError as error:
            context.abort(status_of(error), str(error))

    return wrapped  # type: ignore[return-value]


def streamed_refusals_to_status(method: F) -> F:
    @functools.wraps(method)
    def wrapped(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except StateError as error:
            context.abort(status_of(error), str(error))

    return wrapped  # type: ignore[return-value]


def refusals_on_loop(method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """An aio handler running the sync `method` inline on the event loop, refusals mapped
    to status codes. Inline, not in a thread pool: the core's Redis round trips take 60-100 us
    each, and a pool of 8 threads measured about 2x the inline tails (docs/bench/load.md,
    "the allocator on grpc.aio")."""

    @functools.wraps(method)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except StateError as error:
            await context.abort(status_of(error), str(error))

    return wrapped


def async_refusals_to_status(
    method: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except StateError as error:
            await context.abort(status_of(error), str(error))

    return wrapped


def bearer_token(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def phase_enum(phase: Phase | None) -> int:
    if phase is None:
        return common_pb2.ROUND_PHASE_UNSPECIFIED
    return common_pb2.RoundPhase.Value(f"ROUND_PHASE_{phase.value}")


_PHASE_BY_VALUE = {phase_enum(phase): phase for phase in Phase}


def watched_phases(values: Iterable[int]) -> frozenset[Phase] | None:
    """WatchRoundsRequest.phases as the core's phases; None (every phase) when empty."""
    phases = set()
    for value in values:
        if value not in _PHASE_BY_VALUE:
            names = ", ".join(phase.value for phase in Phase)
            raise InvalidArgument(f"phases: {value} is not a round phase ({names})")
        phases.add(_PHASE_BY_VALUE[value])
    return frozenset(phases) or None


UNARY_RPCS = tuple(
    method.name
    for method in allocator_pb2.DESCRIPTOR.services_by_name["Allocator"].methods
    if not method.client_streaming and not method.server_streaming
)


class _Translations:
    """Each unary RPC of lada.v1.Allocator as a sync function of (request, context) that
    raises StateError for a refusal, and the parts the streaming RPCs share. Both servicers
    mount these; the context is only read (its metadata), so it may be either server's."""

    def __init__(self, core: AllocatorCore) -> None:
        self.core = core

    def _agent(self, context: grpc.ServicerContext, agent_id: str) -> AgentRecord:
        return self.core.authorize(bearer_token(context), agent_id)

    # ---- registry ----------------------------------------------------------------------------
    def RegisterAgent(self, request, context):  # type: ignore[no-untyped-def]
        enrollment = self.core.register(
            request.name,
            request.model_description,
            request.tokenizer_name,
            list(request.domain_tags),
            request.capacity,
            request.pool_fingerprint,
            request.enrollment_secret,
        )
        return allocator_pb2.RegisterAgentResponse(
            agent_id=enrollment.record.agent_id,
            token=enrollment.token,
            first_round=enrollment.record.first_round,
            resumed=enrollment.resumed,
            total_rounds=self.core.total_rounds(),
        )

    def Heartbeat(self, request, context):  # type: ignore[no-untyped-def]
        current, phase, stamp = self.core.authorized_heartbeat(
            bearer_token(context), request.agent_id
        )
        return allocator_pb2.HeartbeatResponse(
            current_round=current, phase=phase_enum(phase), server_time_unix_ms=stamp
        )

    def Deregister(self, request, context):  # type: ignore[no-untyped-def]
        agent = self._agent(context, request.agent_id)
        self.core.leave(agent.agent_id, AgentStatus.DEREGISTERED)
        return allocator_pb2.DeregisterResponse()

    # ---- rounds ------------------------------------------------------------------------------
    def GetAllocation(self, request, context):  # type: ignore[no-untyped-def]
        token = bearer_token(context)
        if self.core.is_operator(token):
            if not request.agent_id:
                raise InvalidArgument("agent_id: required when the operator asks")
            self.core.store.get_agent(request.agent_id)
            view = self.core.allocation(request.agent_id, request.round, mark=False)
        else:
            view = self.core.authorized_allocation(token, request.agent_id, request.round)
        return allocator_pb2.GetAllocationResponse(
            round=view.round,
            samples=[
                allocator_pb2.AllocatedSample(
                    sample_id=a.sample_id,
                    llm_model_version=a.version,
                    cluster=a.cluster,
                    scan_only=a.scan_only,
                )
                for a in view.samples
            ],
            deadline_unix_ms=view.deadline_ms,
            policy=view.policy,
            contribution_requests=view.contribution_requests,
        )

    def _watch_checked(self, request: Any, context: Any) -> frozenset[Phase] | None:
        """WatchRounds' checks before it subscribes (the caller, from_round, phases); returns
        the phases asked for."""
        self._agent(context, request.agent_id)
        if request.from_round < 0:
            raise InvalidArgument(f"from_round: must not be negative, got {request.from_round}")
        return watched_phases(request.phases)

    def _report(self, context: Any) -> _StatsReport:
        return _StatsReport(self.core, bearer_token(context))

    def ContributePaths(self, request, context):  # type: ignore[no-untyped-def]
        agent = self._agent(context, request.agent_id)
        outcome = self.core.contribute(
            agent.agent_id, request.round, [(p.sample_id, p.text) for p in request.paths]
        )
        return allocator_pb2.ContributePathsResponse(**vars(outcome))

    def GetClusterModel(self, request, context):  # type: ignore[no-untyped-def]
        token = bearer_token(context)
        if not self.core.is_operator(token):
            self.core.authorize(token, "")
        return cluster_model_message(self.core.cluster_model)

    # ---- operator ----------------------------------------------------------------------------
    def GetRoundStatus(self, request, context):  # type: ignore[no-untyped-def]
        self.core.check_operator(bearer_token(context))
        if request.round < 0:
            raise InvalidArgument(f"round: must not be negative, got {request.round}")
        status = self.core.round_status(request.round)
        return allocator_pb2.GetRoundStatusResponse(
            round=status["round"],
            phase=phase_enum(Phase(status["phase"]) if status["phase"] else None),
            deadline_unix_ms=status["deadline_ms"],
            policy=status["policy"],
            total_rounds=status["total_rounds"],
            pool_fingerprint=status["pool_fingerprint"],
            pool_size=status["pool_size"],
            contributions=allocator_pb2.ContributionCounts(**status["contributions"]),
            agents=[
                allocator_pb2.AgentRoundStatus(
                    agent_id=a["agent_id"],
                    name=a["name"],
                    state=allocator_pb2.AgentRoundState.Value(f"AGENT_ROUND_STATE_{a['state']}"),
                    allocated=a["allocated"],
                    reported=a["reported"],
                    contribution_requests=a["requested"],
                )
                for a in status["agents"]
            ],
        )

    def ListAgents(self, request, context):  # type: ignore[no-untyped-def]
        self.core.check_operator(bearer_token(context))
        return allocator_pb2.ListAgentsResponse(agents=[agent_info(a) for a in self.core.agents()])

    def GetLearnabilityGaps(self, request, context):  # type: ignore[no-untyped-def]
        self.core.check_operator(bearer_token(context))
        return allocator_pb2.GetLearnabilityGapsResponse(
            agents=[
                allocator_pb2.AgentGaps(
                    **{k: v for k, v in entry.items() if k != "arms"},
                    arms=[allocator_pb2.ClusterArm(**arm) for arm in entry["arms"]],
                )
                for entry in self.core.learnability(request.agent_id)
            ]
        )

    def RevokeAgent(self, request, context):  # type: ignore[no-untyped-def]
        self.core.check_operator(bearer_token(context))
        if not request.agent_id:
            raise InvalidArgument("agent_id: required")
        self.core.leave(request.agent_id, AgentStatus.REVOKED)
        return allocator_pb2.RevokeAgentResponse()

    def InviteAgent(self, request, context):  # type: ignore[no-untyped-def]
        self.core.check_operator(bearer_token(context), required=True)
        invitation_id, secret, expires_ms = self.core.invite(request.name, request.expires_in_s)
        return allocator_pb2.InviteAgentResponse(
            invitation_id=invitation_id, enrollment_secret=secret, expires_unix_ms=expires_ms
        )

    def ListInvitations(self, request, context):  # type: ignore[no-untyped-def]
        self.core.check_operator(bearer_token(context), required=True)
        return allocator_pb2.ListInvitationsResponse(
            invitations=[invitation_info(i, state) for i, state in self.core.invitations()]
        )

    def RevokeInvitation(self, request, context):  # type: ignore[no-untyped-def]
        self.core.check_operator(bearer_token(context), required=True)
        self.core.revoke_invitation(request.invitation_id)
        return allocator_pb2.RevokeInvitationResponse()

    def SetTotalRounds(self, request, context):  # type: ignore[no-untyped-def]
        self.core.check_operator(bearer_token(context), required=True)
        total, current = self.core.set_total_rounds(request.total_rounds)
        return allocator_pb2.SetTotalRoundsResponse(total_rounds=total, current_round=current)


@functools.lru_cache(maxsize=64)
def round_event(event: RoundEventView) -> allocator_pb2.RoundEvent:
    """The message for `event`, built once for every watcher: the feed hands each of them the
    same (frozen) view, and nothing changes a message once built. 64 covers a round's events
    many times over; a miss only builds the message again."""
    return allocator_pb2.RoundEvent(
        round=event.round,
        phase=phase_enum(event.phase),
        timestamp_unix_ms=event.ts_ms,
        total_rounds=event.total_rounds,
        run_finished=event.finished,
        fetch_window_ms=event.fetch_window_ms,
    )


class _StatsReport:
    """One ReportStats stream as its messages arrive: the first names the caller and round,
    every later one must name the same."""

    def __init__(self, core: AllocatorCore, token: str) -> None:
        self.core = core
        self.token = token
        self.agent: AgentRecord | None = None
        self.claimed: tuple[str, int] | None = None
        self.stats: list[allocator_pb2.SampleStats] = []

    def add(self, message: allocator_pb2.ReportStatsRequest) -> None:
        if self.agent is None:
            self.agent = self.core.authorize(self.token, message.agent_id)
            self.claimed = (message.agent_id, message.round)
        elif (message.agent_id, message.round) != self.claimed:
            raise InvalidArgument("agent_id, round: must be the same in every message")
        self.stats.extend(message.stats)

    def send(self) -> allocator_pb2.ReportStatsResponse:
        if self.agent is None or self.claimed is None:
            raise InvalidArgument("stats: the stream carried no message")
        outcome = self.core.report(self.agent.agent_id, self.claimed[1], self.stats)
        return allocator_pb2.ReportStatsResponse(
            accepted=outcome.accepted, duplicates=outcome.duplicates
        )


def _serving_unary(wrap: Callable[[Callable[..., Any]], Any]) -> Callable[[type[T]], type[T]]:
    """Class decorator: every unary RPC of `_Translations`, wrapped by `wrap` (the server's
    way of running it and mapping refusals)."""

    def mount(cls: type[T]) -> type[T]:
        for name in UNARY_RPCS:
            setattr(cls, name, wrap(getattr(_Translations, name)))
        return cls

    return mount


@_serving_unary(refusals_to_status)
class AllocatorServicer(_Translations, allocator_pb2_grpc.AllocatorServicer):
    """lada.v1.Allocator on gRPC's threaded server: a thread per RPC in flight."""

    @streamed_refusals_to_status
    def WatchRounds(self, request, context):  # type: ignore[no-untyped-def]
        phases = self._watch_checked(request, context)
        context.add_callback(self.core.wake_watchers)
        events = self.core.watch(request.from_round, lambda: not context.is_active(), phases)
        for event in events:
            yield round_event(event)

    @refusals_to_status
    def ReportStats(self, request_iterator, context):  # type: ignore[no-untyped-def]
        report = self._report(context)
        for message in request_iterator:
            report.add(message)
        return report.send()


@_serving_unary(refusals_on_loop)
class AioAllocatorServicer(_Translations, allocator_pb2_grpc.AllocatorServicer):
    """lada.v1.Allocator on grpc.aio: every RPC a coroutine on one event loop."""

    @async_refusals_to_status
    async def WatchRounds(self, request, context):  # type: ignore[no-untyped-def]
        """A coroutine that writes each event, not an async generator: each generator layer
        (this, the refusal mapping, the interceptor) cost a resume per event per watcher."""
        phases = self._watch_checked(request, context)
        # gRPC cancels this coroutine when the client goes away: the subscription ends there
        async for event in self.core.watch_async(request.from_round, phases):
            await context.write(round_event(event))

    @async_refusals_to_status
    async def ReportStats(self, request_iterator, context):  # type: ignore[no-untyped-def]
        report = self._report(context)
        async for message in request_iterator:
            report.add(message)
        return report.send()


def agent_info(record: AgentRecord) -> allocator_pb2.AgentInfo:
    return allocator_pb2.AgentInfo(
        agent_id=record.agent_id,
        name=record.name,
        model_description=record.model_description,
        tokenizer_name=record.tokenizer_name,
        domain_tags=record.domain_tags,
        capacity=record.capacity,
        first_round=record.first_round,
        last_heartbeat_unix_ms=record.last_heartbeat_ms,
        status=allocator_pb2.AgentStatus.Value(f"AGENT_STATUS_{record.status.value}"),
    )


def invitation_info(
    invitation: InvitationRecord, state: InvitationState
) -> allocator_pb2.Invitation:
    return allocator_pb2.Invitation(
        invitation_id=invitation.invitation_id,
        name=invitation.name,
        state=allocator_pb2.InvitationState.Value(f"INVITATION_STATE_{state.value}"),
        created_unix_ms=invitation.created_ms,
        expires_unix_ms=invitation.expires_ms,
        agent_id=invitation.agent_id,
        open_enrollment=invitation.open_enrollment,
    )


def cluster_model_message(model: ClusterModel) -> allocator_pb2.GetClusterModelResponse:
    return allocator_pb2.GetClusterModelResponse(
        num_clusters=model.num_clusters,
        vocabulary=model.vocabulary,
        idf=model.idf.tolist(),
        domains=model.domains,
        centroids=model.centroids.ravel().tolist(),
        feature_count=model.feature_count,
        cluster_pool_share=model.pool_share.tolist(),
        domain_feature_weight=model.domain_weight,
        difficulty_feature_weight=model.difficulty_weight,
    )
