"""Contribution requests (method.md section 2): the public samples each agent is asked to write
reasoning paths for, where the LLM is weak and the sample lies in one of the agent's declared
domains. These are the samples the learnability filter never allocates (the LLM has no correct
path on them), so without a request no agent would ever be asked about them.

No Redis and no gRPC here, so the round driver and the in-process simulation share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from allocator.policies import agent_rng
from lada.state import AgentRecord

DRAW_PREFIX = "requests:"  # keeps the request draws apart from the policy's draws
_EMPTY = np.zeros(0, np.int64)


@dataclass
class WeakSamples:
    """Per domain, the pool indices worth asking about: where the LLM's known accuracy is below
    the novelty threshold (`known`) and where nobody knows it yet (`unknown`). Absorbed samples
    and samples the LLM is known to solve are in neither."""

    known: dict[str, np.ndarray]
    unknown: dict[str, np.ndarray]


def weak_samples(
    domains: Sequence[str], accuracy: np.ndarray, absorbed: np.ndarray, max_accuracy: float
) -> WeakSamples:
    """Group the pool once per round, so each agent's selection only touches its domains."""
    tags = np.asarray(domains, dtype=object)
    open_ = ~np.asarray(absorbed, bool)
    known = open_ & (accuracy < max_accuracy)  # NaN compares False: unknown is not known-weak
    unknown = open_ & np.isnan(accuracy)
    out = WeakSamples({}, {})
    for domain in dict.fromkeys(domains):
        in_domain = tags == domain
        out.known[domain] = np.flatnonzero(in_domain & known)
        out.unknown[domain] = np.flatnonzero(in_domain & unknown)
    return out


def select_requests(
    weak: WeakSamples,
    domain_tags: Sequence[str],
    allocated: np.ndarray,
    budget: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Up to `budget` pool indices of the agent's domains: known-weak first, then unknown LLM
    accuracy, each group in random order, never a sample allocated to the agent this round."""
    picked: list[np.ndarray] = []
    need = budget
    for group in (weak.known, weak.unknown):
        if need <= 0:
            break
        chosen = _draw(_in_domains(group, domain_tags), allocated, need, rng)
        picked.append(chosen)
        need -= len(chosen)
    return np.concatenate(picked) if picked else _EMPTY.copy()


def _in_domains(group: Mapping[str, np.ndarray], domain_tags: Sequence[str]) -> np.ndarray:
    parts = [group[d] for d in dict.fromkeys(domain_tags) if d in group]
    return np.concatenate(parts) if parts else _EMPTY


def _draw(
    candidates: np.ndarray, allocated: np.ndarray, need: int, rng: np.random.Generator
) -> np.ndarray:
    """`need` candidates in random order, skipping allocated ones; draws only as many as could
    survive the skip, so a large domain costs no full permutation per agent."""
    size = min(len(candidates), need + len(allocated))
    drawn = candidates[rng.choice(len(candidates), size=size, replace=False)]
    return drawn[~np.isin(drawn, allocated)][:need]


def round_requests(
    seed: int,
    round_number: int,
    agents: Sequence[AgentRecord],
    allocated: Mapping[str, np.ndarray],
    weak: WeakSamples,
    budget: int,
) -> dict[str, np.ndarray]:
    """Every participant's requests, drawn per (seed, round, agent name) like the policies'
    draws, so a restarted allocator or a rerun asks the same questions."""
    return {
        agent.agent_id: select_requests(
            weak,
            agent.domain_tags,
            allocated.get(agent.agent_id, _EMPTY),
            budget,
            agent_rng(seed, round_number, DRAW_PREFIX + (agent.name or agent.agent_id)),
        )
        for agent in agents
    }
