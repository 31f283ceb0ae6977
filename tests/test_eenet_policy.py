"""The `eenet` policy (method.md section 5) through the real round driver, in-process."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from allocator.core import AllocatorCore
from allocator.driver import RoundDriver
from allocator.eenet import STATE_BLOB
from allocator.policies import AllocationRequest, EENetPolicy, PolicyContext, make_policy
from lada.config import AllocatorConfig, AllocatorSettings, LadaHyperParams
from lada.state import Phase, StateStore
from lada.tasks import Problem, load_dataset
from lada.v1 import allocator_pb2
from tests.fixtures_allocator import TEST_POOL, synthetic_stats

PAYING = 0  # the cluster whose samples teach the agent something


def pays_on_one_cluster(cluster: int) -> float:
    return 1.0 if cluster == PAYING else 0.0


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return load_dataset(TEST_POOL)


def eenet_core(store: StateStore, problems: list[Problem], seed: int = 0) -> AllocatorCore:
    """An allocator running `eenet`, bound to its store as AllocatorCore binds policies."""
    config = AllocatorConfig(
        public_pool=TEST_POOL,
        run_id=store.run_id,
        policy="eenet",
        rounds=5,
        seed=seed,
        lada=LadaHyperParams(num_clusters=4),
    )
    core = AllocatorCore(store, config, problems, AllocatorSettings(lost_after_missed_heartbeats=0))
    core.policy.bind(PolicyContext(store, [p.domain for p in problems]))
    return core


def join(core: AllocatorCore, name: str = "a", capacity: int = 12) -> str:
    _, secret, _ = core.invite(name, 0)
    return core.register(name, "", "", [], capacity, core.fingerprint, secret).record.agent_id


def step_until(driver: RoundDriver, r: int, phase: Phase) -> None:
    for _ in range(10):
        if driver.store.current_round() == r and driver.store.round_phase(r) is phase:
            return
        driver.step()
    raise AssertionError(f"round {r} never reached {phase}")


def play(core: AllocatorCore, agent_id: str, r: int, reward: Callable[[int], float]) -> np.ndarray:
    """Allocate round r, report the synthetic reward per cluster, close; the clusters sent."""
    driver = RoundDriver(core)
    step_until(driver, r, Phase.ALLOCATED)
    samples = core.allocation(agent_id, r).samples
    sent = [
        allocator_pb2.AllocatedSample(sample_id=a.sample_id, cluster=a.cluster) for a in samples
    ]
    core.report(agent_id, r, synthetic_stats(sent, reward))
    step_until(driver, r, Phase.CLOSED)
    return np.array([s.cluster for s in samples])


def request_for(core: AllocatorCore, r: int) -> AllocationRequest:
    """Open round r and build the request the driver would hand the policy."""
    driver = RoundDriver(core)
    step_until(driver, r, Phase.OPEN)
    return driver.allocation_request(r, core.store.active_agents(r))


def after_one_paying_round(
    store: StateStore, problems: list[Problem]
) -> tuple[AllocatorCore, str, AllocationRequest]:
    """One agent played round 1 on the paying-cluster reward; the request of round 2."""
    core = eenet_core(store, problems)
    agent_id = join(core)
    play(core, agent_id, 1, pays_on_one_cluster)
    return core, agent_id, request_for(core, 2)


def test_eenet_is_registered_by_name() -> None:
    assert isinstance(make_policy("eenet"), EENetPolicy)


def test_round_one_spreads_the_budget_over_clusters_like_lada(
    store: StateStore, problems: list[Problem]
) -> None:
    core = eenet_core(store, problems)
    join(core)
    request = request_for(core, 1)
    chosen = core.policy.allocate(request)
    assert {k: v.tolist() for k, v in chosen.items()} == {
        k: v.tolist() for k, v in make_policy("lada").allocate(request).items()
    }
    agent_id = request.agents[0].agent_id
    assert np.bincount(core.pool.clusters[chosen[agent_id]], minlength=4).tolist() == [3] * 4


def test_eenet_learns_to_allocate_from_the_cluster_that_pays(
    store: StateStore, problems: list[Problem]
) -> None:
    core = eenet_core(store, problems)
    agent_id = join(core)
    clusters = [play(core, agent_id, r, pays_on_one_cluster) for r in (1, 2, 3)]
    assert np.mean(clusters[0] == PAYING) == 0.25  # round 1: 3 of 12 from each cluster
    assert np.mean(clusters[1] == PAYING) >= 0.75
    assert np.mean(clusters[2] == PAYING) >= 0.75
    assert store.get_blob(STATE_BLOB) is not None


def test_eenet_is_deterministic_given_the_seed(store: StateStore, problems: list[Problem]) -> None:
    twin = StateStore(store.redis, store.run_id + "-twin")
    try:
        runs = []
        for each in (store, twin):
            core = eenet_core(each, problems, seed=5)
            agent_id = join(core)
            for r in (1, 2, 3):
                play(core, agent_id, r, pays_on_one_cluster)
            runs.append([[a.sample_id for a in each.get_allocation(r, agent_id)] for r in (2, 3)])
        assert runs[0] == runs[1]
        assert len(runs[0][0]) == 12
    finally:
        twin.wipe()


def test_a_restarted_allocator_makes_the_same_allocation_from_redis(
    store: StateStore, problems: list[Problem]
) -> None:
    core = eenet_core(store, problems)
    agent_id = join(core)
    for r in (1, 2):
        play(core, agent_id, r, pays_on_one_cluster)
    request = request_for(core, 3)
    trained_for_round_two = store.get_blob(STATE_BLOB)
    first = core.policy.allocate(request)[agent_id].tolist()
    trained_for_round_three = store.get_blob(STATE_BLOB)

    restarted = eenet_core(store, problems)  # a fresh process: the nets come from Redis
    assert restarted.policy.allocate(request_for(restarted, 3))[agent_id].tolist() == first
    assert store.get_blob(STATE_BLOB) == trained_for_round_three  # reused, not retrained

    assert trained_for_round_two is not None
    store.put_blob(STATE_BLOB, trained_for_round_two)  # crashed before saving round 3
    retrained = eenet_core(store, problems)
    assert retrained.policy.allocate(request_for(retrained, 3))[agent_id].tolist() == first


# ---- inputs -----------------------------------------------------------------------------------
def test_an_unbound_eenet_refuses_to_allocate(store: StateStore, problems: list[Problem]) -> None:
    core = eenet_core(store, problems)
    join(core)
    with pytest.raises(RuntimeError, match="policy eenet: not bound"):
        make_policy("eenet").allocate(request_for(core, 1))


def test_domain_tags_must_cover_the_pool(store: StateStore, problems: list[Problem]) -> None:
    core = eenet_core(store, problems)
    join(core)
    policy = make_policy("eenet")
    policy.bind(PolicyContext(store, ["rates"] * 3))
    with pytest.raises(ValueError, match="policy eenet: 3 domain tags for a pool of 240"):
        policy.allocate(request_for(core, 1))


def test_no_agents_means_no_allocation(store: StateStore, problems: list[Problem]) -> None:
    core, agent_id, request = after_one_paying_round(store, problems)
    request.agents = []
    assert core.policy.allocate(request) == {}


def test_budgets_are_capped_by_what_is_learnable_and_never_repeat_a_sample(
    store: StateStore, problems: list[Problem]
) -> None:
    core, agent_id, request = after_one_paying_round(store, problems)
    request.unlearnable[:40] = True
    request.agents[0].capacity = 10_000
    everything = core.policy.allocate(request)[agent_id]
    assert sorted(everything.tolist()) == list(range(40, 240))
    request.agents[0].capacity = 0
    assert core.policy.allocate(request)[agent_id].tolist() == []


def test_samples_the_agent_already_solves_below_its_band_are_skipped(
    store: StateStore, problems: list[Problem]
) -> None:
    core, agent_id, request = after_one_paying_round(store, problems)
    view = request.agents[0]
    view.known_gap = np.arange(len(view.known_idx), dtype=float)  # the lowest is below the band
    view.known_solved = np.ones(len(view.known_idx), bool)
    view.capacity = 10_000
    chosen = set(core.policy.allocate(request)[agent_id].tolist())
    assert int(view.known_idx[0]) not in chosen
    assert len(chosen) == 240 - 3  # q(0.2) of gaps 0..11 is 2.2: gaps 0, 1, 2 are skipped
