"""Simulation mode: the real round driver, policy and agent training in one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from allocator.llm_gateway import Contribution
from lada.cluster import write_jsonl
from lada.config import ClusterAgentConfig, ClusterConfig
from lada.simulation import InProcessLLMGateway, build_llm, simulate
from lada.state import Phase, StateStore
from lada.tasks import load_dataset
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
        # what it was given by domain, and the share from its home domain
        assert sum(round_one["domains"].values()) == 4
        home = name.removeprefix("sim-")
        assert round_one["home_share"] == round_one["domains"].get(home, 0) / 4
        # the round's fold is on record: where it left the band, and each gap's reward terms
        assert len(round_one["band_after"]) == 2
        assert len(round_one["gaps"]) == len(round_one["nlp_progress"])
        assert len(round_one["gaps"]) == len(round_one["greedy_flips"])
        assert len(round_one["gaps"]) == len(round_one["gap_clusters"])
        assert (tmp_path / "agents" / name / "checkpoints" / "round-1").is_dir()
    store.wipe()


def test_the_in_process_gateway_lets_the_round_driver_absorb_into_the_llm(
    micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    public = write_jsonl(load_dataset("synthetic:domains=all,n=6,seed=13"), tmp_path / "pool.jsonl")
    gateway = InProcessLLMGateway(build_llm(micro_zoo.llm, public, tmp_path / "llm"))
    problems = load_dataset(public)
    ids = [p.id for p in problems]
    accuracy = gateway.accuracy(ids[:2], paths=2, temperature=0.8)
    assert set(accuracy) == set(ids[:2]) and all(v.endswith("/2") for v in accuracy.values())
    contributions = [Contribution("agent-x", p.id, " " + p.reference) for p in problems[:4]]
    before = [gateway.score(c.sample_id, [c.text])[0] for c in contributions]
    version = gateway.absorb(contributions)
    assert version != "base" and gateway.serving_version() == version
    after = [gateway.score(c.sample_id, [c.text], version)[0] for c in contributions]
    assert sum(after) > sum(before)  # the absorbed paths became more likely
    gateway.core.close()


def test_the_simulated_llm_reads_the_llm_services_variables(
    micro_zoo: ZooManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `lada up`'s LLM service does, so a sweep measures what a cluster would serve."""
    monkeypatch.setenv("LADA_LLM_ABSORB_ROUTE", "all")
    monkeypatch.setenv("LADA_LLM_STATE_DIR", str(tmp_path / "not-this-one"))
    public = write_jsonl(load_dataset("synthetic:domains=all,n=6,seed=13"), tmp_path / "pool.jsonl")
    core = build_llm(micro_zoo.llm, public, tmp_path / "llm")
    try:
        assert core.extras.absorb_route == "all"
        assert core.state_dir == tmp_path / "llm"
    finally:
        core.close()
