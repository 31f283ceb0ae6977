"""Allocation policies behind one interface (method.md section 4); the round loop only ever
calls `make_policy(name).allocate(request)`. A new policy is one class with `@register_policy`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lada.config import FIRST_ROUND_PROPORTIONAL, LadaHyperParams
from lada.learnability import (
    arm_quotas,
    band_distance,
    band_gap_bounds,
    impute_unknown_gaps,
    proportional_quotas,
    skip_solved,
)

if TYPE_CHECKING:
    from lada.state import StateStore


@dataclass
class PoolIndex:
    """The public pool as the allocator sees it: IDs, clusters and cluster members."""

    sample_ids: list[str]
    clusters: np.ndarray  # (N,) cluster of each sample
    num_clusters: int
    index_of: dict[str, int] = field(init=False)
    order: np.ndarray = field(init=False)  # sample indices sorted by cluster
    starts: np.ndarray = field(init=False)  # (C,) where each cluster begins in `order`
    sizes: np.ndarray = field(init=False)  # (C,)

    def __post_init__(self) -> None:
        self.clusters = np.asarray(self.clusters, np.int64)
        self.index_of = {sample_id: i for i, sample_id in enumerate(self.sample_ids)}
        self.order = np.argsort(self.clusters, kind="stable")
        self.sizes = np.bincount(self.clusters, minlength=self.num_clusters)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    def __len__(self) -> int:
        return len(self.sample_ids)


@dataclass
class LearnerState:
    """One learner's bandit arms and learnable band (an agent, or the LLM as an agent)."""

    reward_sum: np.ndarray
    pulls: np.ndarray
    band_low: float
    band_high: float

    @classmethod
    def fresh(cls, num_clusters: int, params: LadaHyperParams) -> LearnerState:
        zeros = np.zeros(num_clusters)
        return cls(zeros, zeros.copy(), params.band_low_quantile, params.band_high_quantile)

    @classmethod
    def from_json(
        cls, raw: dict[str, Any] | None, num_clusters: int, params: LadaHyperParams
    ) -> LearnerState:
        if not raw:
            return cls.fresh(num_clusters, params)
        return cls(
            np.asarray(raw["reward_sum"], float),
            np.asarray(raw["pulls"], float),
            float(raw["band"][0]),
            float(raw["band"][1]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "reward_sum": self.reward_sum.tolist(),
            "pulls": self.pulls.tolist(),
            "band": [self.band_low, self.band_high],
        }


@dataclass
class AgentView:
    """What a policy may know of one participant: capacity, arms, band, measured gaps.

    `name` (unique in a run) keys the agent's random draws, so a rerun with the same seed
    draws the same samples although agent IDs are random (simulation and cluster agree).
    """

    agent_id: str
    capacity: int
    learner: LearnerState
    known_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    known_gap: np.ndarray = field(default_factory=lambda: np.zeros(0))
    known_solved: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    name: str = ""
    domain_tags: tuple[str, ...] = ()  # as the agent registered them: its private data's domains

    @property
    def draw_key(self) -> str:
        return self.name or self.agent_id


@dataclass
class AllocationRequest:
    """Everything a policy needs for one round; `unlearnable` marks samples on which the
    LLM is known to have no correct path."""

    round: int
    pool: PoolIndex
    agents: list[AgentView]
    unlearnable: np.ndarray
    params: LadaHyperParams
    seed: int = 0


def agent_rng(seed: int, round_number: int, agent_key: str) -> np.random.Generator:
    """Reproducible per (seed, round, agent): a restarted allocator draws the same samples."""
    digest = int.from_bytes(hashlib.sha256(agent_key.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, round_number, digest])


@dataclass
class PolicyContext:
    """What a policy with state of its own may use beyond one request: the run's Redis
    store (rewards, its own state) and each pool sample's domain tag, in pool order."""

    store: StateStore
    domains: list[str]


class AllocationPolicy(ABC):
    """Chooses, per round, the public sample indices each participating agent gets."""

    name: ClassVar[str]

    @abstractmethod
    def allocate(self, request: AllocationRequest) -> dict[str, np.ndarray]:
        """agent_id -> pool indices, no index twice for one agent."""

    def bind(self, context: PolicyContext) -> None:
        """Hand the policy the run's state once, at startup; stateless policies ignore it."""
        del context

    def _unbound(self, what: str) -> RuntimeError:
        """The error of a policy asked to allocate before `bind` gave it `what`."""
        return RuntimeError(
            f"policy {self.name}: not bound to {what} (AllocatorCore calls policy.bind)"
        )


POLICIES: dict[str, type[AllocationPolicy]] = {}


def register_policy(cls: type[AllocationPolicy]) -> type[AllocationPolicy]:
    POLICIES[cls.name] = cls
    return cls


def make_policy(name: str) -> AllocationPolicy:
    if name not in POLICIES:
        raise ValueError(f"policy: unknown policy {name!r}; valid: {', '.join(sorted(POLICIES))}")
    return POLICIES[name]()


@register_policy
class FullPolicy(AllocationPolicy):
    """Every public sample to every agent (FedMKT-style baseline)."""

    name = "full"

    def allocate(self, request: AllocationRequest) -> dict[str, np.ndarray]:
        everything = np.arange(len(request.pool), dtype=np.int64)
        return {agent.agent_id: everything for agent in request.agents}


@register_policy
class RandomPolicy(AllocationPolicy):
    """B_k samples uniformly at random, without replacement."""

    name = "random"

    def allocate(self, request: AllocationRequest) -> dict[str, np.ndarray]:
        size = len(request.pool)
        out: dict[str, np.ndarray] = {}
        for agent in request.agents:
            rng = agent_rng(request.seed, request.round, agent.draw_key)
            take = min(agent.capacity, size)
            out[agent.agent_id] = _distinct_draw(rng, size, take)
        return out


@register_policy
class HomePolicy(AllocationPolicy):
    """B_k samples uniformly at random from the agent's own domains (its registered domain
    tags), topped up from the rest of the pool where those run short.

    A baseline, not the method: it asks how much of a policy's gain over `random` is domain
    matching alone, which the learnability filter has to beat to earn its keep.
    """

    name = "home"

    def __init__(self) -> None:
        self.domains: np.ndarray | None = None

    def bind(self, context: PolicyContext) -> None:
        self.domains = np.asarray(context.domains)

    def allocate(self, request: AllocationRequest) -> dict[str, np.ndarray]:
        if self.domains is None or len(self.domains) != len(request.pool):
            raise self._unbound("the pool's domains")
        size = len(request.pool)
        out: dict[str, np.ndarray] = {}
        for agent in request.agents:
            rng = agent_rng(request.seed, request.round, agent.draw_key)
            home = np.isin(self.domains, agent.domain_tags)
            take = min(agent.capacity, size)
            picked = rng.permutation(np.flatnonzero(home))[:take]
            short = take - len(picked)
            if short > 0:
                picked = np.concatenate([picked, rng.permutation(np.flatnonzero(~home))[:short]])
            out[agent.agent_id] = picked.astype(np.int64)
        return out


def _distinct_draw(rng: np.random.Generator, size: int, take: int) -> np.ndarray:
    """`take` distinct integers below `size`, without permuting the whole range when small."""
    if take * 4 >= size:
        return rng.permutation(size)[:take].astype(np.int64)
    picked = np.unique(rng.integers(0, size, take * 2 + 8))
    while len(picked) < take:
        picked = np.unique(np.concatenate([picked, rng.integers(0, size, take)]))
    return rng.permutation(picked)[:take].astype(np.int64)


@register_policy
class LadaPolicy(AllocationPolicy):
    """The learnability-aware filter: UCB quotas over clusters, then the learnable band."""

    name = "lada"

    def allocate(self, request: AllocationRequest) -> dict[str, np.ndarray]:
        pool, params = request.pool, request.params
        unlearnable_per_cluster = np.bincount(
            pool.clusters[request.unlearnable], minlength=pool.num_clusters
        )
        plans = [
            _AgentPlan.build(agent, request, unlearnable_per_cluster) for agent in request.agents
        ]
        if not plans:
            return {}
        pulls = np.stack([a.learner.pulls for a in request.agents])
        budgets = np.array([a.capacity for a in request.agents])
        available = np.stack([p.available for p in plans])
        quotas = arm_quotas(
            np.stack([a.learner.reward_sum for a in request.agents]),
            pulls,
            params.ucb_alpha,
            budgets,
            available,
            params.arm_prior_pulls,
        )
        if params.first_round_split == FIRST_ROUND_PROPORTIONAL:
            cold = pulls.sum(axis=1) == 0
            quotas[cold] = proportional_quotas(budgets[cold], available[cold])
        out: dict[str, np.ndarray] = {}
        for agent, plan, quota in zip(request.agents, plans, quotas, strict=True):
            rng = agent_rng(request.seed, request.round, agent.draw_key)
            out[agent.agent_id] = plan.select(pool, quota, request.unlearnable, rng)
        return out


@dataclass
class _AgentPlan:
    """One agent's band, skip set and per-cluster availability for this round."""

    gap_lo: float
    gap_hi: float
    imputed: np.ndarray  # (C,) stand-in gap for never-measured samples
    candidate_idx: np.ndarray  # measured, learnable, not skipped
    candidate_gap: np.ndarray
    excluded_idx: np.ndarray  # measured samples (candidates or skipped): not in the unknown block
    available: np.ndarray  # (C,)

    @classmethod
    def build(
        cls, agent: AgentView, request: AllocationRequest, unlearnable_per_cluster: np.ndarray
    ) -> _AgentPlan:
        pool = request.pool
        idx, gap = agent.known_idx, agent.known_gap
        gap_lo, gap_hi = band_gap_bounds(gap, agent.learner.band_low, agent.learner.band_high)
        learnable = ~request.unlearnable[idx] & ~skip_solved(gap, agent.known_solved, gap_lo)
        # skipped known samples that are not already counted as unlearnable
        skipped = idx[~learnable & ~request.unlearnable[idx]]
        available = (
            pool.sizes
            - unlearnable_per_cluster
            - np.bincount(pool.clusters[skipped], minlength=pool.num_clusters)
        )
        return cls(
            gap_lo,
            gap_hi,
            impute_unknown_gaps(gap, pool.clusters[idx], pool.num_clusters),
            idx[learnable],
            gap[learnable],
            idx,
            np.maximum(available, 0),
        )

    def select(
        self,
        pool: PoolIndex,
        quota: np.ndarray,
        unlearnable: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Fill each cluster's quota with the samples nearest the band (inside first)."""
        fresh = self._draw_unmeasured(pool, quota, unlearnable, rng)
        idx = np.concatenate([self.candidate_idx, fresh])
        gaps = np.concatenate([self.candidate_gap, self.imputed[pool.clusters[fresh]]])
        clusters = pool.clusters[idx]
        distance = band_distance(gaps, self.gap_lo, self.gap_hi)
        order = np.lexsort((rng.random(len(idx)), distance, clusters))
        sorted_clusters = clusters[order]
        first = np.searchsorted(sorted_clusters, sorted_clusters, side="left")
        rank = np.arange(len(order)) - first
        chosen = order[rank < quota[sorted_clusters]]
        return rng.permutation(idx[chosen]).astype(np.int64)

    def _draw_unmeasured(
        self,
        pool: PoolIndex,
        quota: np.ndarray,
        unlearnable: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Up to quota[c] distinct never-measured, learnable samples from each cluster c."""
        wanted = np.minimum(quota, pool.sizes)
        draws = np.where(wanted > 0, wanted * 2 + 4, 0)
        cluster_of_draw = np.repeat(np.arange(pool.num_clusters), draws)
        offsets = (rng.random(len(cluster_of_draw)) * pool.sizes[cluster_of_draw]).astype(np.int64)
        picked = pool.order[np.unique(pool.starts[cluster_of_draw] + offsets)]
        picked = picked[~unlearnable[picked] & ~np.isin(picked, self.excluded_idx)]
        got = np.bincount(pool.clusters[picked], minlength=pool.num_clusters)
        short = np.flatnonzero(got < wanted)
        if short.size == 0:
            return picked
        extra = [self._all_unmeasured(pool, c, unlearnable) for c in short]
        keep = picked[~np.isin(pool.clusters[picked], short)]
        return np.concatenate([keep, *extra])

    def _all_unmeasured(self, pool: PoolIndex, cluster: int, unlearnable: np.ndarray) -> np.ndarray:
        start = pool.starts[cluster]
        members = pool.order[start : start + pool.sizes[cluster]]
        return members[~unlearnable[members] & ~np.isin(members, self.excluded_idx)]


@register_policy
class EENetPolicy(AllocationPolicy):
    """EE-Net (method.md section 5): an exploitation MLP predicts each (agent, sample)
    reward, an exploration MLP on its gradient predicts the error; top f1 + f2 per agent.

    Round 1 (no reward yet) is `lada`'s cluster split. Its networks train on the rewards
    stored in Redis and are kept there (`allocator.eenet`), so it must be bound to the run.
    """

    name = "eenet"

    def __init__(self) -> None:
        self.context: PolicyContext | None = None

    def bind(self, context: PolicyContext) -> None:
        self.context = context

    def allocate(self, request: AllocationRequest) -> dict[str, np.ndarray]:
        if self.context is None:
            raise self._unbound("the run's state")
        from allocator.eenet import allocate_eenet  # torch is loaded only for this policy

        return allocate_eenet(request, self.context, LadaPolicy())
