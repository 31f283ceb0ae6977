"""The agent's local model work, with no network: score paths, train one round, evaluate.

`LocalTrainer` is what both the gRPC agent and an in-process simulation drive. Full
fine-tuning for small models; a LoRA adapter (peft) above `lora_threshold_params`.
Paths are text: the student scores them with its own tokenizer (lada.modeling rule).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel

from lada.config import (
    DISTILL_ROUTE_GATE,
    DISTILL_ROUTES,
    PRIVATE_PATHS,
    PRIVATE_PATHS_OWN,
    PRIVATE_PATHS_REFERENCE,
    ConfigError,
    TrainerSettings,
    check_choice,
    check_nonnegative,
)
from lada.gate import GATE_FILE, AdapterGate
from lada.modeling import (
    batched_completion_logprobs,
    completion_log_distributions,
    encode_pair,
    generate,
    load_causal_lm,
    score_completions,
    token_kl,
)
from lada.tasks import Problem, format_prompt, format_target, is_correct
from slm_agent.losses import DistillationLoss, PathSet, PrivateExample

log = logging.getLogger("lada.agent.trainer")

WEIGHTS_DIR = "model"
ADAPTER_DIR = "adapter"
EXPERT_DIR = "expert"  # distill_route gate: the expert's weights and its gate.json
EXPERT_PROMPTS_FILE = "prompts.json"  # in EXPERT_DIR: the public prompts taught and solved
# private_paths own: the agent's own solved private paths, kept so a restart trains on the same
OWN_PRIVATE_FILE = "own_private_paths.json"
# tokenized (prompt, completion) pairs a scorer keeps: a round of `full` scores about 3,000
ENCODED_CACHE_ENTRIES = 20_000


@dataclass
class TrainReport:
    """What one round of training did (numbers for logs and the status RPC)."""

    steps: int = 0
    seconds: float = 0.0
    mean_parts: dict[str, float] = field(default_factory=dict)


class ModelScorer:
    """The differentiable StudentScorer over a causal LM (batched, right padding)."""

    def __init__(self, model: PreTrainedModel, tokenizer: Any, batch_size: int = 16) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # (prompt, completion) -> token ids: a round scores the same texts once per epoch
        self._encoded: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def token_logprobs(
        self, prompts: Sequence[str], completions: Sequence[str], end: bool = False
    ) -> list[Tensor]:
        """Per-token log-probs of each completion, with gradients; empty ones give [].

        `end`: score EOS after each completion too (training targets: the zoo trained every
        model to stop after `#### N`; path scores `nlp` never include it)."""
        pairs = [self._encode(p, c) for p, c in zip(prompts, completions, strict=True)]
        eos = self.tokenizer.eos_token_id
        if end and eos is not None:
            pairs = [(a, b + [eos]) if b else (a, b) for a, b in pairs]
        return batched_completion_logprobs(
            self.model, pairs, self.tokenizer.pad_token_id, self.batch_size
        )

    def _encode(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        """encode_pair, remembered (up to ENCODED_CACHE_ENTRIES pairs, then started afresh)."""
        key = (prompt, completion)
        pair = self._encoded.get(key)
        if pair is None:
            if len(self._encoded) >= ENCODED_CACHE_ENTRIES:
                self._encoded.clear()
            pair = self._encoded[key] = encode_pair(self.tokenizer, prompt, completion)
        return pair

    def normalized_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """nlp_S per path: joint log-prob over the path's own token count (0 when empty)."""
        rows = self.token_logprobs(prompts, completions)
        return torch.stack([r.mean() if r.numel() else self._zero() for r in rows])

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """lp_S per path: the joint log-prob, summed over the path's tokens (0 when empty)."""
        rows = self.token_logprobs(prompts, completions)
        return torch.stack([r.sum() if r.numel() else self._zero() for r in rows])

    def token_nll(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """Mean next-token NLL over every completion token of the batch, EOS included."""
        rows = [r for r in self.token_logprobs(prompts, completions, end=True) if r.numel()]
        return -torch.cat(rows).mean() if rows else self._zero()

    def _zero(self) -> Tensor:
        return torch.zeros((), device=next(self.model.parameters()).device)


def count_parameters(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())


def private_examples(problems: Sequence[Problem]) -> list[PrivateExample]:
    """The agent's private training pairs (prompt, reference path)."""
    return [PrivateExample(format_prompt(p.question), format_target(p.reference)) for p in problems]


def solved_examples(problems: Sequence[Problem], paths: Sequence[str]) -> list[PrivateExample]:
    """(prompt, path) for each path that reaches its problem's final answer: what a client
    holding questions and answers, but no worked solutions, can train on."""
    return [
        PrivateExample(format_prompt(p.question), format_target(path))
        for p, path in zip(problems, paths, strict=True)
        if is_correct(path, p.answer)
    ]


def check_private_paths(value: str) -> None:
    """ConfigError naming the setting when it is not one of PRIVATE_PATHS."""
    check_choice("private_paths", value, PRIVATE_PATHS)


class LocalTrainer:
    """One student model plus its loss: scoring, greedy evaluation, one round of training."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        loss: DistillationLoss,
        private: Sequence[Problem],
        settings: TrainerSettings | None = None,
    ) -> None:
        self.settings = settings or TrainerSettings()
        check_lr_schedule(self.settings.lr_schedule)  # at start, not at the first round
        check_lr_schedule(self.settings.expert_lr_schedule, "expert_lr_schedule")
        check_nonnegative("private_kl_weight", self.settings.private_kl_weight)
        check_private_paths(self.settings.private_paths)
        self.tokenizer = tokenizer
        self.loss = loss
        self.private_problems = list(private)
        self.private_prompts = [format_prompt(p.question) for p in self.private_problems]
        # L_sft(D_k)'s pairs; under private_paths own, found at first use (a greedy pass)
        self._private: list[PrivateExample] | None = (
            private_examples(private)
            if self.settings.private_paths == PRIVATE_PATHS_REFERENCE
            else None
        )
        self.base_parameters = count_parameters(model)
        self.uses_lora = self.base_parameters > self.settings.lora_threshold_params
        self.routes_to_expert = _check_distill_route(self.settings, self.uses_lora)
        self.model = _with_lora(model, self.settings.lora_rank) if self.uses_lora else model
        self.scorer = ModelScorer(self.model, tokenizer, self.settings.score_batch_size)
        self._round_start: torch.nn.Module | None = None  # in a round with private_kl_weight
        # distill_route gate: the expert (a copy of the student made at its first round), the
        # prompts it was taught, and the gate fitted on them against the private prompts
        self.expert: PreTrainedModel | None = None
        self._expert_scorer: ModelScorer | None = None  # kept: its encode cache spans rounds
        self.expert_prompts: list[str] = []
        # public prompts the student answered right before a round taught them: the gate
        # keeps these on the student, as the private ones
        self.solved_prompts: list[str] = []
        self.gate: AdapterGate | None = None

    @classmethod
    def from_path(
        cls,
        model_dir: str | Path,
        loss: DistillationLoss,
        private: Sequence[Problem],
        settings: TrainerSettings | None = None,
        checkpoint: Path | None = None,
    ) -> LocalTrainer:
        """Load the base model, then this agent's trained weights from `checkpoint` if any."""
        source = (
            checkpoint / WEIGHTS_DIR
            if checkpoint and (checkpoint / WEIGHTS_DIR).is_dir()
            else model_dir
        )
        model, tokenizer = load_causal_lm(source)
        trainer = cls(model, tokenizer, loss, private, settings)
        if checkpoint and (checkpoint / OWN_PRIVATE_FILE).is_file():
            rows = json.loads((checkpoint / OWN_PRIVATE_FILE).read_text())
            trainer._private = [PrivateExample(**row) for row in rows]
        if checkpoint and (checkpoint / ADAPTER_DIR).is_dir():
            trainer._load_adapter(checkpoint / ADAPTER_DIR)
        if checkpoint and (checkpoint / EXPERT_DIR).is_dir():
            trainer._load_expert(checkpoint / EXPERT_DIR)
        return trainer

    @property
    def private(self) -> list[PrivateExample]:
        """The pairs L_sft(D_k) trains on: the reference paths, or (private_paths own) the
        paths the model this agent started with wrote and got right."""
        if self._private is None:
            problems = self.private_problems
            self._private = solved_examples(
                problems, self.greedy_answers([p.question for p in problems])
            )
            log.info(
                "own private paths",
                extra={"solved": len(self._private), "private": len(problems)},
            )
        return self._private

    # ---- measuring (each prompt by the model that answers it) ------------------------
    def routes(self, prompts: Sequence[str]) -> list[bool]:
        """Whether the expert (True) or the student answers each formatted prompt."""
        if self.gate is None:
            return [False] * len(prompts)
        return self.gate.routes(prompts)

    def _per_model(
        self, prompts: Sequence[str], call: Callable[[PreTrainedModel, list[int]], list[Any]]
    ) -> list[Any]:
        """`call(model, rows)` once per model the prompts route to, its results put back in
        the prompts' order."""
        out: dict[int, Any] = {}
        routed = self.routes(prompts)
        for model, to_expert in ((self.model, False), (self.expert, True)):
            rows = [i for i, hit in enumerate(routed) if hit == to_expert]
            if rows and model is not None:
                model.eval()
                out.update(zip(rows, call(model, rows), strict=True))
        return [out[i] for i in range(len(prompts))]

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """nlp_S per path, no gradients (the numbers that are reported)."""

        def call(model: PreTrainedModel, rows: list[int]) -> list[float]:
            scores = score_completions(
                model,
                self.tokenizer,
                [prompts[i] for i in rows],
                [completions[i] for i in rows],
                self.settings.score_batch_size,
            )
            return [s.normalized for s in scores]

        return self._per_model(prompts, call)

    def greedy_answers(self, questions: Sequence[str]) -> list[str]:
        """The student's greedy completion for each question."""
        prompts = [format_prompt(q) for q in questions]

        def call(model: PreTrainedModel, rows: list[int]) -> list[str]:
            chosen = [prompts[i] for i in rows]
            limit = self.settings.max_new_tokens
            return [o[0] for o in generate(model, self.tokenizer, chosen, limit, greedy=True)]

        return self._per_model(prompts, call)

    def greedy_correct(self, problems: Sequence[Problem]) -> list[bool]:
        """Whether the student's greedy answer is right, per problem."""
        answers = self.greedy_answers([p.question for p in problems])
        return [is_correct(a, p.answer) for a, p in zip(answers, problems, strict=True)]

    def sample_paths(self, questions: Sequence[str], n: int, seed: int) -> list[list[str]]:
        """`n` sampled paths per question (own negatives, candidate contributions)."""
        if n <= 0 or not questions:
            return [[] for _ in questions]
        prompts = [format_prompt(q) for q in questions]

        def call(model: PreTrainedModel, rows: list[int]) -> list[list[str]]:
            return generate(
                model,
                self.tokenizer,
                [prompts[i] for i in rows],
                self.settings.max_new_tokens,
                greedy=False,
                temperature=self.settings.own_path_temperature,
                n=n,
                seed=seed,
            )

        return self._per_model(prompts, call)

    # ---- training ------------------------------------------------------------------
    def train_round(
        self,
        path_sets: Sequence[PathSet],
        round_number: int,
        solved: Sequence[bool] | None = None,
    ) -> TrainReport:
        """`epochs` passes over the allocated samples, each step with a private batch.

        A batch whose samples have no correct path trains on the private term alone
        (L = L_sft(D_k) when the distillation sum is empty); no allocation, no steps.
        Under distill_route gate the expert then takes its own round on the same samples at
        its rate, and the gate is refitted: `solved` says which samples the agent answered
        right before the round, and those the student answered stay with the student.
        """
        if not path_sets:
            return TrainReport()
        report = self._train(self.model, self.scorer, path_sets, round_number, self.settings)
        if not self.routes_to_expert:
            return report
        if self.expert is None:
            self._set_expert(copy.deepcopy(self.model))
        expert_settings = replace(
            self.settings,
            learning_rate=self.settings.expert_learning_rate,
            epochs=self.settings.expert_epochs,
            lr_schedule=self.settings.expert_lr_schedule,
        )
        assert self.expert is not None and self._expert_scorer is not None
        prompts = [s.prompt for s in path_sets]
        known = self._student_solved(prompts, solved)
        expert = self._train(
            self.expert, self._expert_scorer, path_sets, round_number, expert_settings
        )
        self._sort_prompts(prompts, known)
        self._fit_gate()
        parts = report.mean_parts | {f"expert_{k}": v for k, v in expert.mean_parts.items()}
        return TrainReport(report.steps + expert.steps, report.seconds + expert.seconds, parts)

    def _student_solved(self, prompts: list[str], solved: Sequence[bool] | None) -> list[bool]:
        """Which prompts the student (not the expert) answered right before the round."""
        if solved is None:
            return [False] * len(prompts)
        if len(solved) != len(prompts):
            raise ValueError(f"solved: {len(solved)} flags for {len(prompts)} samples")
        routed = self.routes(prompts)
        return [ok and not to_expert for ok, to_expert in zip(solved, routed, strict=True)]

    def _sort_prompts(self, prompts: list[str], known: list[bool]) -> None:
        """Each prompt to the side it now belongs to: solved by the student, else taught."""
        for prompt, is_known in zip(prompts, known, strict=True):
            keep, drop = (
                (self.solved_prompts, self.expert_prompts)
                if is_known
                else (self.expert_prompts, self.solved_prompts)
            )
            if prompt in drop:
                drop.remove(prompt)
            if prompt not in keep:
                keep.append(prompt)

    def _train(
        self,
        model: PreTrainedModel,
        scorer: ModelScorer,
        path_sets: Sequence[PathSet],
        round_number: int,
        settings: TrainerSettings,
    ) -> TrainReport:
        """One round of `model` at `settings`' rate, epochs and schedule."""
        started = time.perf_counter()
        rng = random.Random(self.settings.seed * 1_000_003 + round_number)
        torch.manual_seed(self.settings.seed * 1_000_003 + round_number)
        optimizer = torch.optim.AdamW(_trainable(model), lr=settings.learning_rate)
        planned = settings.epochs * math.ceil(len(path_sets) / settings.samples_per_step)
        schedule = _lr_schedule(optimizer, settings.lr_schedule, planned)
        private = _cycle(self.private, rng)
        sums: dict[str, float] = {}
        steps = 0
        self.loss.begin_round(scorer, path_sets)  # e.g. dpo's frozen reference, in eval mode
        self._round_start = _frozen_copy(model) if self.settings.private_kl_weight > 0 else None
        model.train()
        for _ in range(settings.epochs):
            order = list(path_sets)
            rng.shuffle(order)
            for start in range(0, len(order), settings.samples_per_step):
                batch = order[start : start + settings.samples_per_step]
                private_batch = [next(private) for _ in range(self._private_batch_size())]
                parts = self._step(model, scorer, optimizer, batch, private_batch)
                schedule.step()
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + value
                steps += 1
        model.eval()
        self._round_start = None
        means = {k: v / steps for k, v in sums.items()}
        return TrainReport(steps, time.perf_counter() - started, means)

    def _step(
        self,
        model: PreTrainedModel,
        scorer: ModelScorer,
        optimizer: torch.optim.Optimizer,
        batch: Sequence[PathSet],
        private_batch: Sequence[PrivateExample],
    ) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        output = self.loss.compute_loss(scorer, batch, private_batch)
        total, parts = output.total, output.parts
        if self._round_start is not None and private_batch:
            kl = self._private_kl(model, private_batch)
            total = total + self.settings.private_kl_weight * kl
            parts = parts | {"private_kl": float(kl.detach()), "total": float(total.detach())}
        if not math.isfinite(parts["total"]):
            log.warning("skipping a step with a non-finite loss", extra={"parts": parts})
            return parts
        total.backward()
        torch.nn.utils.clip_grad_norm_(_trainable(model), self.settings.max_grad_norm)
        optimizer.step()
        return parts

    def _private_kl(
        self, model: PreTrainedModel, private_batch: Sequence[PrivateExample]
    ) -> Tensor:
        """Mean per-token KL(round start || now) over the private paths, EOS included."""
        assert self._round_start is not None
        eos = self.tokenizer.eos_token_id
        end = [eos] if eos is not None else []
        pairs = [self.scorer._encode(e.prompt, e.completion) for e in private_batch]
        pairs = [(p, c + end) for p, c in pairs if c]
        pad = self.tokenizer.pad_token_id
        now = torch.cat(completion_log_distributions(model, pairs, pad))
        with torch.no_grad():
            start = torch.cat(completion_log_distributions(self._round_start, pairs, pad))
        return token_kl(start, now)

    def _fit_gate(self) -> None:
        """The expert's prompts against the private ones and the public ones the student
        solved: the student answers what looks like what it knows, the expert what looks
        like what it was taught. Nothing taught yet (every allocated sample was solved):
        no gate, the student answers everything."""
        if not self.expert_prompts:
            self.gate = None
            return
        known = self.private_prompts + self.solved_prompts
        self.gate = AdapterGate(self.expert_prompts, known)

    def _private_batch_size(self) -> int:
        return min(self.settings.private_per_step, len(self.private))

    # ---- saving --------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Full weights + tokenizer, or only the LoRA adapter when training through peft;
        the expert's weights, the prompts it was taught and the student solved, and its
        gate beside them once it exists."""
        if self._private is not None and self.settings.private_paths == PRIVATE_PATHS_OWN:
            rows = [asdict(e) for e in self._private]
            (directory / OWN_PRIVATE_FILE).write_text(json.dumps(rows))
        if self.uses_lora:
            self.model.save_pretrained(str(directory / ADAPTER_DIR))
        else:
            self.model.save_pretrained(str(directory / WEIGHTS_DIR))
            self.tokenizer.save_pretrained(str(directory / WEIGHTS_DIR))
        if self.expert is not None:
            expert_dir = directory / EXPERT_DIR
            self.expert.save_pretrained(str(expert_dir))
            self.tokenizer.save_pretrained(str(expert_dir))
            prompts = {"taught": self.expert_prompts, "solved": self.solved_prompts}
            (expert_dir / EXPERT_PROMPTS_FILE).write_text(json.dumps(prompts))
            if self.gate is not None:
                self.gate.save(expert_dir)
            else:  # nothing taught any more: a stale gate would still route
                (expert_dir / GATE_FILE).unlink(missing_ok=True)

    def _set_expert(self, model: PreTrainedModel) -> None:
        self.expert = model
        self._expert_scorer = ModelScorer(model, self.tokenizer, self.settings.score_batch_size)

    def _load_expert(self, expert_dir: Path) -> None:
        self._set_expert(load_causal_lm(expert_dir)[0])
        prompts = json.loads((expert_dir / EXPERT_PROMPTS_FILE).read_text())
        self.expert_prompts, self.solved_prompts = prompts["taught"], prompts["solved"]
        self._fit_gate()

    def _load_adapter(self, adapter_dir: Path) -> None:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(self.model, load_peft_weights(str(adapter_dir)))


def _check_distill_route(settings: TrainerSettings, uses_lora: bool) -> bool:
    """Whether the allocation trains an expert (distill_route gate); a clear error at start."""
    check_choice("distill_route", settings.distill_route, DISTILL_ROUTES)
    if settings.distill_route == DISTILL_ROUTE_GATE and uses_lora:
        raise ConfigError(
            "distill_route: gate trains a full copy of the student, and this model trains "
            "through LoRA (above lora_threshold_params); use distill_route all"
        )
    return settings.distill_route == DISTILL_ROUTE_GATE


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model as the round starts, without gradients (`private_kl_weight`'s reference)."""
    frozen = copy.deepcopy(model).eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return frozen


def _with_lora(model: PreTrainedModel, rank: int) -> Any:
    """Wrap a large model in a trainable LoRA adapter over all linear layers."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0)
    return get_peft_model(model, config)


def _constant(step: int, steps: int) -> float:
    return 1.0


def _linear_decay(step: int, steps: int) -> float:
    """The rate falls in equal steps toward 0 (the last step runs at 1/steps of it), so a
    round ends on small steps, not mid-stride."""
    return max(0.0, 1.0 - step / steps)


# learning-rate multiplier by step of the round (TrainerSettings.lr_schedule)
LR_SCHEDULES = {"constant": _constant, "linear": _linear_decay}


def check_lr_schedule(name: str, setting: str = "lr_schedule") -> None:
    """ConfigError (a ValueError) naming `setting` for a schedule no registry entry has."""
    check_choice(setting, name, sorted(LR_SCHEDULES))


def _lr_schedule(
    optimizer: torch.optim.Optimizer, name: str, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    multiplier = LR_SCHEDULES[name]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: multiplier(step, steps))


def _cycle(items: Sequence[PrivateExample], rng: random.Random) -> Any:
    """Endless reshuffled passes over the private data."""
    while items:
        order = list(items)
        rng.shuffle(order)
        yield from order
