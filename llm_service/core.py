"""The LLM service's logic, free of gRPC: validation, path caches, versions and absorbing.

`LLMCore` is what the servicer calls and what an in-process simulation calls directly.
Every number it returns is finite (see backends.base.finite_logprobs).
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from lada import metrics
from lada.config import ABSORB_CONTINUE, ABSORB_ROUTE_GATE
from lada.gate import AdapterGate
from lada.modeling import PathLogProbs
from lada.tasks import Problem, format_prompt, is_correct
from llm_service.absorb import (
    AbsorbDiverged,
    Example,
    TrainingOptions,
    replay_candidates,
    sound_replay,
    train_adapter,
)
from llm_service.absorbed import (
    CONTRIBUTIONS_FILE,
    cumulative,
    read_contributions,
    write_contributions,
)
from llm_service.backends.base import GeneratedPath, LLMBackend
from llm_service.cache import LRUCache, SharedPathCache, directory_digest
from llm_service.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from llm_service.gate import replay_to_train
from llm_service.settings import LLMServiceExtras
from llm_service.types import (
    BASE_VERSION,
    AbsorbOverrides,
    Contribution,
    GenerateResult,
    PathResult,
    SampleResult,
    Sampling,
    ScoredCompletion,
    ScoreResult,
)
from llm_service.versions import VERSIONS_FILE, VersionInfo, VersionRegistry, now_ms

log = logging.getLogger("lada.llm.core")
_T = TypeVar("_T")
MAX_LISTED = 20  # unknown IDs named in one error message
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
GREEDY = Sampling(n=1, temperature=0.0)  # the replay's and the gate's paths of a version
GATE_BASE_ANSWERS = 1000  # public samples whose base answers a gate learns from, at most


@dataclass(frozen=True)
class Limits:
    """Per-request ceilings; the values (and defaults) come from lada.config."""

    max_paths_per_request: int
    max_tokens_limit: int
    max_samples_per_request: int
    max_absorb_contributions: int
    max_lora_rank: int


@dataclass(frozen=True)
class _Plan:
    """How one absorb trains: from which adapter, on what, replaying whose own paths."""

    start: Path | None  # the adapter trained further; None: a fresh one on the base model
    examples: list[Example]
    replay_version: str
    replay_exclude: set[str]
    absorbed: list[Contribution]  # the new version's cumulative contributions


@dataclass
class _Item:
    sample_id: str
    prompt: str
    answer: str | None
    key: tuple[object, ...] = field(default_factory=tuple)


class LLMCore:
    """Generate, score and absorb over one backend and one public pool."""

    def __init__(
        self,
        backend: LLMBackend,
        pool: Sequence[Problem],
        limits: Limits,
        extras: LLMServiceExtras,
        state_dir: Path,
        seed: int = 0,
        shared: SharedPathCache | None = None,
    ) -> None:
        self.backend = backend
        self.pool = {p.id: p for p in pool}
        self.limits = limits
        self.extras = extras
        self.state_dir = state_dir
        self.seed = seed
        self.cache: LRUCache[SampleResult] = LRUCache(extras.cache_entries)
        self.shared = shared  # the Redis path cache behind the LRU (None: in-process only)
        self.generate_calls = 0  # backend generation calls (cache misses that generated)
        self._version_keys: dict[str, str] = {}
        self.versions = VersionRegistry(state_dir / VERSIONS_FILE)
        self._absorbing = threading.Lock()
        self._gates: dict[str, AdapterGate] = {}
        self._base_answer_memo: list[tuple[str, bool]] | None = None
        for info in self.versions.adapters():
            self._serve(info.version, Path(info.adapter_dir))

    # ---- generation ------------------------------------------------------------------
    def generate(
        self,
        sample_ids: Sequence[str],
        prompts: Sequence[str],
        sampling: Sampling,
        model_version: str = "",
    ) -> GenerateResult:
        """`sampling.n` paths per sample ID then per raw prompt; cached per sampling and per
        the model that answers each (a prompt a version's gate keeps on the base model
        reuses the base's paths: the same weights give the same paths)."""
        version = self._version(model_version)
        sampling = self._checked_sampling(sampling)
        self._check_count(len(sample_ids) + len(prompts), "sample_ids + prompts")
        items = self._resolve(sample_ids, "sample_ids") + [_Item("", p, None) for p in prompts]
        n_ids = len(sample_ids)
        for index, item in enumerate(items):
            where = f"sample_ids[{index}]" if item.sample_id else f"prompts[{index - n_ids}]"
            self._check_prompt(item.prompt, sampling.max_tokens, where)
        found: dict[tuple[object, ...], SampleResult] = {}
        answering = self.routes([item.prompt for item in items], version)
        for backend_version, rows in _rows_by(answering).items():
            group = [items[i] for i in rows]
            for item in group:
                kind = "sample" if item.sample_id else "prompt"
                item.key = (kind, item.sample_id or item.prompt, backend_version, sampling)
            found.update(self._paths_for(group, sampling, backend_version))
        return GenerateResult([found[item.key] for item in items], version)

    def _paths_for(
        self, items: list[_Item], sampling: Sampling, version: str
    ) -> dict[tuple[object, ...], SampleResult]:
        """Cached results as hits; one backend call for every distinct item not cached.
        `version` is the backend version that answers every item (the caller routed them)."""
        found: dict[tuple[object, ...], SampleResult] = {}
        todo: dict[tuple[object, ...], _Item] = {}
        for item in items:
            if item.key in found or item.key in todo:
                continue
            cached = self.cache.get(item.key)
            if cached is None:
                todo[item.key] = item
            else:
                found[item.key] = _as_hit(cached)
        shared_keys = self._shared_lookup(todo, found, sampling, version)
        if not todo:
            return found
        pending = list(todo.values())
        self.generate_calls += 1
        raw = self.backend.generate([i.prompt for i in pending], sampling, version)
        fresh: dict[str, SampleResult] = {}
        for item, paths in zip(pending, raw, strict=True):
            consistent = self._consistent(item.prompt, paths, version)
            result = SampleResult(
                item.sample_id,
                item.prompt,
                [_path_result(p, item.answer) for p in consistent],
                False,
            )
            self.cache.put(item.key, result)
            found[item.key] = result
            if item.key in shared_keys:
                fresh[shared_keys[item.key]] = result
        generated = sum(len(p.token_ids) for paths in raw for p in paths)
        metrics.TOKENS_GENERATED.labels(self.backend.name).inc(generated)
        log.info(
            "generated",
            extra={"samples": len(pending), "tokens": generated, "version": version},
        )
        if self.shared is not None:
            self.shared.put_many(fresh)
        return found

    def _shared_lookup(
        self,
        todo: dict[tuple[object, ...], _Item],
        found: dict[tuple[object, ...], SampleResult],
        sampling: Sampling,
        version: str,
    ) -> dict[tuple[object, ...], str]:
        """Move the items the shared cache holds from `todo` to `found` (and the LRU).

        Returns the Redis key of every item still to generate, for storing its result.
        """
        version_key = self._version_key(version) if self.shared is not None and todo else None
        if self.shared is None or version_key is None:
            return {}
        keys = {
            key: self.shared.key(
                version_key,
                [
                    key[0],
                    item.sample_id,
                    item.prompt,
                    [sampling.n, sampling.temperature, sampling.top_p],
                    [sampling.max_tokens, sampling.seed],
                ],
            )
            for key, item in todo.items()
        }
        cached = self.shared.get_many(list(keys.values()))
        for key, result in zip(list(keys), cached, strict=True):
            if result is None:
                continue
            stored = SampleResult(result.sample_id, result.prompt, result.paths, False)
            self.cache.put(key, stored)
            found[key] = _as_hit(stored)
            del todo[key]
            del keys[key]
        return keys

    def _version_key(self, version: str) -> str | None:
        """`version` as the shared cache names it: base, or name-<adapter digest>.

        Two replicas may each have trained their own `v1`; the digest keeps them apart.
        None (skip the shared cache) when the adapter cannot be read.
        """
        if version not in self._version_keys:
            info = self.versions.get(version)
            adapter = info.adapter_dir if info is not None else ""
            name = version
            if adapter:
                try:
                    name = f"{version}-{directory_digest(Path(adapter))[:16]}"
                except OSError as exc:
                    log.warning(
                        "cannot digest the adapter; shared path cache skipped for it",
                        extra={"version": version, "error": str(exc)},
                    )
                    return None
            self._version_keys[version] = name
        return self._version_keys[version]

    def _consistent(
        self, prompt: str, paths: list[GeneratedPath], version: str
    ) -> list[GeneratedPath]:
        """Re-score paths whose text does not re-tokenize to the generated ids.

        Byte-level BPE can sample a non-canonical split; the reported log-prob must be the
        one ScorePaths gives for the reported text, so such paths are scored again.
        """
        ids = [self.backend.pair_ids(prompt, p.text)[1] for p in paths]
        redo = [i for i, p in enumerate(paths) if ids[i] != p.token_ids]
        if not redo:
            return paths
        scores = self.backend.score([prompt] * len(redo), [paths[i].text for i in redo], version)
        out = list(paths)
        for i, score in zip(redo, scores, strict=True):
            p = paths[i]
            out[i] = GeneratedPath(p.text, ids[i], score.token_logprobs, p.finish_reason, score)
        return out

    # ---- routing (llm_service/gate.py) ------------------------------------------------
    def _serve(self, version: str, adapter_dir: Path, gate: AdapterGate | None = None) -> None:
        """Load a version's adapter into the backend, and its gate: the one just fitted, or
        the one saved beside the adapter (none: the adapter answers every prompt)."""
        self.backend.add_version(version, adapter_dir)
        gate = gate or AdapterGate.load(adapter_dir)
        if gate is not None:
            self._gates[version] = gate

    def routes(self, prompts: Sequence[str], version: str) -> list[str]:
        """The backend version that answers each prompt: `version`, or base where the
        version's gate keeps its adapter away."""
        gate = self._gates.get(version)
        if gate is None:
            return [version] * len(prompts)
        return [version if hit else BASE_VERSION for hit in gate.routes(prompts)]

    def _per_route(
        self, prompts: list[str], version: str, call: Callable[[list[int], str], list[_T]]
    ) -> list[_T]:
        """`call(rows, backend_version)` once per backend version the rows route to, its
        results put back in the prompts' order."""
        out: dict[int, _T] = {}
        for backend_version, rows in _rows_by(self.routes(prompts, version)).items():
            out.update(zip(rows, call(rows, backend_version), strict=True))
        return [out[i] for i in range(len(prompts))]

    def _routed_score(
        self, prompts: list[str], completions: list[str], version: str
    ) -> list[PathLogProbs]:
        return self._per_route(
            prompts,
            version,
            lambda rows, to: self.backend.score(
                [prompts[i] for i in rows], [completions[i] for i in rows], to
            ),
        )

    # ---- scoring ---------------------------------------------------------------------
    def score(
        self,
        prompt: str,
        completions: Sequence[str],
        sample_id: str = "",
        model_version: str = "",
        return_token_logprobs: bool = False,
    ) -> ScoreResult:
        """Log-probs of each completion after `prompt` (or the prompt of `sample_id`)."""
        version = self._version(model_version)
        if prompt and sample_id:
            raise InvalidArgument("prompt: must be empty when sample_id is given")
        answer = None
        if sample_id:
            item = self._resolve([sample_id], "sample_id")[0]
            prompt, answer = item.prompt, item.answer
        if not prompt:
            raise InvalidArgument("prompt: must not be empty (or give sample_id)")
        if not completions:
            raise InvalidArgument("completions: give at least one completion to score")
        self._check_count(len(completions), "completions")
        self._check_prompt(prompt, 0, "prompt")
        for index, completion in enumerate(completions):
            total = sum(len(ids) for ids in self.backend.pair_ids(prompt, completion))
            if total > self.backend.context_length:
                raise InvalidArgument(
                    f"completions[{index}]: prompt + completion is {total} tokens, above the "
                    f"model's context of {self.backend.context_length} tokens"
                )
        scores = self._routed_score([prompt] * len(completions), list(completions), version)
        return ScoreResult(
            [
                ScoredCompletion(
                    s.joint,
                    s.normalized,
                    s.token_count,
                    s.token_logprobs if return_token_logprobs else [],
                    answer is not None and is_correct(c, answer),
                )
                for s, c in zip(scores, completions, strict=True)
            ],
            version,
        )

    # ---- absorbing -------------------------------------------------------------------
    def absorb(
        self, contributions: Sequence[Contribution], overrides: AbsorbOverrides | None = None
    ) -> VersionInfo:
        """Train a LoRA adapter on the contributions and serve it as the next version."""
        options = self._training_options(overrides or AbsorbOverrides())
        examples = self._absorb_examples(contributions)
        if not self._absorbing.acquire(blocking=False):
            raise ResourceExhausted("absorb: another absorb is already training; retry later")
        try:
            return self._absorb_locked(contributions, examples, options)
        finally:
            self._absorbing.release()

    def _absorb_locked(
        self,
        contributions: Sequence[Contribution],
        examples: list[Example],
        options: TrainingOptions,
    ) -> VersionInfo:
        parent = self.versions.get(self.versions.serving)
        assert parent is not None
        plan = (  # absorb_mode was validated at start; see llm_service/absorb.py
            self._continue_plan(parent, contributions, examples, options)
            if self.extras.absorb_mode == ABSORB_CONTINUE
            else self._rebase_plan(parent, contributions)
        )
        name = self.versions.next_name()
        replay = self._replay(plan.replay_exclude, len(plan.examples), plan.replay_version)
        out_dir = self.state_dir / "adapters" / name
        shutil.rmtree(out_dir, ignore_errors=True)
        gate = None
        if self.extras.absorb_route == ABSORB_ROUTE_GATE:  # every prompt the chain absorbed
            prompts = [format_prompt(self.pool[c.sample_id].question) for c in plan.absorbed]
            answers = self._base_answers() if self.extras.absorb_gate_base_check else []
            gate = AdapterGate(prompts, [p for p, _ in replay], answers)
        trained_replay = replay_to_train(gate, replay, self.extras.replay_trains_adapter)
        try:
            trained = train_adapter(
                self.backend.settings.model,
                plan.start,
                plan.examples,
                options,
                out_dir,
                trained_replay,
            )
            write_contributions(out_dir, plan.absorbed)
            if gate is not None:
                gate.save(out_dir)
            self._serve(name, out_dir, gate)
        except AbsorbDiverged as exc:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise FailedPrecondition(f"{exc}; still serving {parent.version}") from exc
        except Exception:
            shutil.rmtree(out_dir, ignore_errors=True)
            log.exception("absorb failed", extra={"parent": parent.version})
            raise
        absorbed = sorted(set(parent.absorbed_ids) | {c.sample_id for c in plan.absorbed})
        info = VersionInfo(
            version=name,
            parent=parent.version,
            samples_absorbed=len(absorbed),
            created_unix_ms=now_ms(),
            final_loss=trained.final_loss,
            adapter_dir=str(out_dir),
            lora_rank=trained.lora_rank,
            absorbed_ids=absorbed,
            samples_replayed=len(replay),
            replay_trained=len(trained_replay),
            train_steps=trained.steps,
            absorb_mode=self.extras.absorb_mode,
            absorb_route=self.extras.absorb_route,
        )
        self.versions.add_and_serve(info)
        log.info(
            "absorbed",
            extra={
                "version": name,
                "parent": parent.version,
                "mode": info.absorb_mode,
                "contributions": len(contributions),
                "examples": len(plan.examples),
                "replayed": len(replay),
                "replay_trained": len(trained_replay),
                "steps": trained.steps,
                "first_loss": trained.first_loss,
                "final_loss": trained.final_loss,
            },
        )
        return info

    def _continue_plan(
        self,
        parent: VersionInfo,
        contributions: Sequence[Contribution],
        examples: list[Example],
        options: TrainingOptions,
    ) -> _Plan:
        """Train the parent's adapter further on the new paths, replaying the parent's own."""
        if parent.adapter_dir and options.lora_rank != parent.lora_rank:
            raise InvalidArgument(
                f"options.lora_rank: version {parent.version} has rank {parent.lora_rank}; "
                "in absorb_mode continue a child version trains its parent's adapter at the "
                "same rank"
            )
        start = Path(parent.adapter_dir) if parent.adapter_dir else None
        absorbed = cumulative(self._absorbed_by(parent, required=False), contributions)
        exclude = {c.sample_id for c in contributions}
        return _Plan(start, examples, parent.version, exclude, absorbed)

    def _rebase_plan(self, parent: VersionInfo, contributions: Sequence[Contribution]) -> _Plan:
        """A fresh adapter on everything the chain absorbed, replaying base's own paths."""
        absorbed = cumulative(self._absorbed_by(parent, required=True), contributions)
        examples = self._examples(absorbed, f"{parent.version}'s {CONTRIBUTIONS_FILE}")
        exclude = {c.sample_id for c in absorbed}
        return _Plan(None, examples, BASE_VERSION, exclude, absorbed)

    def _absorbed_by(self, parent: VersionInfo, required: bool) -> list[Contribution]:
        """The cumulative contributions `parent` was trained on (none for base)."""
        if not parent.adapter_dir:
            return []
        try:
            return read_contributions(Path(parent.adapter_dir))
        except FileNotFoundError:
            if required:
                raise FailedPrecondition(
                    f"absorb_mode rebase: version {parent.version} has no {CONTRIBUTIONS_FILE} "
                    "(trained before versions recorded it), so it cannot be rebuilt from "
                    "base; serve with absorb_mode continue"
                ) from None
            log.warning(
                "parent has no contributions file; the child records only its own",
                extra={"parent": parent.version},
            )
            return []

    def _replay(self, exclude: set[str], contributed: int, version: str) -> list[Example]:
        """`version`'s own sound greedy paths on public samples outside `exclude`."""
        count = round(self.extras.absorb_replay_ratio * contributed)
        seed = self.seed + len(self.versions.all())  # a fresh draw for each version
        candidates = self._within_context(
            replay_candidates(list(self.pool.values()), exclude, count, seed)
        )

        def write(problems: Sequence[Problem]) -> list[str]:
            return [r.paths[0].text if r.paths else "" for r in self._greedy(problems, version)]

        return sound_replay(candidates, write, count)

    def _base_answers(self) -> list[tuple[str, bool]]:
        """(prompt, whether the base model's greedy answer is right) on up to
        GATE_BASE_ANSWERS public samples: what a gate learns where the base is weak from.
        Computed once: the base model never changes (and its paths are cached)."""
        if self._base_answer_memo is None:
            problems = list(self.pool.values())
            if len(problems) > GATE_BASE_ANSWERS:
                problems = random.Random(self.seed).sample(problems, GATE_BASE_ANSWERS)
            problems = self._within_context(problems)
            results = self._greedy(problems, BASE_VERSION)
            self._base_answer_memo = [
                (format_prompt(p.question), bool(r.paths and r.paths[0].correct))
                for p, r in zip(problems, results, strict=True)
            ]
        return self._base_answer_memo

    def _within_context(self, problems: Sequence[Problem]) -> list[Problem]:
        """The problems whose prompts leave room for a greedy path in the context."""
        context = self.backend.context_length - GREEDY.max_tokens
        return [
            p
            for p in problems
            if len(self.backend.prompt_ids(format_prompt(p.question))) <= context
        ]

    def _greedy(self, problems: Sequence[Problem], version: str) -> list[SampleResult]:
        """`version`'s greedy path on each problem, in requests of at most the service's own
        limit (replay candidates: 6 per path)."""
        step = self.limits.max_samples_per_request
        ids = [p.id for p in problems]
        return [
            result
            for start in range(0, len(ids), step)
            for result in self.generate(ids[start : start + step], [], GREEDY, version).results
        ]

    def _absorb_examples(self, contributions: Sequence[Contribution]) -> list[Example]:
        if not contributions:
            raise InvalidArgument("contributions: give at least one contribution")
        if len(contributions) > self.limits.max_absorb_contributions:
            raise InvalidArgument(
                f"contributions: {len(contributions)} above the limit of "
                f"{self.limits.max_absorb_contributions} per absorb"
            )
        for index, c in enumerate(contributions):
            if not c.path.strip():
                raise InvalidArgument(f"contributions[{index}].path: must not be empty")
        return self._examples(contributions, "contributions.sample_id")

    def _examples(self, contributions: Sequence[Contribution], field_name: str) -> list[Example]:
        """(prompt, path) pairs; a sample ID outside the public pool is NOT_FOUND."""
        items = self._resolve([c.sample_id for c in contributions], field_name)
        return [(item.prompt, c.path) for item, c in zip(items, contributions, strict=True)]

    def _training_options(self, overrides: AbsorbOverrides) -> TrainingOptions:
        extras = self.extras
        epochs = overrides.epochs or extras.absorb_epochs
        rate = overrides.learning_rate or extras.absorb_learning_rate
        rank = overrides.lora_rank or extras.absorb_lora_rank
        if not 1 <= epochs <= 100:
            raise InvalidArgument(f"options.epochs: {epochs} outside 1..100")
        if not (math.isfinite(rate) and 0.0 < rate <= 1.0):
            raise InvalidArgument(f"options.learning_rate: {rate} outside (0, 1]")
        if not 1 <= rank <= self.limits.max_lora_rank:
            raise InvalidArgument(
                f"options.lora_rank: {rank} outside 1..{self.limits.max_lora_rank} "
                "(the engine's max LoRA rank)"
            )
        return TrainingOptions(
            epochs,
            rate,
            rank,
            extras.absorb_batch_size,
            self.seed,
            extras.absorb_anchor_weight,
            min_steps=0 if overrides.epochs else extras.absorb_min_steps,
        )

    # ---- versions --------------------------------------------------------------------
    def list_versions(self) -> tuple[list[VersionInfo], str]:
        return self.versions.all(), self.versions.serving

    @property
    def serving_version(self) -> str:
        return self.versions.serving

    def close(self) -> None:
        self.backend.close()

    # ---- validation ------------------------------------------------------------------
    def _version(self, requested: str) -> str:
        version = requested or self.versions.serving
        if self.versions.get(version) is None:
            known = ", ".join(v.version for v in self.versions.all())
            raise NotFound(f"model_version: unknown version {version!r}; known: {known}")
        return version

    def _checked_sampling(self, sampling: Sampling) -> Sampling:
        limits = self.limits
        if not 1 <= sampling.n <= limits.max_paths_per_request:
            raise InvalidArgument(
                f"sampling.n: {sampling.n} outside 1..{limits.max_paths_per_request} "
                "(max_paths_per_request)"
            )
        if not 1 <= sampling.max_tokens <= limits.max_tokens_limit:
            raise InvalidArgument(
                f"sampling.max_tokens: {sampling.max_tokens} outside "
                f"1..{limits.max_tokens_limit} (max_tokens_limit)"
            )
        if not (math.isfinite(sampling.temperature) and 0.0 <= sampling.temperature <= 10.0):
            raise InvalidArgument(f"sampling.temperature: {sampling.temperature} outside [0, 10]")
        top_p = sampling.top_p or 1.0
        if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
            raise InvalidArgument(f"sampling.top_p: {sampling.top_p} outside (0, 1]")
        if not -(2**63) <= sampling.seed < 2**63:
            raise InvalidArgument(f"sampling.seed: {sampling.seed} is not an int64")
        return Sampling(
            sampling.n, float(sampling.temperature), top_p, sampling.max_tokens, sampling.seed
        )

    def _check_count(self, count: int, name: str) -> None:
        if count == 0 and name != "completions":
            raise InvalidArgument(f"{name}: give at least one sample ID or prompt")
        if count > self.limits.max_samples_per_request:
            raise InvalidArgument(
                f"{name}: {count} above the limit of {self.limits.max_samples_per_request} "
                "(max_samples_per_request)"
            )

    def _check_prompt(self, prompt: str, max_tokens: int, where: str) -> None:
        if not prompt.strip():
            raise InvalidArgument(f"{where}: prompt must not be empty")
        length = len(self.backend.prompt_ids(prompt))
        context = self.backend.context_length
        if length + max_tokens > context:
            raise InvalidArgument(
                f"{where}: prompt of {length} tokens + max_tokens {max_tokens} exceeds the "
                f"model's context of {context} tokens"
            )

    def _resolve(self, sample_ids: Sequence[str], field_name: str) -> list[_Item]:
        missing = [s for s in dict.fromkeys(sample_ids) if s not in self.pool]
        if missing:
            shown = ", ".join(missing[:MAX_LISTED])
            more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
            raise NotFound(f"{field_name}: unknown sample IDs in the public pool: {shown}{more}")
        items = []
        for sid in sample_ids:
            problem = self.pool[sid]
            items.append(_Item(sid, format_prompt(problem.question), problem.answer))
        return items


def _rows_by(keys: Sequence[str]) -> dict[str, list[int]]:
    """Row indices grouped by key, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return groups


def _path_result(path: GeneratedPath, answer: str | None) -> PathResult:
    scores = path.scores
    return PathResult(
        path.text,
        scores.token_count,
        scores.joint,
        scores.normalized,
        path.finish_reason,
        answer is not None and is_correct(path.text, answer),
    )


def _as_hit(result: SampleResult) -> SampleResult:
    return SampleResult(result.sample_id, result.prompt, result.paths, True)
