"""Run reports: metrics gathered from the round state, written as report.md, JSON and plots.

Both `lada up` (processes) and `lada experiment run` (in-process) produce the same
metrics shape, so one writer serves both.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lada.learnability import learnability_gaps
from lada.state import StateStore
from lada.v1 import allocator_pb2


def round_metrics(store: StateStore, round_number: int, agent_id: str) -> dict[str, Any]:
    """Per-round numbers for one agent from what it reported (accuracy on its samples)."""
    allocation = store.get_allocation(round_number, agent_id)
    stats = [
        allocator_pb2.SampleStats.FromString(raw)
        for raw in store.get_stats(round_number, agent_id).values()
    ]
    before = [s.correct_before for s in stats]
    after = [s.correct_after for s in stats]
    return {
        "round": round_number,
        "allocated": len(allocation),
        "reported": len(stats),
        "accuracy_before": float(np.mean(before)) if stats else None,
        "accuracy_after": float(np.mean(after)) if stats else None,
        "clusters": dict(Counter(a.cluster for a in allocation)),
        "gaps": sample_gaps(stats),
    }


def sample_gaps(stats: list[allocator_pb2.SampleStats]) -> list[float]:
    """Learnability gaps (before training) of reported samples that have a correct path."""
    if not stats:
        return []
    width = max(len(s.paths) for s in stats)
    llm = np.zeros((len(stats), width))
    slm = np.zeros((len(stats), width))
    correct = np.zeros((len(stats), width), dtype=bool)
    for row, sample in enumerate(stats):
        for col, path in enumerate(sample.paths):
            llm[row, col] = path.llm_normalized_logprob
            slm[row, col] = path.slm_normalized_logprob_before
            correct[row, col] = path.correct
    gaps = learnability_gaps(llm, slm, correct)
    return [float(g) for g in gaps if np.isfinite(g)]


def collect_round_metrics(store: StateStore) -> dict[str, list[dict[str, Any]]]:
    """Every agent's per-round metrics, keyed by agent name."""
    agents = store.list_agents()
    rounds = range(1, store.current_round() + 1)
    return {a.name: [round_metrics(store, r, a.agent_id) for r in rounds] for a in agents}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(metrics: dict[str, Any]) -> str:
    """The human report: run settings, per-round table, final evaluation table."""
    parts = [
        f"# LaDa run `{metrics.get('run_id', '')}`",
        "",
        f"policy `{metrics.get('policy')}`, loss `{metrics.get('loss')}`, "
        f"{metrics.get('rounds')} rounds, wall time {_fmt(metrics.get('wall_seconds'))} s",
        "",
        "## Per round (accuracy on each agent's allocated samples)",
        "",
    ]
    rows = [
        [
            name,
            r["round"],
            r["allocated"],
            r["reported"],
            r["accuracy_before"],
            r["accuracy_after"],
            float(np.mean(r["gaps"])) if r["gaps"] else None,
        ]
        for name, rounds in metrics.get("agents_rounds", {}).items()
        for r in rounds
    ]
    parts.append(
        markdown_table(
            ["agent", "round", "allocated", "reported", "acc before", "acc after", "mean gap"], rows
        )
    )
    final = metrics.get("final_eval", {})
    if final:
        parts += ["", "## Test accuracy before and after the run", ""]
        parts.append(
            markdown_table(
                ["model", "before", "after", "own-domain before", "own-domain after"],
                [
                    [name, v.get("before"), v.get("after"), v.get("own_before"), v.get("own_after")]
                    for name, v in final.items()
                ],
            )
        )
    if metrics.get("bytes_sent"):
        parts += ["", "## Bytes each agent sent", ""]
        parts.append(markdown_table(["agent", "bytes"], list(metrics["bytes_sent"].items())))
    return "\n".join(parts) + "\n"


def write_plots(report_dir: Path, metrics: dict[str, Any]) -> list[Path]:
    """accuracy.png, gaps.png and clusters.png (headless matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds_by_agent = metrics.get("agents_rounds", {})
    written: list[Path] = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rounds in rounds_by_agent.items():
        xs = [r["round"] for r in rounds if r["accuracy_after"] is not None]
        ax.plot(
            xs,
            [r["accuracy_after"] for r in rounds if r["accuracy_after"] is not None],
            marker="o",
            label=name,
        )
    for name, value in metrics.get("llm_accuracy_by_round", {}).items():
        ax.plot(list(range(1, len(value) + 1)), value, linestyle="--", label=f"LLM {name}")
    ax.set(xlabel="round", ylabel="accuracy after training", title="Accuracy per round")
    ax.legend(fontsize=7)
    written.append(_save(fig, report_dir / "accuracy.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rounds in rounds_by_agent.items():
        gaps = [g for r in rounds for g in r["gaps"]]
        if gaps:
            ax.hist(gaps, bins=20, alpha=0.5, label=name)
    ax.set(
        xlabel="learnability gap (nlp_L - nlp_S)",
        ylabel="samples",
        title="Learnability gaps per agent",
    )
    ax.legend(fontsize=7)
    written.append(_save(fig, report_dir / "gaps.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    totals: Counter[tuple[int, int]] = Counter()
    for rounds in rounds_by_agent.values():
        for r in rounds:
            for cluster, count in r["clusters"].items():
                totals[(r["round"], int(cluster))] += count
    if totals:
        round_ids = sorted({k[0] for k in totals})
        clusters = sorted({k[1] for k in totals})
        bottom = np.zeros(len(round_ids))
        for cluster in clusters:
            heights = np.array([totals[(r, cluster)] for r in round_ids], dtype=float)
            ax.bar(round_ids, heights, bottom=bottom, label=f"c{cluster}")
            bottom += heights
    ax.set(xlabel="round", ylabel="samples allocated", title="Samples per cluster per round")
    ax.legend(fontsize=6, ncol=4)
    written.append(_save(fig, report_dir / "clusters.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report_dir: Path, metrics: dict[str, Any]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    (report_dir / "report.md").write_text(render_markdown(metrics))
    write_plots(report_dir, metrics)
