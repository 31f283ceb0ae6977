"""Plain results and requests of the LLM service, shared by the core and the client.

Light on purpose (no torch, no grpc): agents and the allocator import these via the client.
"""

from __future__ import annotations

from dataclasses import dataclass

from lada.sampling import Sampling

BASE_VERSION = "base"
__all__ = ["BASE_VERSION", "Sampling"]


@dataclass(frozen=True)
class PathResult:
    """One reasoning path with its log-probs under the generating version, and c(y)."""

    text: str
    token_count: int
    joint_logprob: float
    normalized_logprob: float
    finish_reason: str
    correct: bool


@dataclass(frozen=True)
class SampleResult:
    """The paths of one sample ID (or raw prompt, sample_id == "")."""

    sample_id: str
    prompt: str
    paths: list[PathResult]
    cache_hit: bool


@dataclass(frozen=True)
class GenerateResult:
    results: list[SampleResult]
    model_version: str


@dataclass(frozen=True)
class ScoredCompletion:
    """Log-probs of one completion; `correct` only means something for sample_id requests."""

    joint_logprob: float
    normalized_logprob: float
    token_count: int
    token_logprobs: list[float]
    correct: bool


@dataclass(frozen=True)
class ScoreResult:
    scores: list[ScoredCompletion]
    model_version: str


@dataclass(frozen=True)
class Contribution:
    """A path an agent wrote for a public sample."""

    sample_id: str
    path: str
    agent_id: str = ""


@dataclass(frozen=True)
class AbsorbOverrides:
    """Per-request training options; 0 means the service default."""

    epochs: int = 0
    learning_rate: float = 0.0
    lora_rank: int = 0


@dataclass(frozen=True)
class ModelVersionInfo:
    """A servable version as ListModelVersions reports it."""

    version: str
    parent: str
    samples_absorbed: int
    created_unix_ms: int
    serving: bool
    final_loss: float
    absorb_mode: str = ""  # rebase or continue ("" for base)
    absorb_route: str = ""  # all or gate ("" for base)
