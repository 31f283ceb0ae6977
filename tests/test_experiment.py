"""`lada experiment run`: a policy x loss x seed sweep in simulation mode, on micro models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lada.experiment import run_experiment
from lada.zoo import ZooManifest

pytestmark = [pytest.mark.slow]

MICRO_SWEEP = {
    "experiment": {
        "rounds": 1,
        "public_size": 40,
        "test_size": 3,
        "source": "synthetic:domains=all,n=400,seed=4",
        "agents": [{"private_size": 20, "capacity": 4}],
        "lada": {"num_clusters": 4},
    }
}


@pytest.fixture(scope="module")
def sweep(micro_zoo: ZooManifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    config = out / "sweep.yaml"
    config.write_text(yaml.safe_dump(MICRO_SWEEP))
    code = run_experiment(str(config), "S1", "lada,random", "sft", 2, "micro", str(out))
    assert code == 0
    return out


def test_every_method_runs_once_per_seed(sweep: Path) -> None:
    runs = json.loads((sweep / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in runs) == [
        ("lada+sft", 0),
        ("lada+sft", 1),
        ("random+sft", 0),
        ("random+sft", 1),
    ]
    for run in runs:
        assert set(run["final"]) == {
            "s1-agent0-purchases",
            "s1-agent1-rates",
            "s1-agent2-percentages",
        }
        assert run["samples_distilled"] == 3 * 4  # three agents, one round, capacity 4
        assert "base" in run["llm_accuracy"]


def test_the_table_gives_mean_and_spread_over_seeds_and_the_llm_columns(sweep: Path) -> None:
    table = (sweep / "results.md").read_text()
    rows = {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| S1")}
    assert set(rows) == {"lada+sft", "random+sft"}
    assert all(" | 2 | " in row and " ± " in row for row in rows.values())
    assert all(" -> " in row for row in rows.values())  # LLM accuracy before -> after
