"""Simulation mode and cluster mode are one round loop: for the same seed and micro models
(the transformers LLM backend in both) they allocate the same samples, record the same
statistics and fold the same learner state.

The cluster is `lada up` (real processes, gRPC, the test Redis); the simulation is
`simulate` in this process. Log-probs come from different processes, so they are compared
to 1e-4; allocations, flags and path counts must be identical.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from lada.config import ClusterConfig, load_config
from lada.redis_conn import RedisHandle
from lada.simulation import simulate
from lada.state import StateStore
from lada.v1 import allocator_pb2
from lada.zoo import ZooManifest
from tests.procs import REPO_ROOT, run_lada_up

pytestmark = [pytest.mark.slow]

LOGPROB_TOLERANCE = 1e-4
ROUNDS = 2


@pytest.fixture(scope="module")
def modes_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/up-micro.yaml on the transformers backend (the simulation's LLM)."""
    raw = yaml.safe_load((REPO_ROOT / "tests" / "data" / "up-micro.yaml").read_text())
    raw["cluster"].update(run_id="modes", llm_backend="transformers", rounds=ROUNDS)
    path = tmp_path_factory.mktemp("modes") / "modes.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_state(store: StateStore) -> dict[str, Any]:
    """Per (round, agent name): the ordered allocation and the decoded statistics."""
    state: dict[str, Any] = {"allocations": {}, "stats": {}, "learners": {}}
    agents = store.list_agents()
    for round_number in range(1, store.current_round() + 1):
        for agent in agents:
            key = f"{round_number}/{agent.name}"
            state["allocations"][key] = [
                (a.sample_id, a.cluster) for a in store.get_allocation(round_number, agent.agent_id)
            ]
            state["stats"][key] = {
                sample_id: allocator_pb2.SampleStats.FromString(raw)
                for sample_id, raw in store.get_stats(round_number, agent.agent_id).items()
            }
    learners = store.learners()
    state["learners"] = {a.name: learners.get(a.agent_id) for a in agents}
    return state


@pytest.fixture(scope="module")
def cluster_state(
    modes_config: Path,
    micro_zoo: ZooManifest,
    session_home: Path,
    redis_handle: RedisHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("modes-cluster") / "report"
    env = {**os.environ, "LADA_HOME": str(session_home), "REDIS_URL": redis_handle.url}
    result = run_lada_up(modes_config, out, env)
    assert result.returncode == 0, result.stderr[-4000:]
    run_id = json.loads((out / "metrics.json").read_text())["run_id"]
    store = StateStore(redis_handle.client, run_id)
    yield run_state(store)
    store.wipe()


@pytest.fixture(scope="module")
def simulation_state(
    modes_config: Path,
    micro_zoo: ZooManifest,
    redis_handle: RedisHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    config = load_config(ClusterConfig, str(modes_config), section="cluster")
    models = {"llm": micro_zoo.llm, **micro_zoo.slms}
    workdir = tmp_path_factory.mktemp("modes-sim")
    metrics = simulate(config, workdir, redis_handle, models)
    store = StateStore(redis_handle.client, metrics["run_id"])
    yield run_state(store)
    store.wipe()


def test_both_modes_allocate_the_same_samples_each_round(
    cluster_state: dict[str, Any], simulation_state: dict[str, Any]
) -> None:
    expected_keys = {f"{r}/{a}" for r in (1, 2) for a in ("agent-rates", "agent-purchases")}
    assert set(cluster_state["allocations"]) == expected_keys
    assert simulation_state["allocations"] == cluster_state["allocations"]
    assert all(len(samples) == 4 for samples in cluster_state["allocations"].values())


def test_both_modes_record_the_same_statistics(
    cluster_state: dict[str, Any], simulation_state: dict[str, Any]
) -> None:
    assert set(simulation_state["stats"]) == set(cluster_state["stats"])
    compared_paths = 0
    for key, cluster_stats in cluster_state["stats"].items():
        simulated = simulation_state["stats"][key]
        assert set(simulated) == set(cluster_stats), key
        for sample_id, stat in cluster_stats.items():
            twin = simulated[sample_id]
            assert (twin.correct_before, twin.correct_after) == (
                stat.correct_before,
                stat.correct_after,
            )
            assert [p.correct for p in twin.paths] == [p.correct for p in stat.paths]
            for name in (
                "llm_normalized_logprob",
                "slm_normalized_logprob_before",
                "slm_normalized_logprob_after",
            ):
                got = [getattr(p, name) for p in twin.paths]
                want = [getattr(p, name) for p in stat.paths]
                assert got == pytest.approx(want, abs=LOGPROB_TOLERANCE), (key, sample_id, name)
            compared_paths += len(stat.paths)
    assert compared_paths >= 2 * 2 * 4 * 2  # rounds x agents x samples x (>= 2 paths each)


def test_both_modes_fold_the_same_learner_state(
    cluster_state: dict[str, Any], simulation_state: dict[str, Any]
) -> None:
    for name, learner in cluster_state["learners"].items():
        twin = simulation_state["learners"][name]
        assert learner is not None and twin is not None, name
        for field in ("reward_sum", "pulls", "band"):
            assert twin[field] == pytest.approx(learner[field], abs=LOGPROB_TOLERANCE), field
