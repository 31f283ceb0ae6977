"""The reference backend: Hugging Face transformers on the local device, one request at a time.

Generation uses `model.generate`; the log-probs of every generated path come from one
scoring forward pass over (prompt ids + path ids), so they match ScorePaths exactly.
Versions are the base model plus LoRA adapters merged into a private copy (small LRU).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from lada.modeling import (
    PathLogProbs,
    completion_logprobs,
    generate_ids,
    load_causal_lm,
    score_completions,
)
from llm_service.backends.base import (
    BackendSettings,
    GeneratedPath,
    LLMBackend,
    Sampling,
    path_scores,
    register_backend,
    trim_at_stop,
)
from llm_service.types import BASE_VERSION

MERGED_MODELS_KEPT = 2  # adapter versions kept merged in memory besides the base model
SCORE_BATCH = 16
GENERATE_BATCH = 16


@register_backend("transformers")
class TransformersBackend(LLMBackend):
    """Merged-weights versions; a lock serialises requests (the reference, not the fast path)."""

    def __init__(self, settings: BackendSettings) -> None:
        super().__init__(settings)
        dtype = getattr(torch, settings.dtype)
        self._dtype = dtype
        self._base, self._tokenizer = load_causal_lm(settings.model, dtype=dtype)
        self._adapters: dict[str, Path] = {}
        self._merged: OrderedDict[str, PreTrainedModel] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def context_length(self) -> int:
        config = self._base.config
        limit = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        return min(int(limit or self.settings.max_model_len), self.settings.max_model_len)

    def add_version(self, version: str, adapter_dir: Path) -> None:
        with self._lock:
            self._merged[version] = self._merge(adapter_dir)
            self._adapters[version] = adapter_dir
            self._evict()

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, version: str
    ) -> list[list[GeneratedPath]]:
        with self._lock:
            model = self._model(version)
            raw = self._sample(model, list(prompts), sampling)
            return self._finish(model, list(prompts), raw, sampling)

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], version: str
    ) -> list[PathLogProbs]:
        with self._lock:
            model = self._model(version)
            scored = score_completions(
                model, self._tokenizer, list(prompts), list(completions), SCORE_BATCH
            )
        return [path_scores(s.token_logprobs) for s in scored]

    # ---- internals ------------------------------------------------------------------
    def _merge(self, adapter_dir: Path) -> PreTrainedModel:
        from peft import PeftModel

        base, _ = load_causal_lm(self.settings.model, dtype=self._dtype)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        merged.eval()
        return merged

    def _model(self, version: str) -> PreTrainedModel:
        if version == BASE_VERSION:
            return self._base
        if version not in self._merged:
            self._merged[version] = self._merge(self._adapters[version])
            self._evict()
        self._merged.move_to_end(version)
        return self._merged[version]

    def _evict(self) -> None:
        while len(self._merged) > MERGED_MODELS_KEPT:
            self._merged.popitem(last=False)

    def _sample(
        self, model: PreTrainedModel, prompts: list[str], sampling: Sampling
    ) -> list[list[list[int]]]:
        """Raw generated ids: per prompt, `n` id lists (padding removed, EOS kept)."""
        encoded = [self.prompt_ids(p) for p in prompts]
        return generate_ids(model, self._tokenizer, encoded, sampling, GENERATE_BATCH)

    def _finish(
        self,
        model: PreTrainedModel,
        prompts: list[str],
        raw: list[list[list[int]]],
        sampling: Sampling,
    ) -> list[list[GeneratedPath]]:
        """Trim at EOS / STOP_TEXT, then score every kept path in batched forward passes."""
        tok = self._tokenizer
        trimmed = []
        for prompt, rows in zip(prompts, raw, strict=True):
            for row in rows:
                zeros = [0.0] * len(row)
                ids, _, stopped = trim_at_stop(row, zeros, self._decode, tok.eos_token_id)
                reason = "stop" if stopped or len(row) < sampling.max_tokens else "length"
                trimmed.append((self.prompt_ids(prompt), ids, reason))
        scored = self._score_ids(model, [(p, c) for p, c, _ in trimmed])
        flat = [
            GeneratedPath(self._decode(c), c, s.token_logprobs, reason, s)
            for (_, c, reason), s in zip(trimmed, scored, strict=True)
        ]
        n = sampling.n
        return [flat[k * n : (k + 1) * n] for k in range(len(prompts))]

    def _score_ids(
        self, model: PreTrainedModel, pairs: list[tuple[list[int], list[int]]]
    ) -> list[PathLogProbs]:
        out: list[PathLogProbs] = [PathLogProbs() for _ in pairs]
        todo = [i for i, (_, c) in enumerate(pairs) if c]
        for start in range(0, len(todo), SCORE_BATCH):
            chunk = todo[start : start + SCORE_BATCH]
            with torch.no_grad():
                values = completion_logprobs(
                    model, [pairs[i] for i in chunk], self._tokenizer.pad_token_id
                )
            for i, v in zip(chunk, values, strict=True):
                out[i] = path_scores(v.tolist())
        return out

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))
