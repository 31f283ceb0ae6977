"""Pytest fixtures for the zoo tests (registered in conftest.py via pytest_plugins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lada.config import ClusterAgentConfig, ClusterConfig
from lada.simulation import simulate
from lada.state import StateStore
from lada.zoo import ZooManifest, build_zoo
from slm_agent.checkpoint import CheckpointStore


def micro_zoo_manifest(root: Path) -> ZooManifest:
    """Build (or reuse, cached by content hash) the micro zoo under `root`/zoo."""
    return build_zoo("micro", root=Path(root) / "zoo", progress=False)


@pytest.fixture(scope="session")
def micro_zoo(session_home: Path) -> ZooManifest:
    """The micro zoo, built once per session (reused across runs with LADA_TEST_HOME)."""
    return micro_zoo_manifest(session_home)


ONE_AGENT_SOURCE = "synthetic:domains=all,n=400,seed=9"


def simulate_one_rates_agent(
    redis_handle: Any, micro_zoo: ZooManifest, tmp_path: Path, run_id: str, **lada: Any
) -> tuple[StateStore, str, CheckpointStore]:
    """A 2-round in-process federation of one micro `rates-clinic` agent (capacity 4, 4
    clusters, a 40-sample pool), with `lada` overrides; its store, agent ID and checkpoints."""
    config = ClusterConfig(
        run_id=run_id,
        profile="micro",
        rounds=2,
        public_size=40,
        test_size=2,
        source=ONE_AGENT_SOURCE,
        agents=[
            ClusterAgentConfig(
                name="rates-clinic", model="slm-rates", domains=["rates"], private_size=20,
                capacity=4,
            )
        ],
    )  # fmt: skip
    config.lada.num_clusters = 4
    for key, value in lada.items():
        setattr(config.lada, key, value)
    metrics = simulate(config, tmp_path, redis_handle, {"llm": micro_zoo.llm, **micro_zoo.slms})
    store = StateStore(redis_handle.client, metrics["run_id"])
    agent_id = store.agent_id_by_name("rates-clinic")
    assert agent_id
    return store, agent_id, CheckpointStore(tmp_path / "agents" / "rates-clinic")
