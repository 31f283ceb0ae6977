"""`lada experiment run`: a policy x loss x seed sweep in simulation mode, on micro models,
its runs scheduled as Ray tasks (one local Ray shared by the module) and resumable."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lada.config import ClusterConfig, load_config
from lada.experiment import (
    CODE_PACKAGES,
    SCENARIOS,
    SweepError,
    SweepOutcome,
    check_sources,
    code_digest,
    config_digest,
    default_base,
    first_local_only,
    parse_seeds,
    plan_runs,
    ray_session,
    render_phase_table,
    render_table,
    run_experiment,
    run_sweep,
    summarise,
    sweep_path_cache,
)
from lada.zoo import ZooManifest
from tests.procs import REPO_ROOT

SIMULATION_PHASES = [
    "set up (data, models)",
    "allocate (policy)",
    "LLM paths for the agents",
    "agents' rounds, the rest",
    "close (fold, LLM absorb)",
    "LLM evaluation",
]
AGENT_STEPS = ["own paths", "score before", "greedy before", "train", "score after"]

pytestmark = [pytest.mark.slow]

MICRO_SWEEP = {
    "experiment": {
        "rounds": 1,
        "public_size": 40,
        "test_size": 3,
        "source": "synthetic:domains=all+units,n=400,seed=4",
        "agents": [{"private_size": 20, "capacity": 4}],
        "lada": {"num_clusters": 4},
    }
}
OPTIONS: dict[str, Any] = {
    "profile": "micro",
    "address": None,
    "workers": 2,
    "cpus_per_run": 1.0,
    "path_cache": "auto",
}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module (starting one costs seconds), shut down after it."""
    import ray

    with ray_session(None, workers=2, cpus_per_run=1.0):
        yield
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def sweep(
    micro_zoo: ZooManifest, local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    config = out / "sweep.yaml"
    config.write_text(yaml.safe_dump(MICRO_SWEEP))
    code = run_experiment(str(config), "S1", "lada,random", "sft", 2, "micro", str(out))
    assert code == 0
    return out


def sweep_base(out: Path) -> ClusterConfig:
    return load_config(ClusterConfig, str(out / "sweep.yaml"), section="experiment")


def resweep(
    base: ClusterConfig, out: Path, policies: list[str], seeds: int | list[int]
) -> SweepOutcome:
    return run_sweep(base, (["S1"], policies, ["sft"], seeds), out, OPTIONS)


def experiment_run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`lada experiment run ARGS` in its own process, as a user runs it (`env`: added to
    this process's environment)."""
    return subprocess.run(
        [sys.executable, "-m", "lada.cli", "experiment", "run", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr


def test_every_method_runs_once_per_seed(sweep: Path) -> None:
    runs = json.loads((sweep / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in runs) == [
        ("lada+sft", 0),
        ("lada+sft", 1),
        ("local-only", 0),  # measured by the random runs: the starting models
        ("local-only", 1),
        ("random+sft", 0),
        ("random+sft", 1),
    ]
    for run in runs:
        assert set(run["final"]) == {
            "s1-agent0-purchases",
            "s1-agent1-rates",
            "s1-agent2-units",  # every scenario has a client-only member
        }
    for run in (r for r in runs if r["method"] != "local-only"):
        assert run["samples_distilled"] == 3 * 4  # three agents, one round, capacity 4
        assert "base" in run["llm_accuracy"]


def test_the_table_gives_mean_and_spread_over_seeds_and_the_llm_columns(sweep: Path) -> None:
    table = (sweep / "results.md").read_text().split("Wall seconds per phase")[0]
    rows = {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| S1")}
    assert (sweep / "results-S1.png").stat().st_size > 0  # one plot per scenario
    assert set(rows) == {"lada+sft", "random+sft", "local-only"}
    assert all(" | 2 | " in row and " ± " in row for row in rows.values())
    assert all(" -> " in row for m, row in rows.items() if m != "local-only")  # LLM before -> after


def test_each_run_records_which_test_domains_its_llms_adapter_answered(sweep: Path) -> None:
    runs = [r for r in json.loads((sweep / "results.json").read_text()) if r.get("policy")]
    for run in runs:
        shares = run["llm_adapter_share"]
        assert set(shares) == set(run["llm_accuracy_by_domain"]["base"]) - {"all"}
        assert all(0.0 <= share <= 1.0 for share in shares.values())


def test_each_run_records_its_test_sets_the_same_for_every_method_of_a_seed(sweep: Path) -> None:
    runs = json.loads((sweep / "results.json").read_text())
    by_seed: dict[int, set[str]] = {}
    for run in runs:
        by_seed.setdefault(run["seed"], set()).add(run["test_sets"])
    assert all(len(digests) == 1 for digests in by_seed.values())  # local-only rows included
    assert by_seed[0] != by_seed[1]  # another seed draws other test sets
    assert all(len(d) == 16 for digests in by_seed.values() for d in digests)


def test_each_run_records_where_its_minutes_went(sweep: Path) -> None:
    runs = [r for r in json.loads((sweep / "results.json").read_text()) if r.get("policy")]
    assert len(runs) == 4
    for run in runs:
        phases = run["phase_seconds"]
        evaluations = ["agents' evaluation"] + (
            ["starting models' evaluation"] if run["policy"] == "random" else []
        )
        agent_steps = [p for p in phases if p.startswith("agent: ")]
        assert {f"agent: {step}" for step in AGENT_STEPS} <= set(agent_steps)
        assert set(phases) == {*SIMULATION_PHASES, *agent_steps, *evaluations}
        assert all(seconds >= 0 for seconds in phases.values())
        # the simulation's phases fit in its wall time (the evaluations come after it)
        simulated = sum(phases[p] for p in [*SIMULATION_PHASES, *agent_steps])
        assert simulated <= run["wall_seconds"] + 0.5
    table = (sweep / "results.md").read_text().split("Wall seconds per phase of a run:")[1]
    assert "| S1 | lada+sft | 2 | " in table and "| S1 | random+sft | 2 | " in table


def test_the_phase_table_averages_each_phase_over_a_methods_runs() -> None:
    runs = [
        {"scenario": "S1", "method": "lada+sft", "phase_seconds": {"rounds": 10.0, "eval": 4.0}},
        {"scenario": "S1", "method": "lada+sft", "phase_seconds": {"rounds": 20.0, "eval": 6.0}},
        {"scenario": "S1", "method": "local-only", "final": {}},
    ]
    assert render_phase_table(runs).splitlines()[2] == "| S1 | lada+sft | 2 | 15 | 5 | 20 |"
    assert render_phase_table(runs[2:]) == ""


def test_a_rerun_resumes_every_finished_run_and_writes_the_same_results(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {name: (sweep / name).read_text() for name in ("results.json", "results.md")}
    grid = ("S1", "lada,random", "sft", 2)
    capsys.readouterr()
    assert run_experiment(str(sweep / "sweep.yaml"), *grid, "micro", str(sweep)) == 0
    printed = capsys.readouterr().out
    assert "resumed 4 of 4 runs" in printed
    assert "[" not in printed.split("resumed")[1].split("| scenario")[0]  # no run line
    assert {name: (sweep / name).read_text() for name in before} == before
    outcome = resweep(sweep_base(sweep), sweep, ["lada", "random"], 2)
    assert (outcome.executed, outcome.resumed, outcome.failed) == (0, 4, 0)
    assert outcome.runs == json.loads(before["results.json"])


def test_a_later_run_of_a_seed_takes_the_base_llms_answers_from_the_sweeps_path_cache(
    sweep: Path, tmp_path: Path
) -> None:
    """The module's sweep left its paths in OUT's path cache; a `full` run of seed 0 reads
    the base LLM's answers to the 15 test problems (5 domains x 3) from it, and scores the
    base LLM exactly as the seed's earlier runs did."""
    shutil.copytree(sweep / "done", tmp_path / "done")
    shutil.copytree(sweep / "path-cache", tmp_path / "path-cache")
    outcome = resweep(sweep_base(sweep), tmp_path, ["full"], 1)
    assert (outcome.executed, outcome.failed) == (1, 0)
    full = next(r for r in outcome.runs if r["method"] == "full+sft")
    assert full["llm_path_cache"]["shared_hits"] >= 15
    earlier = json.loads((sweep / "results.json").read_text())
    for run in (r for r in earlier if r["seed"] == 0 and r.get("policy")):
        assert run["llm_accuracy_by_domain"]["base"] == full["llm_accuracy_by_domain"]["base"]


def test_a_later_run_of_a_seed_reads_the_starting_models_scores_from_the_sweeps_cache(
    sweep: Path, tmp_path: Path
) -> None:
    """`random` and `full` both measure the starting models (local-only); the second to run
    for a seed reads their scores from OUT's scores cache and writes nothing there."""
    shutil.copytree(sweep / "done", tmp_path / "done")
    shutil.copytree(sweep / "scores-cache", tmp_path / "scores-cache")

    def written() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "scores-cache").iterdir()}

    remembered = written()
    assert remembered  # the module's random runs wrote them
    outcome = resweep(sweep_base(sweep), tmp_path, ["full"], 1)
    assert (outcome.executed, outcome.failed) == (1, 0)
    assert written() == remembered  # read, not scored and written again
    (random_seed0,) = (sweep / "done").glob("S1-random-sft-s0-*.json")
    full = next(r for r in outcome.runs if r["method"] == "full+sft")
    assert full["local_only"] == json.loads(random_seed0.read_text())["local_only"]


def test_the_sweeps_path_cache_is_off_with_a_remote_ray_unless_given_a_url(tmp_path: Path) -> None:
    with sweep_path_cache(tmp_path, "auto", "ray://head:10001") as url:
        assert url == ""  # the nodes cannot reach an embedded Redis on this machine
    with sweep_path_cache(tmp_path, "redis://cache:6379/3", "ray://head:10001") as url:
        assert url == "redis://cache:6379/3"
    with sweep_path_cache(tmp_path, "off", None) as url:
        assert url == ""
    assert not (tmp_path / "path-cache").exists()
    with sweep_path_cache(tmp_path, "auto", None) as url:
        assert url.startswith("unix://")
    assert (tmp_path / "path-cache").is_dir()  # kept, so a rerun reuses the paths


def test_a_changed_setting_reruns_and_a_subset_of_the_grid_resumes(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(sweep / "done", tmp_path / "done")
    base = sweep_base(sweep)
    subset = resweep(base, tmp_path, ["lada"], 1)
    assert (subset.executed, subset.resumed) == (0, 1)
    changed = resweep(dataclasses.replace(base, public_size=41), tmp_path, ["lada"], 1)
    assert (changed.executed, changed.resumed, changed.failed) == (1, 0, 0)
    assert len(list((tmp_path / "done").glob("*.json"))) == 5  # the old four stay
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("[1/1]")]
    assert line and " S1 lada sft s0  acc own " in line[0] and " ETA 00:00" in line[0]


def test_named_seeds_are_the_runs_of_those_seeds_in_a_counted_sweep(
    sweep: Path, tmp_path: Path
) -> None:
    shutil.copytree(sweep / "done", tmp_path / "done")
    outcome = resweep(sweep_base(sweep), tmp_path, ["lada", "random"], parse_seeds("1-1"))
    assert (outcome.executed, outcome.resumed, outcome.failed) == (0, 2, 0)
    assert {(run["method"], run["seed"]) for run in outcome.runs} == {
        ("lada+sft", 1),
        ("random+sft", 1),
        ("local-only", 1),  # every sweep's table carries the agents' local-only baseline
    }


@pytest.mark.parametrize(
    ("text", "seeds"), [("3", [0, 1, 2]), ("1,3", [1, 3]), ("2-4", [2, 3, 4]), ("0-1,4", [0, 1, 4])]
)
def test_seeds_are_a_count_a_list_or_a_range(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "x", "3-1", "-1", ""])
def test_seeds_that_name_no_seed_are_one_line_exit_1_and_run_nothing(
    text: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    grid = ["--scenarios", "S1", "--policies", "lada", "--losses", "sft", "--seeds", text]
    result = experiment_run_cli(*grid, "--profile", "micro", "--out", str(out))
    assert_one_line_error(result, f"--seeds {text!r}: expected N (seeds 0..N-1, N >= 1)")
    assert not out.exists()


def test_report_only_tables_the_finished_part_of_a_larger_grid_and_runs_nothing(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sweep run as several commands into one OUT is reported as one; unfinished runs of
    the grid are left out, not started."""
    shutil.copytree(sweep / "done", tmp_path / "done")
    config = str(sweep / "sweep.yaml")
    capsys.readouterr()
    code = run_experiment(
        config, "S1", "lada,random,full", "sft", 3, "micro", str(tmp_path), report_only=True
    )
    assert code == 0
    assert "report only: 4 of 9 runs finished; 5 not run and left out" in capsys.readouterr().out
    assert len(list((tmp_path / "done").glob("*.json"))) == 4
    runs = json.loads((tmp_path / "results.json").read_text())
    methods = {(r["method"], r["seed"]) for r in runs if r["method"] != "local-only"}
    assert methods == {(m, s) for m in ("lada+sft", "random+sft") for s in (0, 1)}
    assert "full+sft" not in (tmp_path / "results.md").read_text()


def test_report_only_with_no_finished_run_is_an_error_naming_the_flag(
    micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    with pytest.raises(SweepError, match="--report-only: no run of this grid has finished"):
        run_experiment(None, "S1", "lada", "sft", 1, "micro", str(tmp_path), report_only=True)
    assert not (tmp_path / "results.md").exists()


def test_a_set_override_resumes_the_runs_its_yaml_twin_finished(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--set lada.num_clusters=4` on a YAML without it is the same setting as the YAML with
    it: the same run keys, so all four runs resume and nothing runs."""
    shutil.copytree(sweep / "done", tmp_path / "done")
    plain = {"experiment": {k: v for k, v in MICRO_SWEEP["experiment"].items() if k != "lada"}}
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(plain))
    grid = ("S1", "lada,random", "sft", 2)
    capsys.readouterr()
    code = run_experiment(
        str(tmp_path / "plain.yaml"),
        *grid,
        "micro",
        str(tmp_path),
        overrides=("lada.num_clusters=4",),
    )
    assert code == 0
    assert "resumed 4 of 4 runs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("nonsense", "--set 'nonsense': expected KEY=VALUE"),
        ("lada.no_such=1", "--set lada.no_such=1: lada: unknown field 'no_such'"),
        ("lada.ucb_alpha=abc", "--set lada.ucb_alpha=abc: ucb_alpha: cannot read 'abc' as float"),
        ("lada.first_round_split=x", "lada.first_round_split: 'x' is not one of even, prop"),
        ("agent_learning_rate=0", "agent_learning_rate: 0.0 must be a finite number > 0"),
        ("agent_lr_schedule=cosine", "agent_lr_schedule: 'cosine' is not one of"),
    ],
)
def test_a_bad_set_is_one_line_exit_1_and_runs_nothing(
    setting: str, says: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    grid = ["--scenarios", "S1", "--policies", "lada", "--losses", "sft", "--seeds", "1"]
    result = experiment_run_cli("--set", setting, *grid, "--profile", "micro", "--out", str(out))
    assert_one_line_error(result, says)
    assert not out.exists()  # refused before anything was written


def test_an_unknown_private_paths_in_the_environment_is_one_line_exit_1_and_runs_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    grid = ["--scenarios", "S1", "--policies", "lada", "--losses", "sft", "--seeds", "1"]
    env = {"LADA_AGENT_TRAINER__PRIVATE_PATHS": "answers"}
    result = experiment_run_cli(*grid, "--profile", "micro", "--out", str(out), env=env)
    assert_one_line_error(result, "private_paths: 'answers' is not one of reference, own")
    assert not out.exists()


def test_a_source_without_a_scenario_s_home_domain_is_one_line_exit_1_and_runs_nothing(
    micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    grid = ["--scenarios", "S2", "--policies", "random", "--losses", "sft", "--seeds", "3"]
    no_units = "source=synthetic:domains=all,n=600,seed=5"
    result = experiment_run_cli("--set", no_units, *grid, "--profile", "micro", "--out", str(out))
    assert_one_line_error(result, "has no units problems, the home of S2's client s2-agent2-units")
    assert not out.exists()


def test_the_built_in_base_gives_every_scenario_its_client_only_domain(
    micro_zoo: ZooManifest,
) -> None:
    specs = plan_runs(
        default_base("micro"),
        (list(SCENARIOS), ["random"], ["sft"], 1),
        set(micro_zoo.slms),
        micro_zoo.key,
    )
    check_sources(specs)  # raised for every scenario before: the base's source had no units
    assert len(specs) == len(SCENARIOS) == 4


def test_a_misspelt_trainer_variable_is_one_line_exit_1_and_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    grid = ["--scenarios", "S1", "--policies", "lada", "--losses", "sft", "--seeds", "1"]
    env = {"LADA_AGENT_TRAINER__PRIVATE_PATH": "own"}  # the setting is PRIVATE_PATHS
    result = experiment_run_cli(*grid, "--profile", "micro", "--out", str(out), env=env)
    assert_one_line_error(result, "did you mean LADA_AGENT_TRAINER__PRIVATE_PATHS?")
    assert not out.exists()


def test_a_failed_run_is_reported_saved_nowhere_and_retried_next_time(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = resweep(sweep_base(sweep), tmp_path, ["no-such-policy"], 1)
    assert (outcome.executed, outcome.failed, outcome.runs) == (0, 1, [])
    assert " FAILED " in capsys.readouterr().out
    assert not list((tmp_path / "done").glob("*.json"))


def test_a_sweep_killed_with_sigkill_loses_only_the_run_in_flight(
    sweep: Path, tmp_path: Path
) -> None:
    """The driver dies mid-sweep (one run done, one in flight); the rerun runs only one."""
    args = ["--config", str(sweep / "sweep.yaml"), "--policies", "lada,random", "--losses"]
    args += ["sft", "--seeds", "1", "--workers", "1", "--profile", "micro", "--out", str(tmp_path)]
    log = (tmp_path / "driver.log").open("w+")
    driver = subprocess.Popen(
        [sys.executable, "-m", "lada.cli", "experiment", "run", *args],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 180
    while "[1/2]" not in (tmp_path / "driver.log").read_text() and driver.poll() is None:
        assert time.monotonic() < deadline, (tmp_path / "driver.log").read_text()
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert "[1/2] S1 lada sft s0  acc own" in (tmp_path / "driver.log").read_text()
    outcome = resweep(sweep_base(sweep), tmp_path, ["lada", "random"], 1)
    assert (outcome.resumed, outcome.executed, outcome.failed) == (1, 1, 0)
    # the random run also measures the starting models (local-only)
    assert [r["method"] for r in outcome.runs] == ["lada+sft", "random+sft", "local-only"]


def test_a_worker_importing_another_checkout_runs_nothing_and_says_where_it_imported_from(
    sweep: Path, tmp_path: Path
) -> None:
    """The sweep starts in a directory that holds another copy of the project (one comment
    differs): Ray puts that directory first on its workers' path, the driver imports this
    checkout. The run must fail, not run the other code."""
    other = tmp_path / "other-checkout"
    for package in CODE_PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, other / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    with (other / "lada" / "tasks" / "problem.py").open("a") as changed:
        changed.write("# another checkout\n")
    args = ["--config", str(sweep / "sweep.yaml"), "--policies", "lada", "--losses", "sft"]
    args += ["--seeds", "1", "--workers", "1", "--profile", "micro", "--out", str(tmp_path / "out")]
    driver = (
        f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); from lada.cli import main; "
        f"sys.argv = ['lada', 'experiment', 'run', *{args!r}]; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", driver], cwd=other, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1, result.stderr
    assert (
        f"FAILED SweepError: this worker imports the project from {other} (code " in result.stdout
    )
    assert "1 of 1 runs failed" in result.stdout
    assert not list((tmp_path / "out" / "done").glob("*.json"))


def test_every_run_records_the_code_it_executed(sweep: Path) -> None:
    runs = json.loads((sweep / "results.json").read_text())
    assert {r["code"] for r in runs if r["method"] != "local-only"} == {code_digest()}


@pytest.mark.parametrize(
    ("address", "says"),
    [("not an address", "expected auto, host:port"), ("127.0.0.1:9", "cannot reach Ray")],
)
def test_a_bad_address_is_one_line_and_exit_1(address: str, says: str) -> None:
    result = experiment_run_cli("--address", address)
    assert_one_line_error(result, says)
    assert result.stdout == ""


def test_a_local_ray_that_never_starts_is_one_line_naming_its_logs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ray's node-startup timeout (a plain Exception after 30 s, ray/_private/node.py) cannot
    be provoked on demand, so `ray.init` is replaced by one raising it: a mock, on purpose."""
    import ray

    def timed_out(**_: Any) -> None:
        raise Exception("The current node timed out during startup. This could happen.\nMore")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(SweepError) as raised, ray_session(None, workers=1, cpus_per_run=1.0):
        pass
    assert str(raised.value) == (
        "cannot start Ray at this machine: The current node timed out during startup. This "
        f"could happen. (Ray's logs: {tmp_path}/ray/session_latest/logs)"
    )


def _run(method: str, seed: int, own: float, every: float) -> dict[str, Any]:
    agent = {"own": own, "all": every, "own_nlp": -0.1}
    return {"scenario": "S1", "method": method, "seed": seed, "final": {"a": agent}}


def test_each_method_is_compared_with_random_seed_by_seed() -> None:
    runs = [
        _run("random+sft", 0, 0.50, 0.20),
        _run("random+sft", 1, 0.60, 0.30),
        _run("random+sft", 2, 0.40, 0.25),
        _run("lada+sft", 0, 0.55, 0.22),
        _run("lada+sft", 1, 0.64, 0.33),
        _run("lada+sft", 2, 0.46, 0.27),
    ]
    lada = next(r for r in summarise(runs) if r["method"] == "lada+sft")
    # paired own-domain differences 5, 4, 6 points: mean 5, sd 1, t(2) = 4.303 -> ±2.48
    assert lada["vs_random_own"] == pytest.approx(0.05)
    assert lada["vs_random_own_ci"] == pytest.approx(4.303 / 3**0.5 * 0.01, rel=1e-3)
    assert lada["own_mean"] == pytest.approx(0.55)
    row = next(line for line in render_table(summarise(runs)).splitlines() if "lada+sft" in line)
    assert "| +5.0 ± 2.5 (+5.0, +4.0, +6.0) | +2.3 ± 1.4 (+2.0, +3.0, +2.0) |" in row


def test_each_method_is_compared_with_local_training_when_the_sweep_ran_it() -> None:
    runs = [
        _run("random+local", 0, 0.60, 0.25),
        _run("random+local", 1, 0.70, 0.30),
        _run("random+sft", 0, 0.58, 0.25),
        _run("random+sft", 1, 0.67, 0.31),
        {**_run("local-only", 0, 0.55, 0.24)},
    ]
    rows = {r["method"]: r for r in summarise(runs)}
    # paired own-domain differences -2 and -3 points: mean -2.5, sd 0.71, t(1) = 12.71
    assert rows["random+sft"]["vs_local_own"] == pytest.approx(-0.025)
    assert rows["random+sft"]["vs_local_own_ci"] == pytest.approx(
        12.706 * 0.5**0.5 / 2**0.5 * 0.01, rel=1e-3
    )
    assert rows["local-only"]["vs_local_seeds"] == 1.0
    assert "vs_local_own" not in rows["random+local"]
    table = render_table(summarise(runs))
    assert "| own vs local training (pts) | all vs local training (pts) |" in table
    sft = next(line for line in table.splitlines() if "| random+sft |" in line)
    assert "| - | - | -2.5 ± 6.4 (-2.0, -3.0) | +0.5 ± 6.4 (+0.0, +1.0) |" in sft


def test_runs_of_one_seed_on_other_test_sets_are_not_paired() -> None:
    """The same seed under another data source draws other test sets: no paired difference."""
    runs = [
        {**_run("random+sft", 0, 0.50, 0.20), "test_sets": "source-a"},
        {**_run("random+sft", 1, 0.60, 0.30), "test_sets": "source-b"},
        {**_run("lada+sft", 0, 0.40, 0.20), "test_sets": "source-b"},
        {**_run("lada+sft", 1, 0.64, 0.33), "test_sets": "source-b"},
    ]
    lada = next(r for r in summarise(runs) if r["method"] == "lada+sft")
    assert lada["vs_random_seeds"] == 1.0
    assert lada["vs_random_own_by_seed"] == [pytest.approx(0.04)]  # seed 1 only


def test_one_local_only_row_is_kept_per_scenario_seed_and_test_sets() -> None:
    rows = [
        {**_run("local-only", 0, 0.50, 0.20), "test_sets": "source-a"},
        {**_run("local-only", 0, 0.50, 0.20), "test_sets": "source-a"},
        {**_run("local-only", 0, 0.45, 0.20), "test_sets": "source-b"},
    ]
    assert [r["test_sets"] for r in first_local_only(rows)] == ["source-a", "source-b"]


def test_without_local_training_the_table_has_no_local_columns() -> None:
    table = render_table(summarise([_run("random+sft", 0, 0.5, 0.2)]))
    assert "local training" not in table
    assert table.splitlines()[1].count("|") == 12


def test_the_llm_cell_separates_the_client_only_domain_from_the_public_ones() -> None:
    run = _run("lada+sft", 0, 0.5, 0.2)
    run["llm_accuracy"] = {"base": 0.70, "v2": 0.66}
    run["llm_accuracy_by_domain"] = {
        "base": {"all": 0.70, "purchases": 0.96, "rates": 0.94, "units": 0.02},
        "v2": {"all": 0.66, "purchases": 0.90, "rates": 0.86, "units": 0.30},
    }
    (row,) = summarise([run])
    assert row["llm_client_before"] == pytest.approx(0.02)
    assert row["llm_client_after"] == pytest.approx(0.30)
    assert row["llm_public_before"] == pytest.approx(0.95)
    assert row["llm_public_after"] == pytest.approx(0.88)
    assert "client-only 0.020 -> 0.300, public 0.950 -> 0.880" in render_table([row])


def test_the_llm_cell_names_the_single_worst_public_domain_of_any_run() -> None:
    """A mean over domains and seeds would hide one domain's fall in one run."""
    runs = []
    for seed, purchases_after in ((0, 0.95), (1, 0.89)):
        run = _run("lada+sft", seed, 0.5, 0.2)
        run["llm_accuracy"] = {"base": 0.7, "v2": 0.7}
        run["llm_accuracy_by_domain"] = {
            "base": {"all": 0.7, "purchases": 0.95, "rates": 0.94, "units": 0.02},
            "v2": {"all": 0.7, "purchases": purchases_after, "rates": 0.96, "units": 0.9},
        }
        runs.append(run)
    (row,) = summarise(runs)
    assert row["llm_public_worst_change"] == pytest.approx(-0.06)
    assert row["llm_public_worst_domain"] == "purchases"
    assert "(worst run: purchases -6.0 pts)" in render_table([row])


# ---- a run's key covers the settings it reads from the environment -----------------------
@pytest.mark.parametrize(
    "variable",
    ["LADA_AGENT_TRAINER__PRIVATE_KL_WEIGHT", "LADA_LLM_ABSORB_ANCHOR_WEIGHT"],
)
def test_a_run_key_changes_with_a_variable_that_shapes_the_run(variable: str) -> None:
    config = ClusterConfig()
    assert config_digest(config, "zoo", {variable: "5"}) != config_digest(config, "zoo", {})


def test_a_run_key_changes_with_the_llms_absorb_route() -> None:
    ungated = config_digest(ClusterConfig(), "zoo", {"LADA_LLM_ABSORB_ROUTE": "all"})
    assert ungated != config_digest(ClusterConfig(), "zoo", {})


def test_a_run_key_ignores_where_the_llm_keeps_its_state() -> None:
    """Each simulated run gives its LLM its own state directory."""
    moved = config_digest(ClusterConfig(), "zoo", {"LADA_LLM_STATE_DIR": "/elsewhere"})
    assert moved == config_digest(ClusterConfig(), "zoo", {})
