"""Run reports: metrics gathered from the round state, written as report.md, JSON and plots.

Both `lada up` (processes) and `lada experiment run` (in-process) produce the same
metrics shape, so one writer serves both.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from allocator.folding import parse_stats, report_arrays, split_scans
from lada.config import MAX_SAMPLES_PER_REQUEST, ClusterAgentConfig, ClusterConfig
from lada.learnability import learnability_gaps
from lada.state import AgentRecord, StateStore
from lada.tasks import CLIENT_DOMAINS, Problem, format_prompt, is_correct
from lada.v1 import allocator_pb2

KEEP_EVERY_ROW = 2**62  # `evaluate(keep_samples=...)` that keeps every problem's row


def round_metrics(
    store: StateStore,
    round_number: int,
    agent: AgentRecord,
    learner: dict[str, Any] | None,
    domain_of: Mapping[str, str],
) -> dict[str, Any]:
    """Per-round numbers for one agent from what it reported (accuracy on its samples), with
    what the learnable band is made of: each sample's gap and its reward's two terms, and
    where the round's fold left the band (`learner`, from `StateStore.round_learners`), and
    what it was given by domain (`domain_of`: public sample ID -> domain)."""
    allocation = [a for a in store.get_allocation(round_number, agent.agent_id) if not a.scan_only]
    stats, scanned = split_scans(parse_stats(store.get_stats(round_number, agent.agent_id)))
    before = [s.correct_before for s in stats]
    after = [s.correct_after for s in stats]
    return {
        "round": round_number,
        "allocated": len(allocation),
        "reported": len(stats),
        "scanned": len(scanned),
        "accuracy_before": float(np.mean(before)) if stats else None,
        "accuracy_after": float(np.mean(after)) if stats else None,
        "clusters": dict(Counter(a.cluster for a in allocation)),
        **reward_terms_by_gap(stats, {a.sample_id: a.cluster for a in allocation}),
        "band_after": list(learner["band"]) if learner else None,
        **allocation_domains([a.sample_id for a in allocation], domain_of, agent.domain_tags),
    }


def allocation_domains(
    sample_ids: Sequence[str], domain_of: Mapping[str, str], home: Sequence[str]
) -> dict[str, Any]:
    """How many of an agent's samples came from each domain, and the share from its home
    domains (None when it was given none): whether a policy feeds an agent its own domain."""
    counts = Counter(domain_of[s] for s in sample_ids)
    total = sum(counts.values())
    home_count = sum(counts[d] for d in set(home))
    return {
        "domains": dict(sorted(counts.items())),
        "home_share": home_count / total if total else None,
    }


def reward_terms_by_gap(
    stats: list[allocator_pb2.SampleStats], cluster_of: dict[str, int]
) -> dict[str, list[float]]:
    """For the reported samples that have a correct LLM path: the learnability gap before
    training, the sample's cluster, and the two terms of the reward (method.md 1.4) earned
    on it: nlp progress on the best correct path, and the greedy-correctness flip (-1, 0, 1)."""
    if not stats:
        return {"gaps": [], "gap_clusters": [], "nlp_progress": [], "greedy_flips": []}
    report = report_arrays(stats)
    gaps = learnability_gaps(report.llm_nlp, report.before, report.correct)
    progress = report.rewards(correctness_weight=0.0)
    flips = report.correct_after.astype(float) - report.correct_before.astype(float)
    kept = np.isfinite(gaps)
    return {
        "gaps": gaps[kept].tolist(),
        "gap_clusters": [cluster_of[s] for s, k in zip(report.sample_ids, kept, strict=True) if k],
        "nlp_progress": progress[kept].tolist(),
        "greedy_flips": flips[kept].tolist(),
    }


def collect_round_metrics(
    store: StateStore, domain_of: Mapping[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """Every agent's per-round metrics, keyed by agent name."""
    agents = store.list_agents()
    rounds = range(1, store.current_round() + 1)
    learners = {r: store.round_learners(r) for r in rounds}
    return {
        a.name: [round_metrics(store, r, a, learners[r].get(a.agent_id), domain_of) for r in rounds]
        for a in agents
    }


LLM_EVAL_MAX_TOKENS = 128  # greedy answer budget when measuring the LLM on test sets


def llm_accuracy_of(
    answers: Callable[[list[str], str], list[str]],
    versions: list[str],
    problems: list[Problem],
    chunk: int = MAX_SAMPLES_PER_REQUEST,
) -> dict[str, dict[str, float]]:
    """Greedy accuracy per model version, overall (`all`) and per domain;
    `answers(prompts, version)` runs the LLM, on at most `chunk` prompts at a time (the
    service refuses larger requests; the paper-scale test sets hold 2,500)."""
    prompts = [format_prompt(p.question) for p in problems]
    accuracy = {}
    for version in dict.fromkeys(versions):
        texts = [
            text
            for start in range(0, len(prompts), chunk)
            for text in answers(prompts[start : start + chunk], version)
        ]
        hits = [is_correct(text, p.answer) for text, p in zip(texts, problems, strict=True)]
        domains = sorted({p.domain for p in problems})
        accuracy[version] = {"all": _share(hits)} | {
            d: _share([h for h, p in zip(hits, problems, strict=True) if p.domain == d])
            for d in domains
        }
    return accuracy


def _share(hits: list[bool]) -> float:
    return sum(hits) / max(len(hits), 1)


def share_by_domain(problems: Sequence[Problem], hits: Sequence[bool]) -> dict[str, float]:
    """Per domain, the share of `problems` whose `hits` entry is true."""
    by_domain: dict[str, list[bool]] = {}
    for problem, hit in zip(problems, hits, strict=True):
        by_domain.setdefault(problem.domain, []).append(hit)
    return {d: _share(h) for d, h in sorted(by_domain.items())}


def in_config_order(per_agent: dict[str, Any], config: ClusterConfig) -> dict[str, Any]:
    """Agents as the config lists them, not as they happened to register (they start together)."""
    rank = {a.name: i for i, a in enumerate(config.agents)}
    return dict(sorted(per_agent.items(), key=lambda item: rank.get(item[0], len(rank))))


def run_metrics(
    config: ClusterConfig,
    store: StateStore,
    mode: str,
    started: float,
    llm_accuracy: dict[str, dict[str, float]],
    public_pool: Sequence[Problem],
) -> dict[str, Any]:
    """The metrics both modes (`lada up`, simulation) report for one finished run;
    `llm_accuracy` is `llm_accuracy_of`'s (overall kept under its old key); `public_pool`
    says each allocated sample's domain."""
    domain_of = {p.id: p.domain for p in public_pool}
    return {
        "run_id": store.run_id,
        "mode": mode,
        "policy": config.policy,
        "loss": config.loss,
        "rounds": config.rounds,
        "wall_seconds": round(time.monotonic() - started, 1),
        "agents_rounds": in_config_order(collect_round_metrics(store, domain_of), config),
        "llm_accuracy": {v: by_domain["all"] for v, by_domain in llm_accuracy.items()},
        "llm_accuracy_by_domain": llm_accuracy,
        "llm_absorbed": len(store.absorbed()),
    }


def accuracy_on(model_dir: Path, spec: str) -> dict[str, Any]:
    """Greedy accuracy overall and per domain on a JSONL test set, and per domain the IDs of
    the problems answered right (`correct`), so that two models can be compared problem by
    problem. An agent's checkpointed weights with an expert beside them (distill_route gate)
    answer as the agent does: each problem by the model its gate routes it to."""
    from lada.evaluation import evaluate
    from slm_agent.trainer import EXPERT_DIR, WEIGHTS_DIR

    expert = model_dir.parent / EXPERT_DIR
    routed = model_dir.name == WEIGHTS_DIR and expert.is_dir()
    report = evaluate(
        model_dir,
        spec,
        pass_k=0,
        progress=False,
        keep_samples=KEEP_EVERY_ROW,
        expert_dir=expert if routed else None,
    )
    domains = report.by_domain.items()
    correct: dict[str, list[str]] = {d: [] for d in report.by_domain}
    for row in report.samples:
        if row["correct"]:
            correct[row["domain"]].append(row["id"])
    return {
        "all": report.overall.accuracy,
        "all_nlp": report.overall.mean_nlp,
        **{d: stats.accuracy for d, stats in domains},
        **{f"{d}_nlp": stats.mean_nlp for d, stats in domains},
        "correct": {d: sorted(ids) for d, ids in correct.items()},
    }


@dataclass(frozen=True)
class Flips:
    """Test problems a model newly answers right (`up`) and no longer answers right (`down`)
    after a run, and the exact two-sided McNemar p-value of those counts: how likely a split
    at least this uneven is if the run only reshuffled which problems come out right."""

    up: int
    down: int
    p: float


def flips(before: Iterable[str], after: Iterable[str]) -> Flips:
    """Compare the IDs answered right before and after, problem by problem (same test set)."""
    was, now = set(before), set(after)
    up, down = len(now - was), len(was - now)
    changed = up + down
    tail = sum(math.comb(changed, k) for k in range(min(up, down) + 1)) / 2**changed
    return Flips(up, down, min(1.0, 2 * tail))


def final_model_dir(state_dir: Path) -> Path | None:
    """The agent's newest checkpointed weights (None before its first round)."""
    from slm_agent.checkpoint import CheckpointStore
    from slm_agent.trainer import WEIGHTS_DIR

    store = CheckpointStore(state_dir)
    latest = store.latest_round()
    return store.round_dir(latest) / WEIGHTS_DIR if latest else None


def evaluate_agents(
    agents: list[ClusterAgentConfig],
    workdir: Path,
    models: dict[str, Path],
    test_spec: str,
    trained: bool,
    accuracy: Callable[[Path, str], dict[str, Any]] | None = None,
    with_ids: bool = False,
) -> dict[str, dict[str, Any]]:
    """Each agent's accuracy (own domain and all); `trained=False`: its starting model.
    `with_ids`: also the IDs of the own-domain problems it answers right (`own_correct`), to
    pair two evaluations problem by problem. `accuracy` scores a model on a test set
    (default `accuracy_on`)."""
    accuracy = accuracy or accuracy_on
    results = {}
    for agent in agents:
        model_dir = final_model_dir(workdir / "agents" / agent.name) if trained else None
        scores = accuracy(model_dir or models[agent.model], test_spec)
        home = agent.domains[0]
        results[agent.name] = {
            "own": scores.get(home, 0.0),
            "all": scores["all"],
            "own_nlp": scores.get(f"{home}_nlp", 0.0),
            "all_nlp": scores["all_nlp"],
            "by_domain": {
                d: v
                for d, v in scores.items()
                if isinstance(v, int | float) and not d.startswith("all") and not d.endswith("_nlp")
            },
        }
        if with_ids:
            results[agent.name]["own_correct"] = scores.get("correct", {}).get(home, [])
    return results


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"
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
    parts += _final_eval_section(metrics.get("final_eval", {}), metrics.get("baseline"))
    parts += _llm_section(
        metrics.get("llm_accuracy", {}),
        metrics.get("llm_accuracy_by_domain"),
        metrics.get("llm_adapter_share"),
    )
    parts += _traffic_section(
        metrics.get("bytes_sent", {}), metrics.get("logit_exchange_bytes", {})
    )
    return "\n".join(parts) + "\n"


def _final_eval_section(
    final: dict[str, dict[str, Any]], baseline: dict[str, Any] | None = None
) -> list[str]:
    """Per agent: all-domain and own-domain test accuracy before -> after, with the change;
    beside it the same agents after a baseline run (another policy, same split and seed)."""
    if not final:
        return []
    other = (baseline or {}).get("final_eval", {})
    name = (baseline or {}).get("policy", "")
    headers = ["agent", "all domains: before -> after", "change", "own domain: before -> after"]
    headers += ["change", "own nlp: before -> after"]
    if other:
        headers += [f"`{name}` all: after", "change", f"`{name}` own: after", "change"]
    rows = []
    for agent, v in final.items():
        row = [
            agent,
            f"{_fmt(v.get('before'))} -> {_fmt(v.get('after'))}",
            _change(v.get("before"), v.get("after")),
            f"{_fmt(v.get('own_before'))} -> {_fmt(v.get('own_after'))}",
            _own_change(v),
            f"{_fmt(v.get('own_nlp_before'))} -> {_fmt(v.get('own_nlp_after'))}",
        ]
        if other:
            b = other.get(agent, {})
            row += [b.get("after"), _change(b.get("before"), b.get("after"))]
            row += [b.get("own_after"), _own_change(b)]
        rows.append(row)
    lines = ["", "## Held-out test accuracy before and after the run", ""]
    if other:
        lines += [
            f"Beside it: the same agents, split and seed after a `{name}` run at the same "
            f"budget ({baseline.get('mode', 'simulation')}, {_fmt(baseline.get('wall_seconds'))}"
            " s).",
            "",
        ]
    lines.append(markdown_table(headers, rows))
    if any("own_up" in v for v in final.values()):
        lines += ["", FLIPS_LEGEND]
    return lines


FLIPS_LEGEND = (
    "Own domain, in brackets: test problems newly answered right (up) and no longer answered"
    " right (down), and the exact McNemar p-value of that split; above 0.05, the change is"
    " within the churn of retraining."
)


def _own_change(row: dict[str, Any]) -> str:
    """The own-domain change, with the problems behind it where they were paired."""
    change = _change(row.get("own_before"), row.get("own_after"))
    if "own_up" not in row:
        return change
    return f"{change} ({row['own_up']} up, {row['own_down']} down, p {row['own_p']:.2f})"


def _change(before: float | None, after: float | None) -> str:
    """after - before in accuracy points, signed."""
    if before is None or after is None:
        return "–"
    return f"{100 * (after - before):+.1f} pts"


def _llm_section(
    accuracy: dict[str, float],
    by_domain: dict[str, dict[str, float]] | None = None,
    adapter_share: dict[str, float] | None = None,
) -> list[str]:
    """The LLM's greedy test accuracy per version; per domain when measured, so the
    client-only domain (what Absorb should teach it) shows on its own; and the share of
    each domain's test prompts the last version's adapter answered (its gate's choice)."""
    if not accuracy:
        return []
    lines = ["", "## LLM greedy test accuracy by model version", ""]
    if not by_domain:
        return [*lines, markdown_table(["version", "accuracy"], list(accuracy.items()))]
    domains = [d for d in next(iter(by_domain.values())) if d != "all"]
    labels = [f"{d} (client-only)" if d in CLIENT_DOMAINS else d for d in domains]
    rows = [[v, acc["all"], *(acc.get(d) for d in domains)] for v, acc in by_domain.items()]
    if adapter_share:
        label = f"answered by {list(by_domain)[-1]}'s adapter"
        rows.append([label, None, *(adapter_share.get(d) for d in domains)])
    return [*lines, markdown_table(["version", "all", *labels], rows)]


def _traffic_section(
    sent: dict[str, dict[Any, int]], logits: dict[str, dict[Any, int]]
) -> list[str]:
    """Audited bytes per agent per round beside top-128 logit exchange for the same paths."""
    if not sent:
        return []
    rows = []
    for name, per_round in sent.items():
        rounds = [r for r in per_round if int(r) > 0]
        ours = float(np.mean([per_round[r] for r in rounds])) if rounds else None
        theirs_rounds = logits.get(name, {})
        theirs = float(np.mean(list(theirs_rounds.values()))) if theirs_rounds else None
        ratio = theirs / ours if ours and theirs else None
        rows.append([name, ours, theirs, ratio, per_round.get(0, per_round.get("0", 0))])
    return [
        "",
        "## Bytes on the wire per agent per round",
        "",
        markdown_table(
            [
                "agent",
                "LaDa (audited)",
                "top-128 logit exchange",
                "logits / LaDa",
                "outside rounds (registration)",
            ],
            rows,
        ),
    ]


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
    for version, accuracy in metrics.get("llm_accuracy", {}).items():
        ax.axhline(accuracy, linestyle="--", color="gray", label=f"LLM {version} (test)")
    ax.xaxis.get_major_locator().set_params(integer=True)
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
