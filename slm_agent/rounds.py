"""One round of agent work as a plain function: measure, train, measure again, report numbers.

No gRPC and no Redis here: the agent loop feeds it what the allocator and the LLM service
returned, and a simulation can feed it the same from in-process objects.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lada.phases import PhaseTimes
from lada.tasks import Problem, format_prompt, is_correct, is_sound
from slm_agent.losses import PathSet
from slm_agent.trainer import LocalTrainer, TrainReport

log = logging.getLogger("lada.agent.rounds")


@dataclass
class AllocatedSample:
    """One public sample the allocator chose for this agent in a round."""

    sample_id: str
    cluster: int = 0
    llm_version: str = ""
    scan_only: bool = False  # a gap scan: score after training and report; never train on it


@dataclass
class RoundAllocation:
    """What GetAllocation hands the agent: the samples it trains on and the public samples it
    is asked to write its own paths for (contribution requests, method.md section 2)."""

    samples: list[AllocatedSample]
    contribution_requests: list[str] = field(default_factory=list)


def ids_by_version(samples: Sequence[AllocatedSample]) -> dict[str, list[str]]:
    """Sample IDs grouped by the LLM version whose paths the allocator assigned to them."""
    grouped: dict[str, list[str]] = {}
    for sample in samples:
        grouped.setdefault(sample.llm_version, []).append(sample.sample_id)
    return grouped


@dataclass
class LLMPath:
    """One of the LLM's reasoning paths as the LLM service scored it."""

    text: str
    normalized_logprob: float
    correct: bool


@dataclass
class PathStat:
    """What the agent measured on one LLM path (numbers only)."""

    llm_normalized_logprob: float
    correct: bool
    slm_normalized_logprob_before: float
    slm_normalized_logprob_after: float


@dataclass
class SampleStat:
    """Per-sample statistics streamed to the allocator: no text, only numbers and flags."""

    sample_id: str
    paths: list[PathStat]
    correct_before: bool
    correct_after: bool
    scan_only: bool = False  # scored after training, not trained on, no greedy answer


@dataclass
class RoundOutcome:
    """Everything a round produced: the report, optional contributions and summary numbers."""

    round: int
    stats: list[SampleStat]
    contributions: dict[str, str] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)  # requested samples it wrote paths for
    accuracy_before: float = 0.0
    accuracy_after: float = 0.0
    correct_path_nlp_before: float = float("nan")
    correct_path_nlp_after: float = float("nan")
    train: TrainReport = field(default_factory=TrainReport)
    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per step

    def summary(self) -> dict[str, Any]:
        """The numbers worth logging and checkpointing (no stats list, no texts)."""
        return {
            "round": self.round,
            "samples": sum(not s.scan_only for s in self.stats),
            "scanned": sum(s.scan_only for s in self.stats),
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "correct_path_nlp_before": _finite_or_none(self.correct_path_nlp_before),
            "correct_path_nlp_after": _finite_or_none(self.correct_path_nlp_after),
            "contributions": len(self.contributions),
            "requested": len(self.requested),
            "requested_contributions": len(set(self.requested) & set(self.contributions)),
            "train_steps": self.train.steps,
            "train_seconds": round(self.train.seconds, 3),
            "seconds": {step: round(value, 3) for step, value in self.seconds.items()},
            "loss": self.train.mean_parts,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundOutcome:
        stats = [
            SampleStat(
                s["sample_id"],
                [PathStat(**p) for p in s["paths"]],
                s["correct_before"],
                s["correct_after"],
                s.get("scan_only", False),
            )
            for s in data["stats"]
        ]
        fields = {k: v for k, v in data.items() if k not in ("stats", "train")}
        return cls(stats=stats, train=TrainReport(**data.get("train", {})), **fields)


def _finite_or_none(value: float) -> float | None:
    """NaN (no correct path to measure) as None, so log lines stay strict JSON."""
    return value if math.isfinite(value) else None


def sample_weights(
    allocation: Sequence[AllocatedSample], cluster_weights: np.ndarray | None
) -> dict[str, float]:
    """w_k(i) = the domain weight of sample i's cluster (1 when no cluster model is known)."""
    if cluster_weights is None or len(cluster_weights) == 0:
        return {a.sample_id: 1.0 for a in allocation}
    top = len(cluster_weights) - 1
    return {a.sample_id: float(cluster_weights[min(max(a.cluster, 0), top)]) for a in allocation}


def build_path_sets(
    problems: Sequence[Problem],
    llm_paths: Mapping[str, Sequence[LLMPath]],
    own_paths: Sequence[Sequence[str]],
    weights: Mapping[str, float],
) -> list[PathSet]:
    """The loss's view of each sample; the agent's own wrong paths join as negatives."""
    sets = []
    for problem, own in zip(problems, own_paths, strict=True):
        paths = llm_paths.get(problem.id, [])
        negatives = [text for text in own if text.strip() and not is_correct(text, problem.answer)]
        sets.append(
            PathSet(
                prompt=format_prompt(problem.question),
                llm_paths=[p.text for p in paths],
                teacher_nlp=[p.normalized_logprob for p in paths],
                correct=[p.correct for p in paths],
                own_negatives=negatives,
                weight=weights.get(problem.id, 1.0),
            )
        )
    return sets


def _score_all(trainer: LocalTrainer, path_sets: Sequence[PathSet]) -> list[list[float]]:
    """nlp_S of every LLM path, grouped per sample (one batched call)."""
    prompts = [s.prompt for s in path_sets for _ in s.llm_paths]
    texts = [t for s in path_sets for t in s.llm_paths]
    flat = trainer.score(prompts, texts) if texts else []
    grouped, offset = [], 0
    for s in path_sets:
        grouped.append(flat[offset : offset + len(s.llm_paths)])
        offset += len(s.llm_paths)
    return grouped


def _mean_correct_nlp(path_sets: Sequence[PathSet], scores: Sequence[Sequence[float]]) -> float:
    values = [
        v
        for s, row in zip(path_sets, scores, strict=True)
        for v, ok in zip(row, s.correct, strict=True)
        if ok
    ]
    return float(np.mean(values)) if values else float("nan")


def pick_contributions(
    problems: Sequence[Problem],
    greedy_answers: Sequence[str],
    sampled: Sequence[Sequence[str]],
    domains: set[str] | None,
) -> dict[str, str]:
    """Per sample of the agent's domains (every sample when `domains` is None), one sound path
    it wrote (right answer, every arithmetic step true): its greedy answer after training, else
    the first such path it sampled this round. A right answer after wrong steps would teach the
    LLM wrong steps."""
    picked: dict[str, str] = {}
    for problem, greedy, paths in zip(problems, greedy_answers, sampled, strict=True):
        if domains is not None and problem.domain not in domains:
            continue
        sound = [t for t in (greedy, *paths) if is_sound(t, problem.answer)]
        if sound:
            picked[problem.id] = sound[0]
    return picked


def run_round(
    trainer: LocalTrainer,
    round_number: int,
    allocation: Sequence[AllocatedSample],
    pool: Mapping[str, Problem],
    llm_paths: Mapping[str, Sequence[LLMPath]],
    cluster_weights: np.ndarray | None = None,
    contribute_domains: set[str] | None = None,
    requested: Sequence[str] = (),
) -> RoundOutcome:
    """Score before, train, score after, greedy correctness before/after, contributions.

    `contribute_domains`: when given, correct paths the agent wrote for allocated public
    samples of those domains become contributions (`pick_contributions`), and so do its
    sound greedy paths, after training, for the `requested` public samples (the allocator
    chose those by domain already). Requested samples are neither trained on nor reported.
    Scanned samples (`scan_only`) are not trained on: they are scored after training and
    reported as `scan_stats`.
    """
    missing = [a.sample_id for a in allocation if a.sample_id not in pool]
    if missing:
        raise KeyError(f"sample_id: not in the agent's public pool: {', '.join(missing[:5])}")
    scans = [a for a in allocation if a.scan_only]
    trained = [a for a in allocation if not a.scan_only]
    problems = [pool[a.sample_id] for a in trained]
    questions = [p.question for p in problems]
    seed = trainer.settings.seed * 1_000_003 + round_number
    times = PhaseTimes()
    with times.phase("own paths"):
        own = trainer.sample_paths(questions, trainer.settings.own_paths_per_sample, seed)
    path_sets = build_path_sets(problems, llm_paths, own, sample_weights(trained, cluster_weights))
    with times.phase("score before"):
        before = _score_all(trainer, path_sets)
    with times.phase("greedy before"):
        correct_before = trainer.greedy_correct(problems)
    with times.phase("train"):
        report = trainer.train_round(path_sets, round_number, correct_before)
    with times.phase("score after"):
        after = _score_all(trainer, path_sets)
    with times.phase("greedy after"):
        answers_after = trainer.greedy_answers(questions)
    correct_after = [is_correct(a, p.answer) for a, p in zip(answers_after, problems, strict=True)]
    stats = [
        SampleStat(
            problem.id,
            [
                PathStat(nlp_l, ok, b, a)
                for nlp_l, ok, b, a in zip(s.teacher_nlp, s.correct, row_b, row_a, strict=True)
            ],
            cb,
            ca,
        )
        for problem, s, row_b, row_a, cb, ca in zip(
            problems, path_sets, before, after, correct_before, correct_after, strict=True
        )
    ]
    if scans:
        with times.phase("scan"):
            stats += scan_stats(trainer, [pool[a.sample_id] for a in scans], llm_paths)
    contributions: dict[str, str] = {}
    asked: list[Problem] = []
    if contribute_domains:
        contributions = pick_contributions(problems, answers_after, own, contribute_domains)
        asked = requested_problems(requested, pool, allocation)
        with times.phase("answer requests"):
            contributions.update(answer_requests(trainer, asked))
    count = max(len(problems), 1)
    return RoundOutcome(
        round=round_number,
        stats=stats,
        contributions=contributions,
        requested=[p.id for p in asked],
        accuracy_before=sum(correct_before) / count,
        accuracy_after=sum(correct_after) / count,
        correct_path_nlp_before=_mean_correct_nlp(path_sets, before),
        correct_path_nlp_after=_mean_correct_nlp(path_sets, after),
        train=report,
        seconds=times.seconds,
    )


def scan_stats(
    trainer: LocalTrainer, problems: Sequence[Problem], llm_paths: Mapping[str, Sequence[LLMPath]]
) -> list[SampleStat]:
    """The agent's score, now, of the LLM's paths on scanned samples: one number per path, as
    both before and after, and no greedy answer (the gap needs only the paths' scores)."""
    path_sets = build_path_sets(problems, llm_paths, [[] for _ in problems], {})
    return [
        SampleStat(
            problem.id,
            [
                PathStat(nlp_l, ok, score, score)
                for nlp_l, ok, score in zip(s.teacher_nlp, s.correct, row, strict=True)
            ],
            False,
            False,
            scan_only=True,
        )
        for problem, s, row in zip(problems, path_sets, _score_all(trainer, path_sets), strict=True)
    ]


def requested_problems(
    requested: Sequence[str], pool: Mapping[str, Problem], allocation: Sequence[AllocatedSample]
) -> list[Problem]:
    """The requested public samples the agent can answer: in its pool, not allocated to it
    (the allocator never overlaps them; a stale or foreign ID is skipped, not fatal)."""
    allocated = {a.sample_id for a in allocation}
    wanted = [s for s in dict.fromkeys(requested) if s not in allocated]
    unknown = [s for s in wanted if s not in pool]
    if unknown:
        log.warning("requested samples not in the pool", extra={"sample_ids": unknown[:5]})
    return [pool[s] for s in wanted if s in pool]


def answer_requests(trainer: LocalTrainer, problems: Sequence[Problem]) -> dict[str, str]:
    """Sound greedy paths the trained model writes for requested samples; only these public
    paths ever leave, as for allocated samples."""
    if not problems:
        return {}
    answers = trainer.greedy_answers([p.question for p in problems])
    return pick_contributions(problems, answers, [()] * len(problems), None)
