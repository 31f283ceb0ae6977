"""A typed client of lada.v1.LLMService for agents, the allocator, tests and benchmarks.

Every call carries a deadline; failures surface as grpc.RpcError with the server's code.
Imports no torch: results are the plain dataclasses of llm_service.types.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType

import grpc

from lada.config import MAX_MESSAGE_BYTES
from lada.v1 import common_pb2, llm_service_pb2, llm_service_pb2_grpc
from llm_service.types import (
    Contribution,
    GenerateResult,
    ModelVersionInfo,
    PathResult,
    SampleResult,
    ScoredCompletion,
    ScoreResult,
)

DEFAULT_TIMEOUT_S = 300.0
ABSORB_TIMEOUT_S = 1800.0
FINISH_NAMES = {common_pb2.FINISH_REASON_STOP: "stop", common_pb2.FINISH_REASON_LENGTH: "length"}


class LLMClient:
    """Generate, score, absorb and list versions over one channel."""

    def __init__(
        self,
        address: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        self.address = address
        self.timeout_s = timeout_s
        self._channel = (
            grpc.secure_channel(address, credentials, options=options)
            if credentials
            else grpc.insecure_channel(address, options=options)
        )
        self._stub = llm_service_pb2_grpc.LLMServiceStub(self._channel)

    def generate(
        self,
        sample_ids: Sequence[str] = (),
        prompts: Sequence[str] = (),
        n: int = 4,
        temperature: float = 0.8,
        top_p: float = 1.0,
        max_tokens: int = 256,
        seed: int = 0,
        model_version: str = "",
        timeout_s: float | None = None,
    ) -> GenerateResult:
        """`n` paths per sample ID, then per raw prompt, in request order."""
        request = llm_service_pb2.GenerateReasoningPathsRequest(
            sample_ids=list(sample_ids),
            prompts=list(prompts),
            sampling=llm_service_pb2.SamplingParams(
                n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed
            ),
            model_version=model_version,
        )
        reply = self._stub.GenerateReasoningPaths(request, timeout=timeout_s or self.timeout_s)
        return GenerateResult([_sample(r) for r in reply.results], reply.model_version)

    def score(
        self,
        completions: Sequence[str],
        prompt: str = "",
        sample_id: str = "",
        model_version: str = "",
        token_logprobs: bool = False,
        timeout_s: float | None = None,
    ) -> ScoreResult:
        """Log-probs of each completion after `prompt` (or the prompt of `sample_id`)."""
        request = llm_service_pb2.ScorePathsRequest(
            prompt=prompt,
            completions=list(completions),
            sample_id=sample_id,
            model_version=model_version,
            return_token_logprobs=token_logprobs,
        )
        reply = self._stub.ScorePaths(request, timeout=timeout_s or self.timeout_s)
        scores = [
            ScoredCompletion(
                s.joint_logprob,
                s.normalized_logprob,
                s.token_count,
                list(s.token_logprobs),
                s.correct,
            )
            for s in reply.scores
        ]
        return ScoreResult(scores, reply.model_version)

    def absorb(
        self,
        contributions: Iterable[Contribution],
        epochs: int = 0,
        learning_rate: float = 0.0,
        lora_rank: int = 0,
        timeout_s: float = ABSORB_TIMEOUT_S,
    ) -> ModelVersionInfo:
        """Fine-tune on contributed paths; returns the new version, already serving."""
        request = llm_service_pb2.AbsorbRequest(
            contributions=[
                llm_service_pb2.Contribution(
                    sample_id=c.sample_id, path=c.path, agent_id=c.agent_id
                )
                for c in contributions
            ],
            options=llm_service_pb2.AbsorbOptions(
                epochs=epochs, learning_rate=learning_rate, lora_rank=lora_rank
            ),
        )
        return _version(self._stub.Absorb(request, timeout=timeout_s).version)

    def list_versions(self, timeout_s: float | None = None) -> tuple[list[ModelVersionInfo], str]:
        """Every version (oldest first) and the name of the one being served."""
        reply = self._stub.ListModelVersions(
            llm_service_pb2.ListModelVersionsRequest(), timeout=timeout_s or self.timeout_s
        )
        return [_version(v) for v in reply.versions], reply.serving_version

    def serving_version(self, timeout_s: float | None = None) -> str:
        return self.list_versions(timeout_s)[1]

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the channel connects (raises grpc.FutureTimeoutError)."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _sample(r: llm_service_pb2.SamplePaths) -> SampleResult:
    paths = [
        PathResult(
            p.text,
            p.token_count,
            p.joint_logprob,
            p.normalized_logprob,
            FINISH_NAMES.get(p.finish_reason, "unspecified"),
            p.correct,
        )
        for p in r.paths
    ]
    return SampleResult(r.sample_id, r.prompt, paths, r.cache_hit)


def _version(v: llm_service_pb2.ModelVersion) -> ModelVersionInfo:
    return ModelVersionInfo(
        v.version,
        v.parent,
        v.samples_absorbed,
        v.created_unix_ms,
        v.serving,
        v.final_loss,
        v.absorb_mode,
        v.absorb_route,
    )
