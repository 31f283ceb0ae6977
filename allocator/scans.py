"""Gap scans (`lada.scan_per_round`; not part of the paper's method, an ablation beside it).

The filter ranks a sample by its measured gap only once the agent has reported on it, and an
agent reports only on what it was allocated: 15% of the pool a round. A scan asks each agent
to score, after the round's training, the LLM's paths on some never-measured public samples
as well, without training on them, so that the next round's band ranks measured gaps rather
than cluster medians (docs/results.md, "what the policies chose").

No Redis and no gRPC here, so the round driver and the in-process simulation share it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from allocator.policies import AgentView, AllocationRequest, agent_rng

DRAW_PREFIX = "scans:"  # keeps the scan draws apart from the policy's and the requests' draws
_EMPTY = np.zeros(0, np.int64)


def select_scans(
    agent: AgentView,
    unlearnable: np.ndarray,
    taken: np.ndarray,
    count: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Up to `count` pool indices, in random order, that the agent has never measured, on which
    the LLM is not known to have no correct path (no gap to measure), and that are not `taken`
    (allocated to it or requested of it this round)."""
    open_ = ~np.asarray(unlearnable, bool)
    open_[agent.known_idx] = False
    open_[taken] = False
    candidates = np.flatnonzero(open_)
    take = min(max(count, 0), len(candidates))
    return rng.choice(candidates, size=take, replace=False).astype(np.int64)


def round_scans(
    request: AllocationRequest,
    chosen: Mapping[str, np.ndarray],
    requested: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Every participant's scan, drawn per (seed, round, agent name) like the policy's draws,
    so a restarted allocator or a rerun scans the same samples; empty when scans are off."""
    count = request.params.scan_per_round
    if count <= 0:
        return {}
    return {
        agent.agent_id: select_scans(
            agent,
            request.unlearnable,
            np.concatenate(
                [chosen.get(agent.agent_id, _EMPTY), requested.get(agent.agent_id, _EMPTY)]
            ).astype(np.int64),
            count,
            agent_rng(request.seed, request.round, DRAW_PREFIX + agent.draw_key),
        )
        for agent in request.agents
    }
