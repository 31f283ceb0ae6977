"""gRPC implementations of the agent's ports (slm_agent.ports) over the lada.v1 stubs.

They translate to and from the lada.v1 messages and turn status codes into the
transport-free ServiceError family: UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED
are `Unavailable` (retried with backoff), FAILED_PRECONDITION / NOT_FOUND on round-scoped
calls are `RoundGone`, the rest `Refused`. Every channel they use is audited
(slm_agent.audit), so every byte they send is on record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from allocator.client import (
    WATCHED_PHASES,
    cluster_model_from_message,
    phase_name,
    phase_values,
)
from lada.learnability import ClusterModel
from lada.v1 import (
    allocator_pb2,
    allocator_pb2_grpc,
    llm_service_pb2,
    llm_service_pb2_grpc,
)
from slm_agent.ports import (
    Refused,
    Registered,
    Registration,
    RoundEventView,
    RoundGone,
    RunOver,
    ServiceError,
    StreamEnded,
    Unavailable,
    Unreachable,
)
from slm_agent.rounds import (
    AllocatedSample,
    LLMPath,
    RoundAllocation,
    SampleStat,
    ids_by_version,
)

log = logging.getLogger("lada.agent.clients")

T = TypeVar("T")
STATS_PER_MESSAGE = 32
SAMPLES_PER_LLM_REQUEST = 64


TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # rate limited: back off and retry
}
ROUND_GONE = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}


def service_error(exc: grpc.RpcError, round_scoped: bool = False) -> ServiceError:
    """The transport-free error for a failed RPC (round-scoped calls may find the round gone)."""
    code = exc.code() if hasattr(exc, "code") else None
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    details = (exc.details() if hasattr(exc, "details") else "") or str(exc)
    if code in TRANSIENT:
        return Unavailable(name, details)
    if code is grpc.StatusCode.CANCELLED:
        return StreamEnded(name, details)
    if round_scoped and code in ROUND_GONE:
        return RoundGone(name, details)
    if code is grpc.StatusCode.OUT_OF_RANGE:
        return RunOver(name, details)
    return Refused(name, details)


def _call(call: Callable[[], T], round_scoped: bool = False) -> T:
    try:
        return call()
    except grpc.RpcError as exc:
        raise service_error(exc, round_scoped) from exc


def wait_ready(channel: grpc.Channel, what: str, target: str, deadline_s: float) -> None:
    """Block until `channel` connects; exponential backoff with a log line per attempt."""
    started = time.monotonic()
    delay = 0.5
    while True:
        remaining = deadline_s - (time.monotonic() - started)
        if remaining <= 0:
            raise Unreachable(f"{what} at {target} unreachable after {deadline_s:.0f}s")
        try:
            grpc.channel_ready_future(channel).result(timeout=min(delay, remaining))
            return
        except grpc.FutureTimeoutError:
            wait = min(delay, max(deadline_s - (time.monotonic() - started), 0))
            log.warning(
                f"{what} at {target} unreachable; retrying in {wait:.1f}s",
                extra={"target": target, "elapsed_s": round(time.monotonic() - started, 1)},
            )
            time.sleep(wait)
            delay = min(delay * 2, 8.0)


class GrpcAllocator:
    """AllocatorPort over the lada.v1.Allocator service."""

    def __init__(
        self,
        channel: grpc.Channel,
        timeout_s: float = 30.0,
        watch_channel: grpc.Channel | None = None,
    ) -> None:
        """`watch_channel`: WatchRounds goes there (a process kept for event streams)."""
        self.stub = allocator_pb2_grpc.AllocatorStub(channel)
        self.watch_stub = (
            allocator_pb2_grpc.AllocatorStub(watch_channel) if watch_channel else self.stub
        )
        self.timeout_s = timeout_s
        self.agent_id = ""
        self._token = ""
        self._watch: Any = None

    def use_identity(self, agent_id: str, token: str) -> None:
        self.agent_id, self._token = agent_id, token

    def _auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._token}")]

    def register(self, registration: Registration) -> Registered:
        request = allocator_pb2.RegisterAgentRequest(
            name=registration.name,
            model_description=registration.model_description,
            tokenizer_name=registration.tokenizer_name,
            domain_tags=registration.domain_tags,
            capacity=registration.capacity,
            pool_fingerprint=registration.pool_fingerprint,
            enrollment_secret=registration.enrollment_secret,
        )
        reply = _call(lambda: self.stub.RegisterAgent(request, timeout=self.timeout_s))
        return Registered(reply.agent_id, reply.token, int(reply.first_round), reply.resumed)

    def heartbeat(self) -> int:
        request = allocator_pb2.HeartbeatRequest(agent_id=self.agent_id)
        reply = _call(
            lambda: self.stub.Heartbeat(request, metadata=self._auth(), timeout=self.timeout_s)
        )
        return int(reply.current_round)

    def watch_rounds(
        self, from_round: int, phases: Sequence[str] = WATCHED_PHASES
    ) -> Iterator[RoundEventView]:
        request = allocator_pb2.WatchRoundsRequest(
            agent_id=self.agent_id, from_round=from_round, phases=phase_values(phases)
        )
        self._watch = self.watch_stub.WatchRounds(request, metadata=self._auth())
        try:
            for event in self._watch:
                yield RoundEventView(
                    int(event.round),
                    phase_name(event.phase),
                    int(event.total_rounds),
                    event.run_finished,
                    int(event.fetch_window_ms),
                )
        except grpc.RpcError as exc:
            raise service_error(exc) from exc

    def stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.cancel()

    def get_allocation(self, round_number: int) -> RoundAllocation:
        request = allocator_pb2.GetAllocationRequest(agent_id=self.agent_id, round=round_number)
        reply = _call(
            lambda: self.stub.GetAllocation(request, metadata=self._auth(), timeout=self.timeout_s),
            round_scoped=True,
        )
        return RoundAllocation(
            [
                AllocatedSample(s.sample_id, int(s.cluster), s.llm_model_version, s.scan_only)
                for s in reply.samples
            ],
            list(reply.contribution_requests),
        )

    def report_stats(self, round_number: int, stats: Sequence[SampleStat]) -> tuple[int, int]:
        messages = list(_report_messages(self.agent_id, round_number, stats))
        reply = _call(
            lambda: self.stub.ReportStats(
                iter(messages), metadata=self._auth(), timeout=self.timeout_s
            ),
            round_scoped=True,
        )
        return int(reply.accepted), int(reply.duplicates)

    def contribute(self, round_number: int, paths: dict[str, str]) -> tuple[int, int]:
        request = allocator_pb2.ContributePathsRequest(
            agent_id=self.agent_id,
            round=round_number,
            paths=[allocator_pb2.ContributedPath(sample_id=s, text=t) for s, t in paths.items()],
        )
        reply = _call(
            lambda: self.stub.ContributePaths(
                request, metadata=self._auth(), timeout=self.timeout_s
            ),
            round_scoped=True,
        )
        return int(reply.accepted), len(paths) - int(reply.accepted)  # rejected, every reason

    def cluster_model(self) -> ClusterModel | None:
        request = allocator_pb2.GetClusterModelRequest()
        reply = _call(
            lambda: self.stub.GetClusterModel(
                request, metadata=self._auth(), timeout=self.timeout_s
            )
        )
        return cluster_model_from_proto(reply)


def cluster_model_from_proto(reply: allocator_pb2.GetClusterModelResponse) -> ClusterModel | None:
    """The public clustering, or None while the allocator has not fitted it."""
    if reply.num_clusters <= 0 or reply.feature_count <= 0:
        return None
    return cluster_model_from_message(reply)


def _report_messages(
    agent_id: str, round_number: int, stats: Sequence[SampleStat]
) -> Iterator[allocator_pb2.ReportStatsRequest]:
    """The report stream: numbers only, STATS_PER_MESSAGE samples per message."""
    for start in range(0, max(len(stats), 1), STATS_PER_MESSAGE):
        chunk = stats[start : start + STATS_PER_MESSAGE]
        yield allocator_pb2.ReportStatsRequest(
            agent_id=agent_id,
            round=round_number,
            stats=[
                allocator_pb2.SampleStats(
                    sample_id=s.sample_id,
                    correct_before=s.correct_before,
                    correct_after=s.correct_after,
                    scan_only=s.scan_only,
                    paths=[
                        allocator_pb2.PathStats(
                            llm_normalized_logprob=p.llm_normalized_logprob,
                            correct=p.correct,
                            slm_normalized_logprob_before=p.slm_normalized_logprob_before,
                            slm_normalized_logprob_after=p.slm_normalized_logprob_after,
                        )
                        for p in s.paths
                    ],
                )
                for s in chunk
            ],
        )


class GrpcLLM:
    """LLMPort over the lada.v1.LLMService (paths come back with nlp_L and correctness)."""

    def __init__(self, channel: grpc.Channel, timeout_s: float = 600.0) -> None:
        self.stub = llm_service_pb2_grpc.LLMServiceStub(channel)
        self.timeout_s = timeout_s

    def reasoning_paths(
        self, samples: Sequence[AllocatedSample], n: int, temperature: float, max_tokens: int
    ) -> dict[str, list[LLMPath]]:
        """Paths for every allocated sample, one request per model version and chunk."""
        out: dict[str, list[LLMPath]] = {}
        for version, ids in ids_by_version(samples).items():
            for start in range(0, len(ids), SAMPLES_PER_LLM_REQUEST):
                out.update(
                    self._request(
                        ids[start : start + SAMPLES_PER_LLM_REQUEST],
                        version,
                        n,
                        temperature,
                        max_tokens,
                    )
                )
        return out

    def _request(
        self, ids: list[str], version: str, n: int, temperature: float, max_tokens: int
    ) -> dict[str, list[LLMPath]]:
        request = llm_service_pb2.GenerateReasoningPathsRequest(
            sample_ids=ids,
            sampling=llm_service_pb2.SamplingParams(
                n=n, temperature=temperature, max_tokens=max_tokens
            ),
            model_version=version,
        )
        reply = _call(lambda: self.stub.GenerateReasoningPaths(request, timeout=self.timeout_s))
        return {
            r.sample_id: [
                LLMPath(p.text, float(p.normalized_logprob), bool(p.correct)) for p in r.paths
            ]
            for r in reply.results
            if r.sample_id
        }
