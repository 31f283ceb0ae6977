"""Folding one agent's round report into its learner state (method 1.3-1.6): the arrays the
LaDa math needs, built from stored `lada.v1.SampleStats`, and the updated arms, band and gaps.
No Redis and no gRPC here, so the in-process simulation uses the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from allocator.policies import LearnerState, PoolIndex
from lada.config import LadaHyperParams
from lada.learnability import (
    band_gap_bounds,
    learnability_gaps,
    llm_accuracy,
    sample_rewards,
    update_band,
)
from lada.v1 import allocator_pb2


@dataclass
class ReportArrays:
    """One report as (N, M) arrays, NaN-padded; rows follow `sample_ids`."""

    sample_ids: list[str]
    llm_nlp: np.ndarray
    correct: np.ndarray
    before: np.ndarray
    after: np.ndarray
    path_count: np.ndarray
    correct_before: np.ndarray
    correct_after: np.ndarray

    def rewards(self, correctness_weight: float) -> np.ndarray:
        """Each sample's reward (method.md 1.4); weight 0 leaves the nlp-progress term alone."""
        return sample_rewards(
            self.llm_nlp,
            self.before,
            self.after,
            self.correct,
            self.correct_before,
            self.correct_after,
            correctness_weight,
        )


def report_arrays(stats: Sequence[allocator_pb2.SampleStats]) -> ReportArrays:
    n = len(stats)
    width = max((len(s.paths) for s in stats), default=0)
    llm, before, after = (np.full((n, width), np.nan) for _ in range(3))
    correct = np.zeros((n, width), bool)
    for row, sample in enumerate(stats):
        for col, path in enumerate(sample.paths):
            llm[row, col] = path.llm_normalized_logprob
            before[row, col] = path.slm_normalized_logprob_before
            after[row, col] = path.slm_normalized_logprob_after
            correct[row, col] = path.correct
    return ReportArrays(
        [s.sample_id for s in stats],
        llm,
        correct,
        before,
        after,
        np.array([len(s.paths) for s in stats], np.int64),
        np.array([s.correct_before for s in stats], bool),
        np.array([s.correct_after for s in stats], bool),
    )


def parse_stats(raw: Mapping[str, bytes]) -> list[allocator_pb2.SampleStats]:
    """Stored report (sample_id -> serialized SampleStats), in sample-ID order."""
    return [allocator_pb2.SampleStats.FromString(raw[key]) for key in sorted(raw)]


@dataclass
class FoldResult:
    """What one agent's report changes: its learner state and its known gaps."""

    learner: LearnerState
    gaps: dict[str, str]  # sample_id -> "gap|solved"
    llm_acc: dict[str, str]  # sample_id -> "correct/total"
    rewards: np.ndarray


def fold_report(
    learner: LearnerState,
    known_gaps: np.ndarray,
    report: ReportArrays,
    pool: PoolIndex,
    params: LadaHyperParams,
    relevance: np.ndarray | None = None,
) -> FoldResult:
    """Rewards into the cluster arms, the band moved by where in it reward was earned, and
    the post-training gap recorded as the agent's current gap on each sample.

    `relevance` (one weight per report row, `domain_relevance`) scales each reward before it
    reaches the arms and the band; None leaves them as the method defines them."""
    clusters = np.array([pool.clusters[pool.index_of[s]] for s in report.sample_ids], np.int64)
    rewards = report.rewards(params.correctness_reward_weight)
    if relevance is not None:
        rewards = rewards * relevance
    gap_before = learnability_gaps(report.llm_nlp, report.before, report.correct)
    gap_after = learnability_gaps(report.llm_nlp, report.after, report.correct)
    history = np.concatenate([known_gaps, gap_before])
    gap_lo, gap_hi = band_gap_bounds(history, learner.band_low, learner.band_high)
    band = update_band(
        learner.band_low, learner.band_high, gap_before, rewards, gap_lo, gap_hi, params.band_step
    )
    size = pool.num_clusters
    updated = LearnerState(
        learner.reward_sum + np.bincount(clusters, weights=rewards, minlength=size),
        learner.pulls + np.bincount(clusters, minlength=size),
        band[0],
        band[1],
    )
    return FoldResult(
        updated,
        {
            s: f"{float(g)!r}|{int(solved)}"
            for s, g, solved in zip(report.sample_ids, gap_after, report.correct_after, strict=True)
        },
        llm_accuracy_strings(report),
        rewards,
    )


def llm_accuracy_strings(report: ReportArrays) -> dict[str, str]:
    """sample_id -> "correct/total" of the LLM's paths, for samples that had paths."""
    accuracy = llm_accuracy(report.correct, report.path_count)
    return {
        s: f"{int(report.correct[i].sum())}/{int(report.path_count[i])}"
        for i, s in enumerate(report.sample_ids)
        if np.isfinite(accuracy[i])
    }


def split_scans(
    stats: Sequence[allocator_pb2.SampleStats],
) -> tuple[list[allocator_pb2.SampleStats], list[allocator_pb2.SampleStats]]:
    """(trained, scanned): only trained samples earn rewards and move the arms and the band;
    scanned ones (`lada.scan_per_round`) only tell the agent's gap."""
    trained = [s for s in stats if not s.scan_only]
    return trained, [s for s in stats if s.scan_only]


def scan_gaps(scans: ReportArrays) -> tuple[dict[str, str], dict[str, str]]:
    """A scan's measured gaps ("gap|0": greedy correctness was not taken) and the LLM's
    accuracy on the scanned samples, in the shapes `FoldResult` uses."""
    gaps = learnability_gaps(scans.llm_nlp, scans.after, scans.correct)
    return (
        {s: f"{float(g)!r}|0" for s, g in zip(scans.sample_ids, gaps, strict=True)},
        llm_accuracy_strings(scans),
    )


def decode_known_gaps(
    raw: Mapping[str, str], pool: PoolIndex
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored "gap|solved" strings -> (pool indices, gaps, solved) for samples still in the pool."""
    idx, gaps, solved = [], [], []
    for sample_id, value in raw.items():
        position = pool.index_of.get(sample_id)
        if position is None:
            continue
        gap, _, flag = value.partition("|")
        idx.append(position)
        gaps.append(float(gap))
        solved.append(flag == "1")
    return np.array(idx, np.int64), np.array(gaps, float), np.array(solved, bool)


def unlearnable_mask(llm_acc: Mapping[str, str], pool: PoolIndex) -> np.ndarray:
    """Samples on which the LLM's reported paths were all wrong (nothing correct to learn)."""
    mask = np.zeros(len(pool), bool)
    for sample_id, value in llm_acc.items():
        correct, _, total = value.partition("/")
        position = pool.index_of.get(sample_id)
        if position is not None and int(total) > 0 and int(correct) == 0:
            mask[position] = True
    return mask


def accuracy_of(llm_acc: Mapping[str, str], sample_ids: Sequence[str]) -> np.ndarray:
    """The LLM's accuracy per sample ID (NaN where unknown)."""
    out = np.full(len(sample_ids), np.nan)
    for i, sample_id in enumerate(sample_ids):
        value = llm_acc.get(sample_id)
        if value:
            correct, _, total = value.partition("/")
            if int(total) > 0:
                out[i] = int(correct) / int(total)
    return out
