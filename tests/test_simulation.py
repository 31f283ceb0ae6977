"""Simulation mode: the real round driver, policy and agent training in one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from lada.config import ClusterAgentConfig, ClusterConfig
from lada.simulation import simulate
from lada.state import Phase, StateStore
from lada.zoo import ZooManifest

pytestmark = [pytest.mark.slow]


def test_simulated_round_reports_every_allocated_sample(
    redis_handle, micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    config = ClusterConfig(
        run_id="sim-test",
        profile="micro",
        rounds=1,
        public_size=40,
        test_size=5,
        source="synthetic:domains=all,n=400,seed=9",
        policy="lada",
        loss="contrastive",
        agents=[
            ClusterAgentConfig(
                name="sim-rates",
                model="slm-rates",
                domains=["rates"],
                private_size=20,
                capacity=4,
                contribute=False,
            ),
            ClusterAgentConfig(
                name="sim-purchases",
                model="slm-purchases",
                domains=["purchases"],
                private_size=20,
                capacity=4,
                loss="sft",
                contribute=False,
            ),
        ],
    )
    config.lada.num_clusters = 4
    models = {"llm": micro_zoo.llm, **micro_zoo.slms}
    metrics = simulate(config, tmp_path, redis_handle, models)
    store = StateStore(redis_handle.client, metrics["run_id"])
    assert store.round_phase(1) is Phase.CLOSED
    for name in ("sim-rates", "sim-purchases"):
        (round_one,) = metrics["agents_rounds"][name]
        assert round_one["allocated"] == 4
        assert round_one["reported"] == 4
        assert sum(round_one["clusters"].values()) == 4
        assert (tmp_path / "agents" / name / "checkpoints" / "round-1").is_dir()
    store.wipe()
