"""The LaDa math (docs/method.md sections 1-3): pure, vectorised numpy; no Redis, no gRPC.

Conventions: per-sample path statistics are (N, M) float arrays padded with NaN where a
sample has fewer than M paths; `correct` is an (N, M) bool array (False on padding).
Choices the method leaves open are marked *choice* in the docstrings and in
docs/allocator.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # the scikit-learn TfidfVectorizer default


# ---- 1.3 learnability gap and 1.4 reward ----------------------------------------------
def learnability_gaps(llm_nlp: np.ndarray, slm_nlp: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """gap(i) = mean over correct LLM paths of nlp_L - nlp_S; NaN where no path is correct."""
    correct = np.asarray(correct, dtype=bool)
    diff = np.where(correct, np.asarray(llm_nlp, float) - np.asarray(slm_nlp, float), 0.0)
    counts = correct.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, diff.sum(axis=-1) / np.maximum(counts, 1), np.nan)


def best_correct_path(llm_nlp: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Index of y*, the correct path the LLM is most confident in (*choice*); -1 if none."""
    masked = np.where(np.asarray(correct, bool), np.asarray(llm_nlp, float), -np.inf)
    best = masked.argmax(axis=-1)
    return np.where(np.isfinite(masked.max(axis=-1)), best, -1)


def sample_rewards(
    llm_nlp: np.ndarray,
    slm_before: np.ndarray,
    slm_after: np.ndarray,
    correct: np.ndarray,
    correct_before: np.ndarray,
    correct_after: np.ndarray,
    correctness_weight: float = 1.0,
) -> np.ndarray:
    """r(i) = nlp_S,after(y*) - nlp_S,before(y*) + w * (correct_after - correct_before).

    Samples without a correct LLM path get only the greedy-correctness term (*choice*).
    """
    best = best_correct_path(llm_nlp, correct)
    rows = np.arange(best.shape[0])
    safe = np.maximum(best, 0)
    progress = np.asarray(slm_after, float)[rows, safe] - np.asarray(slm_before, float)[rows, safe]
    progress = np.where(best >= 0, progress, 0.0)
    flips = np.asarray(correct_after, float) - np.asarray(correct_before, float)
    return progress + correctness_weight * flips


def domain_relevance(
    sample_domains: Sequence[str], agent_domains: Sequence[str], foreign_scale: float
) -> np.ndarray:
    """1 for a sample of one of the agent's registered domains, `foreign_scale` for any other;
    all 1 for an agent that registered none (nothing says what is foreign to it)."""
    if not agent_domains:
        return np.ones(len(sample_domains))
    home = np.isin(np.asarray(sample_domains, dtype=object), list(agent_domains))
    return np.where(home, 1.0, foreign_scale)


def llm_accuracy(correct: np.ndarray, path_count: np.ndarray) -> np.ndarray:
    """Fraction of the LLM's paths that are correct; NaN for samples with no paths."""
    counts = np.asarray(path_count, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.asarray(correct, bool).sum(axis=-1) / counts, np.nan)


# ---- 1.5 UCB over clusters --------------------------------------------------------------
def mean_rewards(reward_sum: np.ndarray, pulls: np.ndarray) -> np.ndarray:
    """Mean realised reward per arm; 0 for an arm never pulled."""
    pulls = np.asarray(pulls, float)
    return np.where(pulls > 0, np.asarray(reward_sum, float) / np.maximum(pulls, 1), 0.0)


def shrunk_means(reward_sum: np.ndarray, pulls: np.ndarray, prior_pulls: float) -> np.ndarray:
    """Each arm's mean reward pulled toward the agent's mean over all arms, as if each arm
    had `prior_pulls` extra pulls at that mean (*choice* beyond method.md: with 2-3 pulls an
    arm, one sample's greedy flip otherwise decides it). 0: `mean_rewards`, the method."""
    if prior_pulls <= 0:
        return mean_rewards(reward_sum, pulls)
    reward_sum, pulls = np.asarray(reward_sum, float), np.asarray(pulls, float)
    overall = mean_rewards(
        reward_sum.sum(axis=-1, keepdims=True), pulls.sum(axis=-1, keepdims=True)
    )
    return (reward_sum + prior_pulls * overall) / (pulls + prior_pulls)


def ucb_scores(
    reward_sum: np.ndarray, pulls: np.ndarray, alpha: float, prior_pulls: float = 0.0
) -> np.ndarray:
    """score(c) = mean(c) + alpha * sqrt(ln(1 + N) / (1 + n(c))), N = pulls over all arms.

    Works on (C,) for one agent or (K, C) for many at once; mean as in `shrunk_means`.
    """
    pulls = np.asarray(pulls, float)
    total = pulls.sum(axis=-1, keepdims=True)
    means = shrunk_means(reward_sum, pulls, prior_pulls)
    return means + alpha * np.sqrt(np.log1p(total) / (1.0 + pulls))


def arm_quotas(
    reward_sum: np.ndarray,
    pulls: np.ndarray,
    alpha: float,
    budget: np.ndarray | int,
    available: np.ndarray,
    prior_pulls: float = 0.0,
) -> np.ndarray:
    """Split each agent's budget over clusters by pulling the best UCB arm one sample at a time.

    Each virtual pull raises n(c) and N, so the bonus shrinks as in sequential UCB (*choice*:
    batch UCB). With no rewards yet this is round-robin, i.e. an even split (method 1.5).
    Arms with nothing `available` are never pulled. Shapes: (K, C) in, (K, C) out.
    """
    reward_sum = np.atleast_2d(np.asarray(reward_sum, float))
    pulls = np.atleast_2d(np.asarray(pulls, float))
    available = np.atleast_2d(np.asarray(available, np.int64))
    budgets = np.broadcast_to(np.asarray(budget, np.int64), (pulls.shape[0],))
    budgets = np.minimum(budgets, available.sum(axis=1))
    means = shrunk_means(reward_sum, pulls, prior_pulls)
    quotas = np.zeros(pulls.shape, np.int64)
    rows = np.arange(pulls.shape[0])
    for step in range(int(budgets.max(initial=0))):
        live = budgets > step
        if not live.any():
            break
        virtual = pulls + quotas
        total = virtual.sum(axis=1, keepdims=True)
        scores = means + alpha * np.sqrt(np.log1p(total) / (1.0 + virtual))
        scores[quotas >= available] = -np.inf
        chosen = scores.argmax(axis=1)
        quotas[rows[live], chosen[live]] += 1
    return quotas


def proportional_quotas(budget: np.ndarray | int, available: np.ndarray) -> np.ndarray:
    """Split each agent's budget over clusters in proportion to its available samples, by
    largest remainder: the cluster mix a uniform draw from the pool gives, without its noise
    (*choice*, `lada.first_round_split`). Shapes: (K, C) in, (K, C) out."""
    available = np.atleast_2d(np.asarray(available, np.int64))
    budgets = np.broadcast_to(np.asarray(budget, np.int64), (available.shape[0],))
    budgets = np.minimum(budgets, available.sum(axis=1))
    totals = np.maximum(available.sum(axis=1, keepdims=True), 1)
    exact = available * budgets[:, None] / totals
    quotas = np.floor(exact).astype(np.int64)
    # each row's leftover goes to its largest remainders; a remainder > 0 has room (< available)
    by_remainder = np.argsort(-(exact - quotas), axis=1, kind="stable")
    leftover = budgets - quotas.sum(axis=1)
    gets_one = np.arange(available.shape[1])[None, :] < leftover[:, None]
    np.put_along_axis(
        quotas, by_remainder, np.take_along_axis(quotas, by_remainder, 1) + gets_one, 1
    )
    return quotas


# ---- 1.6 the learnable band ----------------------------------------------------------------
def band_gap_bounds(known_gaps: np.ndarray, q_lo: float, q_hi: float) -> tuple[float, float]:
    """Gap values at the band's quantiles; (-inf, inf) when nothing is known (all in band)."""
    gaps = np.asarray(known_gaps, float)
    gaps = gaps[np.isfinite(gaps)]
    if gaps.size == 0:
        return -np.inf, np.inf
    low, high = np.quantile(gaps, [q_lo, q_hi])
    return float(low), float(high)


def band_distance(gaps: np.ndarray, gap_lo: float, gap_hi: float) -> np.ndarray:
    """How far each gap lies outside [gap_lo, gap_hi] (0 inside); NaN gaps count as inside."""
    gaps = np.asarray(gaps, float)
    below = np.maximum(gap_lo - gaps, 0.0)
    above = np.maximum(gaps - gap_hi, 0.0)
    return np.nan_to_num(below + above, nan=0.0)


def update_band(
    q_lo: float,
    q_hi: float,
    gaps: np.ndarray,
    rewards: np.ndarray,
    gap_lo: float,
    gap_hi: float,
    step: float = 0.05,
) -> tuple[float, float]:
    """Shift the band up by `step` if the upper third of it earned more than the lower third,
    else down; the width is kept and the band stays inside [0, 1].

    Thirds are by gap value within [gap_lo, gap_hi]. *choice*: when either third holds no
    rewarded sample there is nothing to compare and the band stays where it is.
    """
    gaps = np.asarray(gaps, float)
    rewards = np.asarray(rewards, float)
    if not np.isfinite(gap_lo) or not np.isfinite(gap_hi) or gap_hi <= gap_lo:
        return q_lo, q_hi  # no spread of gaps: nothing to compare
    ok = np.isfinite(gaps) & np.isfinite(rewards)
    width = gap_hi - gap_lo
    lower = ok & (gaps >= gap_lo) & (gaps <= gap_lo + width / 3.0)
    upper = ok & (gaps >= gap_hi - width / 3.0) & (gaps <= gap_hi)
    if not lower.any() or not upper.any():
        return q_lo, q_hi
    shift = step if rewards[upper].mean() > rewards[lower].mean() else -step
    shift = min(shift, 1.0 - q_hi) if shift > 0 else max(shift, -q_lo)
    return round(q_lo + shift, 10), round(q_hi + shift, 10)


def impute_unknown_gaps(
    known_gaps: np.ndarray, known_clusters: np.ndarray, num_clusters: int
) -> np.ndarray:
    """Per-cluster stand-in for gaps never measured: the agent's median gap in that cluster,
    else its median over all clusters, else NaN (treated as inside the band) (*choice*)."""
    gaps = np.asarray(known_gaps, float)
    finite = np.isfinite(gaps)
    gaps, clusters = gaps[finite], np.asarray(known_clusters, np.int64)[finite]
    if gaps.size == 0:
        return np.full(num_clusters, np.nan)
    order = np.lexsort((gaps, clusters))
    gaps, clusters = gaps[order], clusters[order]
    counts = np.bincount(clusters, minlength=num_clusters)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    present = counts > 0
    low = gaps[np.minimum(starts + (counts - 1) // 2, gaps.size - 1)]
    high = gaps[np.minimum(starts + counts // 2, gaps.size - 1)]
    return np.where(present, (low + high) / 2.0, float(np.median(gaps)))


def skip_solved(known_gaps: np.ndarray, known_solved: np.ndarray, gap_lo: float) -> np.ndarray:
    """Samples the agent already solves: correct greedy answer and gap below the band."""
    gaps = np.asarray(known_gaps, float)
    return np.asarray(known_solved, bool) & np.isfinite(gaps) & (gaps < gap_lo)


def select_in_band(
    candidate_gaps: np.ndarray, quota: int, gap_lo: float, gap_hi: float, rng: np.random.Generator
) -> np.ndarray:
    """Indices of the `quota` candidates nearest the band (inside first), ties at random."""
    if quota <= 0 or len(candidate_gaps) == 0:
        return np.zeros(0, np.int64)
    distance = band_distance(candidate_gaps, gap_lo, gap_hi)
    order = np.lexsort((rng.random(len(distance)), distance))
    return order[:quota]


# ---- 2. the LLM direction --------------------------------------------------------------------
def novelty_scores(
    llm_nlp_of_contribution: np.ndarray,
    llm_acc: np.ndarray,
    max_llm_accuracy: float = 0.5,
    llm_greedy_right: np.ndarray | None = None,
) -> np.ndarray:
    """novelty = -nlp_L(y^S|x), counted only where the LLM's accuracy is below the threshold
    and, where `llm_greedy_right` is given, its greedy answer is wrong (NaN elsewhere, and
    where the accuracy is unknown)."""
    nlp = np.asarray(llm_nlp_of_contribution, float)
    acc = np.asarray(llm_acc, float)
    counted = np.isfinite(acc) & (acc < max_llm_accuracy) & np.isfinite(nlp)
    if llm_greedy_right is not None:
        counted &= ~np.asarray(llm_greedy_right, bool)
    return np.where(counted, -nlp, np.nan)


def select_novel(
    sample_ids: list[str], novelty: np.ndarray, absorbed: set[str], budget: int
) -> np.ndarray:
    """Indices of the top-`budget` contributions by novelty, at most one per sample ID and
    none for a sample already absorbed; ties keep the earlier contribution."""
    novelty = np.asarray(novelty, float)
    order = np.argsort(-np.nan_to_num(novelty, nan=-np.inf), kind="stable")
    chosen: list[int] = []
    seen: set[str] = set()
    for index in order:
        if len(chosen) >= budget or not np.isfinite(novelty[index]):
            break
        sample_id = sample_ids[index]
        if sample_id in seen or sample_id in absorbed:
            continue
        seen.add(sample_id)
        chosen.append(int(index))
    return np.asarray(chosen, np.int64)


# ---- 3. domain weight -------------------------------------------------------------------------
def domain_weights(
    private_cluster_counts: np.ndarray,
    pool_cluster_share: np.ndarray,
    low: float = 0.25,
    high: float = 4.0,
) -> np.ndarray:
    """w(c) = (share of the agent's private samples in c) / (share of the pool in c), clipped.

    Returns one weight per cluster; an agent with no private samples gets 1 everywhere.
    """
    counts = np.asarray(private_cluster_counts, float)
    share = np.asarray(pool_cluster_share, float)
    if counts.sum() <= 0:
        return np.ones_like(share)
    private_share = counts / counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(share > 0, private_share / np.where(share > 0, share, 1.0), high)
    return np.clip(ratio, low, high)


# ---- the public cluster model (fitted by allocator/clustering.py) ------------------------
@dataclass
class ClusterModel:
    """What agents need to assign their own texts to the public clusters locally."""

    vocabulary: list[str]
    idf: np.ndarray
    domains: list[str]
    centroids: np.ndarray  # (C, len(vocabulary) + len(domains) + 1)
    pool_share: np.ndarray  # (C,)
    domain_weight: float = 1.0
    difficulty_weight: float = 1.0

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def feature_count(self) -> int:
        return len(self.vocabulary) + len(self.domains) + 1


def tokenize(text: str) -> list[str]:
    return TOKEN_PATTERN.findall(text.lower())


def tfidf_matrix(texts: list[str], vocabulary: list[str], idf: np.ndarray) -> np.ndarray:
    """Raw term counts times IDF, rows L2-normalised (the scikit-learn TfidfVectorizer rule)."""
    index = {term: j for j, term in enumerate(vocabulary)}
    matrix = np.zeros((len(texts), len(vocabulary)))
    for row, text in enumerate(texts):
        for token in tokenize(text):
            column = index.get(token)
            if column is not None:
                matrix[row, column] += 1.0
    matrix *= np.asarray(idf, float)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def cluster_features(
    model: ClusterModel,
    texts: list[str],
    domains: list[str],
    difficulties: np.ndarray | None = None,
) -> np.ndarray:
    """[TF-IDF | weighted domain one-hot | weighted difficulty]; unknown difficulty = 0.5."""
    tfidf = tfidf_matrix(texts, model.vocabulary, model.idf)
    one_hot = np.zeros((len(texts), len(model.domains)))
    domain_index = {d: j for j, d in enumerate(model.domains)}
    for row, domain in enumerate(domains):
        if domain in domain_index:
            one_hot[row, domain_index[domain]] = 1.0
    diff = np.full(len(texts), 0.5) if difficulties is None else np.asarray(difficulties, float)
    diff = np.where(np.isfinite(diff), diff, 0.5)
    return np.hstack(
        [tfidf, model.domain_weight * one_hot, model.difficulty_weight * diff[:, None]]
    )


def assign_clusters(
    model: ClusterModel,
    texts: list[str],
    domains: list[str],
    difficulties: np.ndarray | None = None,
) -> np.ndarray:
    """Nearest centroid for each text (e.g. an agent's private questions, never sent out)."""
    if not texts:
        return np.zeros(0, np.int64)
    features = cluster_features(model, texts, domains, difficulties)
    distances = (
        (features**2).sum(axis=1, keepdims=True)
        - 2.0 * features @ model.centroids.T
        + (model.centroids**2).sum(axis=1)
    )
    return distances.argmin(axis=1).astype(np.int64)
