"""Federated splits: a public pool, skewed private sets per agent, per-domain test sets.

Every problem lands in at most one of public / private / test, so no party trains on
what another is evaluated on. Order of carving: test sets, then the public pool, then
the private sets, each from a seeded shuffle of the source's per-domain lists.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lada.tasks.loaders import DatasetSpecError, load_dataset
from lada.tasks.problem import Problem


def pool_fingerprint(problems: Sequence[Problem]) -> str:
    """sha256 over the sorted (id, content) of a pool: every party can check it matches."""
    digest = hashlib.sha256()
    for p in sorted(problems, key=lambda q: q.id):
        digest.update(
            "\x1f".join(
                (p.id, p.question, p.reference, p.answer, p.domain, str(p.difficulty))
            ).encode("utf-8")
        )
        digest.update(b"\x1e")
    return digest.hexdigest()


@dataclass
class AgentSplitSpec:
    """One agent's private set: its home domain(s) and how many samples it holds."""

    name: str
    domains: tuple[str, ...]
    private_size: int = 200


@dataclass
class SplitSpec:
    """How to carve a source into public / private / test sets.

    `skew` is the Dirichlet concentration: an agent's domain mixture is drawn from
    Dirichlet(skew * prior), prior = `own_share` on its domains and the rest spread over the
    others. Large skew -> the mixture is close to the prior; small skew -> more random.
    """

    source: str = "synthetic:domains=all,n=6000,seed=1"
    public_size: int = 2000
    agents: list[AgentSplitSpec] = field(default_factory=list)
    skew: float = 10.0
    own_share: float = 0.9
    test_size: int = 100  # per domain
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitSpec:
        """Parse a YAML mapping; `agents` is a list of {name, domains, private_size} or a
        mapping name -> {domains, private_size}."""
        valid = {"source", "public_size", "agents", "skew", "own_share", "test_size", "seed"}
        unknown = set(data) - valid
        if unknown:
            raise DatasetSpecError(
                f"unknown split field(s) {sorted(unknown)}; valid: {sorted(valid)}"
            )
        raw = data.get("agents", [])
        if isinstance(raw, dict):
            raw = [{"name": name, **(body or {})} for name, body in raw.items()]
        agents = [_agent_from_dict(item) for item in raw]
        kwargs = {k: v for k, v in data.items() if k != "agents"}
        spec = cls(agents=agents, **kwargs)
        spec.public_size, spec.test_size, spec.seed = (
            int(spec.public_size),
            int(spec.test_size),
            int(spec.seed),
        )
        spec.skew, spec.own_share = float(spec.skew), float(spec.own_share)
        return spec


def _agent_from_dict(item: dict[str, Any]) -> AgentSplitSpec:
    valid = {"name", "domains", "private_size"}
    if not isinstance(item, dict) or "name" not in item or set(item) - valid:
        raise DatasetSpecError(f"bad agent entry {item!r}; fields: {sorted(valid)}")
    domains = item.get("domains", ())
    if isinstance(domains, str):
        domains = tuple(d for d in domains.replace("+", ",").split(",") if d)
    return AgentSplitSpec(
        name=str(item["name"]),
        domains=tuple(domains),
        private_size=int(item.get("private_size", 200)),
    )


@dataclass
class FederatedSplit:
    """The carved sets plus the fingerprint of the public pool."""

    public: list[Problem]
    private: dict[str, list[Problem]]  # agent name -> private set
    test: dict[str, list[Problem]]  # domain -> test set
    mixtures: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the public pool."""
        return pool_fingerprint(self.public)


def _take(pool: list[Problem], count: int, what: str) -> list[Problem]:
    if count > len(pool):
        raise DatasetSpecError(
            f"not enough problems for {what}: need {count}, "
            f"{len(pool)} left; enlarge the source (n=...)"
        )
    taken = pool[:count]
    del pool[:count]
    return taken


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Integer counts summing to `total`, proportional to `weights` (largest remainder)."""
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    raw = w * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def agent_mixture(
    domains: Sequence[str],
    own: Sequence[str],
    skew: float,
    own_share: float,
    rng: np.random.Generator,
) -> list[float]:
    """Domain mixture for one agent: Dirichlet(skew * prior) around its home domains."""
    others = len(domains) - len(own)
    share = own_share if others else 1.0
    prior = [share / len(own) if d in own else (1 - share) / others for d in domains]
    alpha = np.maximum(np.asarray(prior) * skew, 1e-3)
    return rng.dirichlet(alpha).tolist()


def home_domains(agent_domains: Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    """An agent's home domains; none given (or `all`) means every domain of the source."""
    return tuple(available) if tuple(agent_domains) in ((), ("all",)) else tuple(agent_domains)


def missing_domains(agent_domains: Sequence[str], available: Sequence[str]) -> list[str]:
    """The agent's home domains the source has no problems of."""
    return [d for d in home_domains(agent_domains, available) if d not in available]


def make_split(spec: SplitSpec) -> FederatedSplit:
    """Carve `spec.source` into disjoint public, private and test sets (deterministic)."""
    problems = load_dataset(spec.source)
    by_domain: dict[str, list[Problem]] = {}
    for p in problems:
        by_domain.setdefault(p.domain, []).append(p)
    domains = sorted(by_domain)
    rng = random.Random(f"lada-split:{spec.seed}")
    for d in domains:
        rng.shuffle(by_domain[d])
    test = {d: _take(by_domain[d], spec.test_size, f"test set of {d}") for d in domains}
    public: list[Problem] = []
    avail = [len(by_domain[d]) for d in domains]
    for d, count in zip(domains, _apportion(spec.public_size, avail), strict=True):
        public.extend(_take(by_domain[d], count, "public pool"))
    rng.shuffle(public)
    nprng = np.random.default_rng(spec.seed)
    private: dict[str, list[Problem]] = {}
    mixtures: dict[str, dict[str, float]] = {}
    for agent in spec.agents:
        own = home_domains(agent.domains, domains)
        unknown = missing_domains(agent.domains, domains)
        if unknown:
            raise DatasetSpecError(
                f"agent {agent.name}: domain(s) {unknown} not in source; available: {domains}"
            )
        mix = agent_mixture(domains, own, spec.skew, spec.own_share, nprng)
        mixtures[agent.name] = dict(zip(domains, mix, strict=True))
        items: list[Problem] = []
        for d, count in zip(domains, _apportion(agent.private_size, mix), strict=True):
            items.extend(_take(by_domain[d], count, f"private set of {agent.name} ({d})"))
        rng.shuffle(items)
        private[agent.name] = items
    return FederatedSplit(public=public, private=private, test=test, mixtures=mixtures)
