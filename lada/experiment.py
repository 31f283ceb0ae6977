"""`lada experiment run`: policy x loss x scenario x seed sweeps in simulation mode.

Each combination runs the real round driver, policies and agent training in one process
(lada.simulation), then evaluates every agent's final checkpoint on held-out test sets of
its own domain and of all domains. The baseline "local-only" is each agent's starting
model, evaluated the same way (no collaboration at all).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from lada.config import ClusterAgentConfig, ClusterConfig, lada_home, load_config
from lada.redis_conn import shutdown_embedded, start_embedded
from lada.report import evaluate_agents

log = logging.getLogger("lada.experiment")

DOMAIN_CYCLE = ("purchases", "rates", "percentages", "comparisons")

# name -> (description, [(zoo model, home domain)], Dirichlet concentration of private data)
SCENARIOS: dict[str, tuple[str, list[tuple[str, str]], float]] = {
    "S1": (
        "same SLM architecture and size, domain-skewed private data",
        [("slm-purchases", d) for d in DOMAIN_CYCLE[:3]],
        10.0,
    ),
    "S2": (
        "SLMs of different sizes",
        [
            ("slm-purchases", "purchases"),
            ("slm-comparisons", "rates"),
            ("slm-percentages", "percentages"),
        ],
        10.0,
    ),
    "S3": (
        "different architectures and tokenizers",
        [
            ("slm-purchases", "purchases"),
            ("slm-rates", "rates"),
            ("slm-percentages", "percentages"),
        ],
        10.0,
    ),
    "S4": (
        "six agents, Dirichlet(0.3) domain skew",
        [
            (m, DOMAIN_CYCLE[i % 4])
            for i, m in enumerate(["slm-purchases", "slm-rates", "slm-percentages"] * 2)
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
        source="synthetic:domains=all,n=3000,seed=5",
        agents=[ClusterAgentConfig(private_size=120, capacity=16)],
    )


def run_combination(
    config: ClusterConfig, workdir: Path, redis: Any, models: dict[str, Path]
) -> dict[str, Any]:
    from lada.cluster import write_jsonl
    from lada.simulation import simulate
    from lada.tasks import load_dataset

    metrics = simulate(config, workdir, redis, models)
    tests = [
        p
        for path in sorted((workdir / "data" / "test").glob("*.jsonl"))
        for p in load_dataset(f"jsonl:{path}")
    ]
    test_spec = write_jsonl(tests, workdir / "data" / "test-all.jsonl")
    metrics["final"] = evaluate_agents(config.agents, workdir, models, test_spec, trained=True)
    metrics["samples_distilled"] = sum(
        r["reported"] for rounds in metrics["agents_rounds"].values() for r in rounds
    )
    if config.policy == "full" and config.loss == "sft":  # once per scenario and seed
        metrics["local_only"] = evaluate_agents(
            config.agents, workdir, models, test_spec, trained=False
        )
    return metrics


def llm_columns(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The LLM's greedy test accuracy before and after absorbing, and what it absorbed."""
    measured = [r["llm_accuracy"] for r in runs if r.get("llm_accuracy")]
    if not measured:
        return {}
    return {
        "llm_before": float(np.mean([a["base"] for a in measured])),
        "llm_after": float(np.mean([list(a.values())[-1] for a in measured])),
        "llm_absorbed": float(np.mean([r.get("llm_absorbed", 0) for r in runs])),
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of agent accuracy, per scenario x method."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["scenario"], run["method"]), []).append(run)
    rows = []
    for (scenario, method), members in sorted(groups.items()):

        def per_seed(key: str, runs: list[dict[str, Any]] = members) -> list[float]:
            return [float(np.mean([a[key] for a in m["final"].values()])) for m in runs]

        own, every, own_nlp = per_seed("own"), per_seed("all"), per_seed("own_nlp")
        rows.append(
            {
                "scenario": scenario,
                "method": method,
                "seeds": len(members),
                "own_mean": float(np.mean(own)),
                "own_std": float(np.std(own)),
                "all_mean": float(np.mean(every)),
                "all_std": float(np.std(every)),
                "own_nlp_mean": float(np.mean(own_nlp)),
                "own_nlp_std": float(np.std(own_nlp)),
                "samples": float(np.mean([m.get("samples_distilled", 0) for m in members])),
                **llm_columns(members),
                "wall_s": float(np.mean([m.get("wall_seconds", 0) for m in members])),
            }
        )
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | method | seeds | own-domain acc | all-domain acc | own-domain nlp of "
        "references | samples distilled | LLM acc before -> after (absorbed) | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['method']} | {r['seeds']} | "
            f"{r['own_mean']:.3f} ± {r['own_std']:.3f} | "
            f"{r['all_mean']:.3f} ± {r['all_std']:.3f} | "
            f"{r['own_nlp_mean']:.3f} ± {r['own_nlp_std']:.3f} | {r['samples']:.0f} | "
            f"{llm_cell(r)} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def llm_cell(row: dict[str, Any]) -> str:
    if "llm_before" not in row:
        return "-"
    return f"{row['llm_before']:.3f} -> {row['llm_after']:.3f} ({row['llm_absorbed']:.1f})"


def run_experiment(
    config_path: str | None,
    scenarios: str,
    policies: str,
    losses: str,
    seeds: int,
    profile: str,
    out_dir: str,
) -> int:
    """The sweep behind `lada experiment run`; writes results.json and results.md."""
    from lada.logs import configure_logging
    from lada.zoo import build_zoo

    configure_logging("WARNING", as_json=False, service="experiment")
    base = (
        load_config(ClusterConfig, config_path, section="experiment")
        if config_path
        else default_base(profile)
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = build_zoo(profile, progress=True)
    models = {"llm": manifest.llm, **manifest.slms}
    redis = start_embedded(lada_home() / "redis" / "experiment.rdb")
    runs: list[dict[str, Any]] = []
    try:
        for scenario in scenarios.split(","):
            for seed in range(seeds):
                for policy in policies.split(","):
                    for loss in losses.split(","):
                        config = scenario_config(
                            base, scenario, policy, loss, seed, set(manifest.slms)
                        )
                        workdir = out / "runs" / config.run_id
                        started = time.monotonic()
                        metrics = run_combination(config, workdir, redis, models)
                        metrics.update(scenario=scenario, seed=seed, method=f"{policy}+{loss}")
                        runs.append(metrics)
                        if "local_only" in metrics:
                            runs.append(
                                {
                                    "scenario": scenario,
                                    "seed": seed,
                                    "method": "local-only",
                                    "final": metrics["local_only"],
                                }
                            )
                        print(
                            f"{config.run_id}: {time.monotonic() - started:.0f}s "
                            f"{json.dumps(metrics['final'])}",
                            flush=True,
                        )
                        (out / "results.json").write_text(json.dumps(runs, indent=2, default=str))
    finally:
        shutdown_embedded(redis)
    rows = summarise(runs)
    (out / "results.md").write_text(render_table(rows))
    print(render_table(rows))
    return 0
