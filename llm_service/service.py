"""The gRPC servicer: translate protobuf <-> LLMCore calls and map errors to status codes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from lada.v1 import common_pb2, llm_service_pb2, llm_service_pb2_grpc
from llm_service.core import LLMCore
from llm_service.errors import (
    FailedPrecondition,
    InvalidArgument,
    LLMError,
    NonFiniteLogProb,
    NotFound,
    ResourceExhausted,
)
from llm_service.types import AbsorbOverrides, Contribution, PathResult, SampleResult, Sampling
from llm_service.versions import VersionInfo

log = logging.getLogger("lada.llm.service")
T = TypeVar("T")

STATUS_OF: dict[type[LLMError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NonFiniteLogProb: grpc.StatusCode.INTERNAL,
}
FINISH_REASONS = {
    "stop": common_pb2.FINISH_REASON_STOP,
    "length": common_pb2.FINISH_REASON_LENGTH,
}


class LLMServicer(llm_service_pb2_grpc.LLMServiceServicer):
    """lada.v1.LLMService over one LLMCore."""

    def __init__(self, core: LLMCore) -> None:
        self.core = core

    def GenerateReasoningPaths(
        self, request: llm_service_pb2.GenerateReasoningPathsRequest, context: grpc.ServicerContext
    ) -> llm_service_pb2.GenerateReasoningPathsResponse:
        s = request.sampling
        sampling = Sampling(s.n, s.temperature, s.top_p, s.max_tokens, s.seed)
        result = _call(
            context,
            lambda: self.core.generate(
                list(request.sample_ids), list(request.prompts), sampling, request.model_version
            ),
        )
        return llm_service_pb2.GenerateReasoningPathsResponse(
            results=[_sample_paths(r) for r in result.results],
            model_version=result.model_version,
        )

    def ScorePaths(
        self, request: llm_service_pb2.ScorePathsRequest, context: grpc.ServicerContext
    ) -> llm_service_pb2.ScorePathsResponse:
        result = _call(
            context,
            lambda: self.core.score(
                request.prompt,
                list(request.completions),
                request.sample_id,
                request.model_version,
                request.return_token_logprobs,
            ),
        )
        return llm_service_pb2.ScorePathsResponse(
            scores=[
                llm_service_pb2.PathScore(
                    joint_logprob=s.joint_logprob,
                    normalized_logprob=s.normalized_logprob,
                    token_count=s.token_count,
                    token_logprobs=s.token_logprobs,
                    correct=s.correct,
                )
                for s in result.scores
            ],
            model_version=result.model_version,
        )

    def Absorb(
        self, request: llm_service_pb2.AbsorbRequest, context: grpc.ServicerContext
    ) -> llm_service_pb2.AbsorbResponse:
        contributions = [
            Contribution(c.sample_id, c.path, c.agent_id) for c in request.contributions
        ]
        o = request.options
        overrides = AbsorbOverrides(o.epochs, o.learning_rate, o.lora_rank)
        info = _call(context, lambda: self.core.absorb(contributions, overrides))
        return llm_service_pb2.AbsorbResponse(version=_version(info, True))

    def ListModelVersions(
        self, request: llm_service_pb2.ListModelVersionsRequest, context: grpc.ServicerContext
    ) -> llm_service_pb2.ListModelVersionsResponse:
        versions, serving = self.core.list_versions()
        return llm_service_pb2.ListModelVersionsResponse(
            versions=[_version(v, v.version == serving) for v in versions],
            serving_version=serving,
        )


def _call(context: grpc.ServicerContext, work: Callable[[], T]) -> T:
    """Run core work; expected failures abort with their status code and message."""
    try:
        return work()
    except LLMError as exc:
        code = STATUS_OF.get(type(exc), grpc.StatusCode.INTERNAL)
        log.info("rejected", extra={"code": code.name, "reason": str(exc)})
        context.abort(code, str(exc))
    raise AssertionError("unreachable")  # context.abort raises


def _path(p: PathResult) -> common_pb2.ReasoningPath:
    return common_pb2.ReasoningPath(
        text=p.text,
        token_count=p.token_count,
        joint_logprob=p.joint_logprob,
        normalized_logprob=p.normalized_logprob,
        finish_reason=FINISH_REASONS[p.finish_reason],
        correct=p.correct,
    )


def _sample_paths(r: SampleResult) -> llm_service_pb2.SamplePaths:
    return llm_service_pb2.SamplePaths(
        sample_id=r.sample_id,
        prompt=r.prompt,
        paths=[_path(p) for p in r.paths],
        cache_hit=r.cache_hit,
    )


def _version(info: VersionInfo, serving: bool) -> llm_service_pb2.ModelVersion:
    return llm_service_pb2.ModelVersion(
        version=info.version,
        parent=info.parent,
        samples_absorbed=info.samples_absorbed,
        created_unix_ms=info.created_unix_ms,
        serving=serving,
        final_loss=info.final_loss,
        absorb_mode=info.absorb_mode,
        absorb_route=info.absorb_route,
    )


def binding(core: LLMCore) -> Any:
    """The ServiceBinding that mounts this servicer on lada.server.start_server."""
    from lada.server import ServiceBinding

    return ServiceBinding(
        llm_service_pb2_grpc.add_LLMServiceServicer_to_server,
        LLMServicer(core),
        "lada.v1.LLMService",
    )
