"""`lada experiment choices`: what a policy allocated, placed in the pool's gap quintiles
(taken from `full`, which sees the whole pool, else from `random`), how concentrated on
clusters, how much from the agent's home domain, and greedy accuracy on it before -> after."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lada.choices import (
    choice_rows,
    equal_quota_rows,
    quintile_shares,
    reference_gaps,
    render_choices,
    reward_rows,
    top_cluster_share,
)
from tests.test_cli import lada

POOL_GAPS = [i / 10 for i in range(10)]  # quintile edges 0.18, 0.36, 0.54, 0.72


def _run(policy: str, gaps: list[float], clusters: dict[str, int], seed: int = 0) -> dict:
    return {
        "scenario": "S9",
        "seed": seed,
        "method": f"{policy}+sft",
        "policy": policy,
        "agents_rounds": {
            "agent-a": [
                {
                    "round": 1,
                    "allocated": len(gaps),
                    "gaps": gaps,
                    "clusters": clusters,
                    "accuracy_before": 0.25,
                    "accuracy_after": 0.5,
                }
            ]
        },
    }


def test_shares_place_each_gap_in_the_reference_quintile() -> None:
    shares = quintile_shares(np.array([0.05, 0.95, 0.85]), np.array(POOL_GAPS))
    assert shares.tolist() == pytest.approx([1 / 3, 0, 0, 0, 2 / 3])


def test_full_is_the_reference_over_random_whatever_the_order() -> None:
    random_run = _run("random", [0.5, 0.6], {"0": 2})
    full_run = _run("full", POOL_GAPS, {"0": 10})
    for runs in ([random_run, full_run], [full_run, random_run]):
        assert reference_gaps(runs)[("S9", 0, "agent-a", 1)].tolist() == POOL_GAPS


def test_top_cluster_share_is_the_largest_arms_share() -> None:
    assert top_cluster_share({"1": 3, "2": 1}) == 0.75


def test_a_rows_figures_are_the_mean_over_seeds_and_agents() -> None:
    runs = [
        _run("full", POOL_GAPS, {"0": 5, "1": 5}),
        _run("lada", [0.05, 0.95, 0.85], {"0": 3}),
        _run("full", POOL_GAPS, {"0": 5, "1": 5}, seed=1),
        _run("lada", [0.05, 0.15, 0.25], {"0": 1, "1": 2}, seed=1),
    ]
    (lada_row,) = [r for r in choice_rows(runs) if r["method"] == "lada+sft"]
    assert lada_row["agent_rounds"] == 2
    assert lada_row["shares"] == pytest.approx([(1 / 3 + 2 / 3) / 2, 1 / 6, 0, 0, 1 / 3])
    assert lada_row["mean_gap"] == pytest.approx(((0.05 + 0.95 + 0.85) / 3 + 0.15) / 2)
    assert lada_row["top_cluster"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert (lada_row["acc_before"], lada_row["acc_after"]) == (0.25, 0.5)


def test_a_row_shows_where_the_fold_left_the_band_on_average() -> None:
    runs = [_run("lada", [0.5], {"0": 1}, seed) for seed in (0, 1)]
    for run, band in zip(runs, ([0.25, 0.85], [0.35, 0.95]), strict=True):
        run["agents_rounds"]["agent-a"][0]["band_after"] = band
    (row,) = choice_rows(runs)
    assert (row["band_low"], row["band_high"]) == pytest.approx((0.30, 0.90))


def test_a_row_shows_the_home_domain_share_of_the_runs_that_recorded_it() -> None:
    runs = [_run("lada", [0.5], {"0": 4}, seed) for seed in (0, 1, 2)]
    runs[0]["agents_rounds"]["agent-a"][0]["home_share"] = 0.25
    runs[1]["agents_rounds"]["agent-a"][0]["home_share"] = 0.75
    # seed 2 ran before the share was recorded: left out of the mean, not counted as 0
    (row,) = choice_rows(runs)
    assert row["home_share"] == pytest.approx(0.5)
    assert "| 50% |" in render_choices([row])


def _with_terms(run: dict, progress: list[float], flips: list[float]) -> dict:
    run["agents_rounds"]["agent-a"][0] |= {"nlp_progress": progress, "greedy_flips": flips}
    return run


def test_the_reward_terms_are_averaged_per_gap_quintile_of_the_reference() -> None:
    runs = [
        _run("full", POOL_GAPS, {"0": 10}),
        _with_terms(_run("lada", [0.05, 0.1, 0.95], {"0": 3}), [0.1, 0.3, 0.8], [1, 0, -1]),
    ]
    (row,) = reward_rows(runs)  # `full` recorded no reward terms: no row of its own
    assert row["method"] == "lada+sft"
    assert row["samples"] == [2, 0, 0, 0, 1]
    assert row["nlp_progress"][0] == pytest.approx(0.2)
    assert row["nlp_progress"][4] == pytest.approx(0.8)
    assert row["greedy_flips"][0] == pytest.approx(0.5)
    assert np.isnan(row["nlp_progress"][2])


def test_an_equal_quota_per_cluster_weights_a_small_clusters_quintiles_like_a_large_ones() -> None:
    full_run = _run("full", POOL_GAPS, {"0": 8, "1": 2})
    # eight samples of cluster 0 spread over Q1-Q4; the two largest gaps form cluster 1
    full_run["agents_rounds"]["agent-a"][0]["gap_clusters"] = [0] * 8 + [1] * 2
    (row,) = equal_quota_rows([full_run])
    assert row["shares"] == pytest.approx([1 / 8, 1 / 8, 1 / 8, 1 / 8, 1 / 2])


def test_the_command_renders_a_table_from_results_files(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps([_run("full", POOL_GAPS, {"0": 10}), _run("lada", [0.9], {})]))
    out = lada("experiment", "choices", str(results))
    assert out.returncode == 0, out.stderr
    assert (
        "| S9 | lada+sft | 1 | 1 | 0.900 | 0% | 0% | 0% | 0% | 100% | - | 0.0 | - |" in out.stdout
    )
    assert "per gap quintile" not in out.stdout  # no run recorded the reward's terms


def test_the_command_adds_the_reward_per_quintile_when_runs_recorded_it(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    lada_run = _with_terms(_run("lada", [0.9], {"0": 1}), [0.25], [1])
    results.write_text(json.dumps([_run("full", POOL_GAPS, {"0": 10}), lada_run]))
    out = lada("experiment", "choices", str(results))
    assert out.returncode == 0, out.stderr
    assert "| S9 | lada+sft | nlp progress | - | - | - | - | +0.2500 |" in out.stdout
    assert "| S9 | lada+sft | greedy flip | - | - | - | - | +1.000 |" in out.stdout


def test_a_file_that_is_not_a_list_of_runs_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scenario": "S1"}))
    out = lada("experiment", "choices", str(bad))
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "bad.json: expected a list of runs" in out.stderr
