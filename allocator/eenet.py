"""The `eenet` policy's machinery (method.md section 5; EE-Net, Ban et al., ICLR 2022).

An exploitation MLP f1(x) predicts the realised reward (method 1.4) of giving sample i to
agent k from a context x; an exploration MLP f2 takes f1's last-layer gradient at x,
normalised, and predicts the residual r - f1(x). Each agent gets the samples with the
largest f1 + f2. Training rows are rebuilt every round from the reports stored in Redis
(the rewards `fold` credits to `lada`'s arms, with the context they were earned in); the
networks and optimisers persist as one blob tagged with the round they were trained for,
so a restarted allocator reuses them, or retrains from the previous round's, identically.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from allocator.folding import accuracy_of, parse_stats, report_arrays, split_scans
from allocator.policies import (
    AgentView,
    AllocationPolicy,
    AllocationRequest,
    PolicyContext,
    PoolIndex,
    agent_rng,
)
from lada.config import LadaHyperParams
from lada.learnability import (
    band_gap_bounds,
    impute_unknown_gaps,
    learnability_gaps,
    mean_rewards,
    skip_solved,
)
from lada.state import AgentRoundState, NotFound

STATE_BLOB = "policy_eenet"  # blob:{name} in lada.state: networks, optimisers, round
UNKNOWN_DIFFICULTY = 0.5  # *choice*: LLM difficulty of a sample no agent has reported on
EXTRA_FEATURES = 5  # difficulty, gap, gap known, solved, the agent's mean cluster reward


# ---- history: every realised reward with its context ------------------------------------
@dataclass
class History:
    """One row per (round, reporting agent, sample); arms are the agents' cluster totals."""

    agent: list[str] = field(default_factory=list)
    idx: list[np.ndarray] = field(default_factory=list)
    gap: list[np.ndarray] = field(default_factory=list)
    solved: list[np.ndarray] = field(default_factory=list)
    cluster_mean: list[np.ndarray] = field(default_factory=list)
    reward: list[np.ndarray] = field(default_factory=list)
    arms: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(sum(len(r) for r in self.reward))

    def add(self, agent_id: str, report: _Report, pool: PoolIndex) -> None:
        """Append one report's rows (context as of before it), then credit the agent's arms."""
        size = pool.num_clusters
        sums, pulls = self.arms.get(agent_id, (np.zeros(size), np.zeros(size)))
        clusters = pool.clusters[report.idx]
        self.agent.extend([agent_id] * len(report.idx))
        self.idx.append(report.idx)
        self.gap.append(report.gap)
        self.solved.append(report.solved)
        self.cluster_mean.append(mean_rewards(sums, pulls)[clusters])
        self.reward.append(report.reward)
        self.arms[agent_id] = (
            sums + np.bincount(clusters, weights=report.reward, minlength=size),
            pulls + np.bincount(clusters, minlength=size),
        )

    def cluster_means(self, agent_id: str, num_clusters: int) -> np.ndarray:
        sums, pulls = self.arms.get(agent_id, (np.zeros(num_clusters), np.zeros(num_clusters)))
        return mean_rewards(sums, pulls)


@dataclass
class _Report:
    idx: np.ndarray
    gap: np.ndarray  # before training
    solved: np.ndarray  # greedy answer correct before training
    reward: np.ndarray


def _report(raw: dict[str, bytes], pool: PoolIndex, params: LadaHyperParams) -> _Report:
    """One stored report as pool rows, rewards computed as `fold_report` does before any
    `lada.foreign_reward_scale` (a `lada` choice; eenet learns from the rewards as realised)."""
    trained, _ = split_scans(parse_stats(raw))  # a scan earns no reward
    stats = [s for s in trained if s.sample_id in pool.index_of]
    arrays = report_arrays(stats)
    reward = arrays.rewards(params.correctness_reward_weight)
    return _Report(
        np.array([pool.index_of[s] for s in arrays.sample_ids], np.int64),
        learnability_gaps(arrays.llm_nlp, arrays.before, arrays.correct),
        arrays.correct_before,
        reward,
    )


def load_history(
    context: PolicyContext, pool: PoolIndex, params: LadaHyperParams, before: int
) -> History:
    """Every REPORTED agent's rewards in rounds 1 .. before-1, in round then agent order."""
    history = History()
    for r in range(1, before):
        try:
            record = context.store.get_round(r)
        except NotFound:
            continue
        for agent_id, state in sorted(record.agents.items()):
            raw = context.store.get_stats(r, agent_id) if state is AgentRoundState.REPORTED else {}
            if raw:
                history.add(agent_id, _report(raw, pool, params), pool)
    return history


# ---- contexts ------------------------------------------------------------------------------
@dataclass
class Featurizer:
    """x_k(i) = [cluster one-hot, domain one-hot, difficulty, gap, gap known, solved, the
    agent's mean reward on i's cluster]; a NaN gap (none measured or imputed) becomes 0."""

    pool: PoolIndex
    domain_code: np.ndarray  # (N,) index into the sorted domain tags
    num_domains: int
    difficulty: np.ndarray  # (N,) 1 - LLM accuracy, UNKNOWN_DIFFICULTY where unreported

    @classmethod
    def build(cls, context: PolicyContext, pool: PoolIndex) -> Featurizer:
        tags = sorted(set(context.domains))
        code = {tag: i for i, tag in enumerate(tags)}
        accuracy = accuracy_of(context.store.llm_accuracy(), pool.sample_ids)
        difficulty = np.where(np.isfinite(accuracy), 1.0 - accuracy, UNKNOWN_DIFFICULTY)
        return cls(pool, np.array([code[d] for d in context.domains]), len(tags), difficulty)

    @property
    def dim(self) -> int:
        return self.pool.num_clusters + self.num_domains + EXTRA_FEATURES

    def rows(
        self, idx: np.ndarray, gap: np.ndarray, solved: np.ndarray, cluster_mean: np.ndarray
    ) -> np.ndarray:
        clusters = self.pool.clusters[idx]
        known = np.isfinite(gap)
        extras = np.stack(
            [
                self.difficulty[idx],
                np.where(known, gap, 0.0),
                known,
                solved,
                cluster_mean,
            ],
            axis=1,
        )
        return np.concatenate(
            [
                np.eye(self.pool.num_clusters)[clusters],
                np.eye(self.num_domains)[self.domain_code[idx]],
                extras,
            ],
            axis=1,
        ).astype(np.float32)

    def history_rows(self, history: History) -> np.ndarray:
        if not history.reward:
            return np.zeros((0, self.dim), np.float32)
        return self.rows(
            np.concatenate(history.idx),
            np.concatenate(history.gap),
            np.concatenate(history.solved),
            np.concatenate(history.cluster_mean),
        )


# ---- the two networks ----------------------------------------------------------------------
class EENets:
    """f1 (exploitation) and f2 (exploration) with their Adam optimisers; CPU, seeded."""

    def __init__(self, dim: int, hidden: int, learning_rate: float, seed: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.f1 = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            self.f2 = nn.Sequential(nn.Linear(hidden + 1, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.opt1 = torch.optim.Adam(self.f1.parameters(), lr=learning_rate)
        self.opt2 = torch.optim.Adam(self.f2.parameters(), lr=learning_rate)
        self.dim, self.hidden = dim, hidden

    def gradient_features(self, x: Tensor) -> Tensor:
        """d f1 / d (last layer's weight, bias) = [h(x), 1], normalised to unit length."""
        h = self.f1[1](self.f1[0](x))
        g = torch.cat([h, torch.ones(len(x), 1)], dim=1)
        return g / g.norm(dim=1, keepdim=True)

    def fit(self, x: np.ndarray, reward: np.ndarray, epochs: int) -> None:
        """Full-batch squared error: f1 on r, then f2 on the residual r - f1(x)."""
        inputs = torch.from_numpy(x)
        target = torch.from_numpy(reward.astype(np.float32))[:, None]
        _train(self.f1, self.opt1, inputs, target, epochs)
        with torch.no_grad():
            residual = target - self.f1(inputs)
            grads = self.gradient_features(inputs)
        _train(self.f2, self.opt2, grads, residual, epochs)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """f1(x) + f2(grad f1(x)) per row."""
        with torch.no_grad():
            inputs = torch.from_numpy(x)
            total = self.f1(inputs) + self.f2(self.gradient_features(inputs))
        return total[:, 0].double().numpy()

    def to_bytes(self, round_number: int) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {
                "round": round_number,
                "shape": [self.dim, self.hidden],
                "f1": self.f1.state_dict(),
                "f2": self.f2.state_dict(),
                "opt1": self.opt1.state_dict(),
                "opt2": self.opt2.state_dict(),
            },
            buffer,
        )
        return buffer.getvalue()

    def load(self, blob: bytes) -> int:
        """Restore weights and optimisers; returns the round they were trained for, or -1
        (nothing restored) when they were built for other shapes (another pool or config)."""
        state = torch.load(io.BytesIO(blob), weights_only=True)
        if list(state["shape"]) != [self.dim, self.hidden]:
            return -1
        self.f1.load_state_dict(state["f1"])
        self.f2.load_state_dict(state["f2"])
        self.opt1.load_state_dict(state["opt1"])
        self.opt2.load_state_dict(state["opt2"])
        return int(state["round"])


def _train(
    net: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, epochs: int
) -> None:
    for _ in range(epochs):
        optimizer.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()


def nets_for_round(
    context: PolicyContext, request: AllocationRequest, x: np.ndarray, reward: np.ndarray
) -> EENets:
    """The networks trained for this round: stored ones if already trained for it (a restart
    or a replica), else the previous round's (or fresh, seeded) trained on every row."""
    params = request.params
    nets = EENets(x.shape[1], params.eenet_hidden, params.eenet_learning_rate, request.seed)
    blob = context.store.get_blob(STATE_BLOB)
    if blob is not None and nets.load(blob) == request.round:
        return nets
    nets.fit(x, reward, params.eenet_epochs)
    context.store.put_blob(STATE_BLOB, nets.to_bytes(request.round))
    return nets


# ---- selection -------------------------------------------------------------------------------
def allocate_eenet(
    request: AllocationRequest, context: PolicyContext, first_round: AllocationPolicy
) -> dict[str, np.ndarray]:
    """Per agent, the top-B_k learnable samples by f1 + f2; `first_round` with no rewards yet."""
    pool = request.pool
    if len(context.domains) != len(pool):
        raise ValueError(
            f"policy eenet: {len(context.domains)} domain tags for a pool of {len(pool)}"
        )
    history = load_history(context, pool, request.params, request.round)
    if not request.agents or len(history) == 0:
        return first_round.allocate(request)
    features = Featurizer.build(context, pool)
    nets = nets_for_round(
        context, request, features.history_rows(history), np.concatenate(history.reward)
    )
    return {
        agent.agent_id: _choose_for(agent, request, features, nets, history)
        for agent in request.agents
    }


def _choose_for(
    agent: AgentView,
    request: AllocationRequest,
    features: Featurizer,
    nets: EENets,
    history: History,
) -> np.ndarray:
    """Score every sample the agent may get (learnable, not already solved) and keep the top."""
    pool = request.pool
    gap_lo, _ = band_gap_bounds(agent.known_gap, agent.learner.band_low, agent.learner.band_high)
    solved = np.zeros(len(pool), bool)
    solved[agent.known_idx] = skip_solved(agent.known_gap, agent.known_solved, gap_lo)
    candidates = np.flatnonzero(~request.unlearnable & ~solved)
    take = min(max(agent.capacity, 0), len(candidates))
    if take == 0:
        return np.zeros(0, np.int64)
    gap = impute_unknown_gaps(agent.known_gap, pool.clusters[agent.known_idx], pool.num_clusters)
    gap = gap[pool.clusters]
    gap[agent.known_idx] = agent.known_gap
    was_solved = np.zeros(len(pool), bool)
    was_solved[agent.known_idx] = agent.known_solved
    means = history.cluster_means(agent.agent_id, pool.num_clusters)[pool.clusters]
    rows = features.rows(candidates, gap[candidates], was_solved[candidates], means[candidates])
    scores = nets.scores(rows)
    keep = _passes_threshold(scores, request.params.eenet_score_threshold)
    ties = agent_rng(request.seed, request.round, agent.draw_key).random(len(candidates))
    order = np.lexsort((ties, -scores))
    order = order[keep[order]][:take]
    return candidates[order].astype(np.int64)


def _passes_threshold(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Scores min-max scaled to [0, 1] must reach `threshold` (0 keeps every sample)."""
    spread = scores.max() - scores.min()
    scaled = (scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)
    return scaled >= threshold
