"""`lada up` end to end on micro models: embedded Redis, the allocator, the LLM service on
vLLM and two agents as real processes, then the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from lada.zoo import ZooManifest
from tests.procs import REPO_ROOT, run_lada_up

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

CONFIG = REPO_ROOT / "tests" / "data" / "up-micro.yaml"


@pytest.fixture(scope="module")
def cluster_run(micro_zoo: ZooManifest, session_home: Path, tmp_path_factory) -> dict:
    """One `lada up` run; its exit code, report directory and metrics."""
    out = tmp_path_factory.mktemp("up") / "report"
    env = {**os.environ, "LADA_HOME": str(session_home)}
    env.pop("REDIS_URL", None)  # the embedded default, as `make demo` uses it
    result = run_lada_up(CONFIG, out, env)
    metrics = json.loads((out / "metrics.json").read_text()) if result.returncode == 0 else {}
    return {"result": result, "out": out, "metrics": metrics}


def test_lada_up_finishes_and_writes_the_report(cluster_run) -> None:
    result = cluster_run["result"]
    assert result.returncode == 0, result.stderr[-4000:]
    names = {p.name for p in cluster_run["out"].iterdir()}
    assert {"report.md", "metrics.json", "accuracy.png", "gaps.png", "clusters.png"} <= names


def test_without_a_terminal_progress_is_printed_as_plain_lines(cluster_run) -> None:
    lines = [line for line in cluster_run["result"].stderr.splitlines() if "] round " in line]
    assert any("round 1/2 [" in line for line in lines), lines
    assert "round 2/2 [CLOSED]" in lines[-1]
    assert "agent-rates: REPORTED 4/4 reported" in lines[-1]


def test_every_agent_reports_every_allocated_sample_each_round(cluster_run) -> None:
    rounds_by_agent = cluster_run["metrics"]["agents_rounds"]
    assert set(rounds_by_agent) == {"agent-rates", "agent-purchases"}
    for rounds in rounds_by_agent.values():
        assert [r["round"] for r in rounds] == [1, 2]
        assert all(r["allocated"] == r["reported"] == 4 for r in rounds)
        assert all(sum(r["domains"].values()) == 4 for r in rounds)


def test_report_compares_audited_bytes_with_logit_exchange(cluster_run) -> None:
    metrics = cluster_run["metrics"]
    for name in ("agent-rates", "agent-purchases"):
        sent = {int(k): v for k, v in metrics["bytes_sent"][name].items()}
        logits = {int(k): v for k, v in metrics["logit_exchange_bytes"][name].items()}
        assert sent[1] > 0 and sent[2] > 0
        assert logits[1] > 100 * sent[1]  # numbers per sample vs 128 logits per token
    assert "base" in metrics["llm_accuracy"]
    assert "logit exchange" in (cluster_run["out"] / "report.md").read_text()


def test_report_sets_a_random_baseline_beside_each_agent(cluster_run) -> None:
    baseline = cluster_run["metrics"]["baseline"]
    assert (baseline["policy"], baseline["mode"]) == ("random", "simulation")
    assert set(baseline["final_eval"]) == {"agent-rates", "agent-purchases"}
    final = cluster_run["metrics"]["final_eval"]
    for name, row in baseline["final_eval"].items():
        assert row["before"] == final[name]["before"]  # the same starting models and test set
        assert 0.0 <= row["after"] <= 1.0
    assert (
        "after a `random` run at the same budget" in (cluster_run["out"] / "report.md").read_text()
    )


def test_each_own_domain_change_is_paired_problem_by_problem(cluster_run) -> None:
    """Up and down counts with a McNemar p-value, for the run and for its baseline."""
    metrics = cluster_run["metrics"]
    for rows in (metrics["final_eval"], metrics["baseline"]["final_eval"]):
        for row in rows.values():
            assert row["own_up"] >= 0 and row["own_down"] >= 0
            assert 0.0 < row["own_p"] <= 1.0
    for row in metrics["final_eval"].values():
        assert len(row["own_correct_before"]) >= row["own_down"]
    assert "McNemar" in (cluster_run["out"] / "report.md").read_text()


def test_the_llm_keeps_its_versions_in_the_run_directory(cluster_run) -> None:
    """So a second `lada up` starts from the base model, not from what this run absorbed."""
    state = cluster_run["out"] / "run" / "llm"
    assert (state / "model_digest.json").exists()
    registry = state / "versions.json"  # written at the first absorb
    versions = (
        [v["version"] for v in json.loads(registry.read_text())["versions"]]
        if registry.exists()
        else ["base"]
    )
    assert versions == ["base"] + [f"v{n}" for n in range(1, len(versions))]
    assert len(versions) <= 3  # at most one absorb per round, 2 rounds
    assert set(cluster_run["metrics"]["llm_accuracy"]) == {"base", versions[-1]}


def test_the_console_carries_no_weight_loading_bars_or_redis_shutdown_noise(cluster_run) -> None:
    console = cluster_run["result"].stdout + cluster_run["result"].stderr
    assert "Loading weights" not in console
    assert "shutdown failed" not in console
    assert "leaked semaphore" not in console  # the baseline's child process exits cleanly


def test_every_process_is_stopped_at_the_end(cluster_run) -> None:
    workdir = str(cluster_run["out"] / "run")
    leftovers = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if workdir in cmdline:
            leftovers.append(cmdline)
    assert leftovers == []
