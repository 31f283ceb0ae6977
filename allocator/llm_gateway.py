"""The allocator's view of the LLM service (protos/lada/v1/llm_service.proto): score
contributed paths, learn the LLM's accuracy, absorb a selection. One class per transport so
the in-process simulation can hand the round driver its own implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from lada.config import MAX_MESSAGE_BYTES
from lada.v1 import llm_service_pb2, llm_service_pb2_grpc

ACCURACY_MAX_TOKENS = 256  # token budget of the paths that measure the LLM's accuracy


@dataclass
class Contribution:
    agent_id: str
    sample_id: str
    text: str


class LLMGateway(ABC):
    """What the round driver needs from the LLM."""

    @abstractmethod
    def serving_version(self) -> str:
        """The model version being served (allocations name it)."""

    @abstractmethod
    def score(self, sample_id: str, completions: Sequence[str], version: str = "") -> list[float]:
        """nlp_L of each completion after the sample's prompt."""

    @abstractmethod
    def accuracy(
        self, sample_ids: Sequence[str], paths: int, temperature: float, version: str = ""
    ) -> dict[str, str]:
        """sample_id -> "correct/total" of the LLM's own paths (`version`: "" = serving)."""

    @abstractmethod
    def absorb(self, contributions: Sequence[Contribution]) -> str:
        """Fine-tune on the contributions; returns the new serving version."""


class GrpcLLMGateway(LLMGateway):
    """The LLM service over gRPC, with a deadline on every call."""

    def __init__(
        self,
        address: str,
        timeout_s: float = 600.0,
        max_tokens: int = ACCURACY_MAX_TOKENS,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.max_tokens = max_tokens
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        self._channel = (
            grpc.secure_channel(address, credentials, options=options)
            if credentials
            else grpc.insecure_channel(address, options=options)
        )
        self._stub = llm_service_pb2_grpc.LLMServiceStub(self._channel)
        self._timeout = timeout_s

    def close(self) -> None:
        self._channel.close()

    def serving_version(self) -> str:
        reply = self._stub.ListModelVersions(
            llm_service_pb2.ListModelVersionsRequest(), timeout=self._timeout
        )
        return reply.serving_version

    def score(self, sample_id: str, completions: Sequence[str], version: str = "") -> list[float]:
        reply = self._stub.ScorePaths(
            llm_service_pb2.ScorePathsRequest(
                sample_id=sample_id, completions=list(completions), model_version=version
            ),
            timeout=self._timeout,
        )
        return [score.normalized_logprob for score in reply.scores]

    def accuracy(
        self, sample_ids: Sequence[str], paths: int, temperature: float, version: str = ""
    ) -> dict[str, str]:
        reply = self._stub.GenerateReasoningPaths(
            llm_service_pb2.GenerateReasoningPathsRequest(
                sample_ids=list(sample_ids),
                sampling=llm_service_pb2.SamplingParams(
                    n=paths, temperature=temperature, max_tokens=self.max_tokens
                ),
                model_version=version,
            ),
            timeout=self._timeout,
        )
        return {
            result.sample_id: f"{sum(p.correct for p in result.paths)}/{len(result.paths)}"
            for result in reply.results
            if result.paths
        }

    def absorb(self, contributions: Sequence[Contribution]) -> str:
        reply = self._stub.Absorb(
            llm_service_pb2.AbsorbRequest(
                contributions=[
                    llm_service_pb2.Contribution(
                        sample_id=c.sample_id, path=c.text, agent_id=c.agent_id
                    )
                    for c in contributions
                ]
            ),
            timeout=self._timeout,
        )
        return reply.version.version
