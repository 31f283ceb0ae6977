"""Gap scans (`lada.scan_per_round`, an ablation beside the method, issue 15): besides its
allocation each agent is asked to score the LLM's paths on never-measured public samples after
training; the scores reach its known gaps, never its rewards, arms or band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from allocator.client import AgentClient
from allocator.policies import AgentView, AllocationRequest, LearnerState, PoolIndex
from allocator.scans import round_scans, select_scans
from lada.config import ConfigError, LadaHyperParams
from lada.state import Allocation, StateStore
from lada.v1 import allocator_pb2
from lada.zoo import ZooManifest
from tests.fixtures_allocator import allocator_run, wait_phase
from tests.fixtures_zoo import simulate_one_rates_agent

POOL_SIZE = 12
UNLEARNABLE = np.zeros(POOL_SIZE, bool)
UNLEARNABLE[[0, 1]] = True


def _agent(name: str, known: list[int]) -> AgentView:
    params = LadaHyperParams()
    idx = np.array(known, np.int64)
    return AgentView(
        f"id-{name}", 4, LearnerState.fresh(2, params), idx, np.zeros(len(idx)), name=name
    )


def _select(count: int, known: list[int], taken: list[int], key: int = 0) -> list[int]:
    rng = np.random.default_rng(key)
    chosen = select_scans(_agent("x", known), UNLEARNABLE, np.array(taken, np.int64), count, rng)
    return chosen.tolist()


# ---- the selection --------------------------------------------------------------------------
def test_a_scan_takes_only_never_measured_learnable_untaken_samples() -> None:
    chosen = _select(20, known=[2, 3], taken=[4, 11])
    assert sorted(chosen) == [5, 6, 7, 8, 9, 10]


def test_the_scan_count_caps_and_zero_scans_nothing() -> None:
    assert len(_select(3, known=[], taken=[])) == 3
    assert len(set(_select(3, known=[], taken=[]))) == 3
    assert _select(0, known=[], taken=[]) == []


def test_scans_are_off_by_default_and_reproducible_when_on() -> None:
    pool = PoolIndex([f"s{i}" for i in range(POOL_SIZE)], np.arange(POOL_SIZE) % 2, 2)
    agents = [_agent("x", [2]), _agent("y", [3])]

    def scans(params: LadaHyperParams, seed: int) -> dict[str, list[int]]:
        request = AllocationRequest(1, pool, agents, UNLEARNABLE, params, seed)
        chosen = {"id-x": np.array([4]), "id-y": np.array([5])}
        requested = {"id-x": np.array([6])}
        return {k: v.tolist() for k, v in round_scans(request, chosen, requested).items()}

    assert scans(LadaHyperParams(), 0) == {}
    on = LadaHyperParams(scan_per_round=3)
    first = scans(on, 0)
    assert first == scans(on, 0)
    assert not set(first["id-x"]) & {0, 1, 2, 4, 6} and not set(first["id-y"]) & {0, 1, 3, 5}
    assert any(scans(on, seed) != first for seed in (1, 2, 3))


def test_a_negative_scan_count_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"lada\.scan_per_round: must not be negative"):
        LadaHyperParams(scan_per_round=-1).check()


def test_a_scan_is_stored_with_the_allocation_and_read_back(store: StateStore) -> None:
    store.init_run(policy="lada", total_rounds=1, pool_fingerprint="f" * 64, pool_size=10)
    store.open_round(1, deadline_ms=0)
    written = [Allocation("s1", 0, "base"), Allocation("s2", 1, "base", scan_only=True)]
    assert store.record_round_allocations(1, {"agent-1": written}, 0)
    assert store.get_allocation(1, "agent-1") == written


# ---- over gRPC: a scan reaches the known gaps, not the arms ---------------------------------
def _stats(samples: list[allocator_pb2.AllocatedSample]) -> list[allocator_pb2.SampleStats]:
    """One correct LLM path per sample, scored 0.5 nats lower by the agent (gap 0.5)."""
    out = []
    for s in samples:
        path = allocator_pb2.PathStats(
            llm_normalized_logprob=-0.5,
            correct=True,
            slm_normalized_logprob_before=-1.0,
            slm_normalized_logprob_after=-1.0 if s.scan_only else -0.8,
        )
        out.append(
            allocator_pb2.SampleStats(sample_id=s.sample_id, paths=[path], scan_only=s.scan_only)
        )
    return out


@pytest.mark.slow
def test_scanned_samples_become_known_gaps_without_pulls(
    redis_handle, tmp_path: Path, test_pool_fingerprint: str
) -> None:
    with allocator_run(
        redis_handle,
        "gap-scans",
        tmp_path,
        rounds=2,
        min_agents=1,
        lada={"num_clusters": 4, "contribution_requests": 4, "scan_per_round": 6},
    ) as deployment:
        agent = AgentClient(deployment.replicas[0].address)
        agent.register("scanner", 8, test_pool_fingerprint, domain_tags=["rates"])
        with deployment.operator() as operator:
            wait_phase(operator, 1, "ALLOCATED")
            first = agent.get_allocation(1)
            trained = [s.sample_id for s in first.samples if not s.scan_only]
            scanned = [s.sample_id for s in first.samples if s.scan_only]
            assert len(trained) == 8 and len(scanned) == 6
            assert not set(scanned) & set(first.contribution_requests)
            agent.report_stats(1, _stats(list(first.samples)))
            wait_phase(operator, 2, "ALLOCATED")
            second = agent.get_allocation(2)
        learner = deployment.store.learners()[agent.agent_id]
        assert sum(learner["pulls"]) == 8  # the scan pulled no arm
        known = deployment.store.known_gaps(agent.agent_id)
        assert set(known) == set(trained) | set(scanned)
        assert {known[s] for s in scanned} == {"0.5|0"}  # measured, solved unknown
        rescanned = {s.sample_id for s in second.samples if s.scan_only}
        assert len(rescanned) == 6 and not rescanned & (set(trained) | set(scanned))


# ---- end to end: the in-process federation --------------------------------------------------
@pytest.mark.slow
def test_an_agent_scores_its_scan_after_training_and_never_trains_on_it(
    redis_handle, micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    store, agent_id, checkpoints = simulate_one_rates_agent(
        redis_handle, micro_zoo, tmp_path, "scans", scan_per_round=5
    )
    for r in (1, 2):
        outcome = checkpoints.load_outcome(r)
        scans = [s for s in outcome.stats if s.scan_only]
        assert outcome.summary()["samples"] == 4 and outcome.summary()["scanned"] == len(scans)
        assert 0 < len(scans) <= 5
        for stat in scans:
            assert not stat.correct_before and not stat.correct_after
            assert all(
                p.slm_normalized_logprob_before == p.slm_normalized_logprob_after
                for p in stat.paths
            )
        assert "scan" in outcome.seconds
        allocation = store.get_allocation(r, agent_id)
        assert {a.sample_id for a in allocation if a.scan_only} == {s.sample_id for s in scans}
    store.wipe()
