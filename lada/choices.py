"""What an allocation policy chose, read back from a sweep's finished runs.

docs/results.md has to say *why* a policy ties `random` where it does, not only that it
does. Each run records, per agent and round, the learnability gaps of the samples it was
allocated, their clusters, and greedy accuracy on them before and after the round's training.
This module turns those into one row per scenario, method and round: where in the pool's
gap distribution the allocated samples sat (quintiles of what `full` saw, the whole pool, in
the same scenario, seed, agent and round; `random`'s allocations where no `full` ran), how
concentrated on clusters the choice was, how much of it came from the agent's home domain (runs
that recorded it), and what the agent learned of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

QUINTILES = 5
# methods whose allocations estimate the pool's gaps, best first: full sees the whole pool,
# random a uniform sample of it
REFERENCE_POLICIES = ("full", "random")

Run = dict[str, Any]
AgentKey = tuple[str, int, str, int]  # scenario, seed, agent, round


def reference_entries(runs: Iterable[Run]) -> dict[AgentKey, dict[str, Any]]:
    """Per scenario, seed, agent and round: the best reference policy's round entry (one
    with gaps)."""
    found: dict[AgentKey, tuple[int, dict[str, Any]]] = {}
    for run in runs:
        policy = run.get("policy")
        if policy not in REFERENCE_POLICIES:
            continue
        rank = REFERENCE_POLICIES.index(policy)
        for agent, rounds in run.get("agents_rounds", {}).items():
            for entry in rounds:
                key = (run["scenario"], int(run["seed"]), agent, int(entry["round"]))
                if _finite_gaps(entry).size and (key not in found or rank < found[key][0]):
                    found[key] = (rank, entry)
    return {key: entry for key, (_, entry) in found.items()}


def reference_gaps(runs: Iterable[Run]) -> dict[AgentKey, np.ndarray]:
    """Per scenario, seed, agent and round: the gaps of the best reference policy's samples."""
    return {key: _finite_gaps(entry) for key, entry in reference_entries(runs).items()}


def _finite_gaps(entry: dict[str, Any]) -> np.ndarray:
    gaps = np.asarray(entry.get("gaps", []), float)
    return gaps[np.isfinite(gaps)]


def quintile_shares(gaps: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Share of `gaps` in each quintile of `reference` (Q1: smallest gaps, already known)."""
    edges = _quintile_edges(reference)
    counts = np.bincount(np.searchsorted(edges, gaps, side="right"), minlength=QUINTILES)
    return counts / max(len(gaps), 1)


def top_cluster_share(clusters: dict[str, int]) -> float:
    """Share of the round's samples from its most-allocated cluster (1.0: one arm only)."""
    total = sum(clusters.values())
    return max(clusters.values()) / total if total else float("nan")


def _agent_round(entry: dict[str, Any], reference: np.ndarray | None) -> dict[str, Any]:
    gaps = _finite_gaps(entry)
    shares = (
        quintile_shares(gaps, reference)
        if reference is not None and gaps.size
        else np.full(QUINTILES, np.nan)
    )
    return {
        "allocated": float(entry.get("allocated", 0)),
        "mean_gap": float(gaps.mean()) if gaps.size else float("nan"),
        "shares": shares,
        "top_cluster": top_cluster_share(entry.get("clusters", {})),
        "clusters": float(len(entry.get("clusters", {}))),
        "acc_before": float(entry.get("accuracy_before", np.nan)),
        "acc_after": float(entry.get("accuracy_after", np.nan)),
        "home_share": _or_nan(entry.get("home_share")),
        **_band_after(entry),
    }


def _or_nan(value: float | None) -> float:
    """A figure an older run did not record (or an empty round) as NaN, left out of means."""
    return float("nan") if value is None else float(value)


def _band_after(entry: dict[str, Any]) -> dict[str, float]:
    """The band's quantiles after the round's fold (NaN where the run did not record them)."""
    band = entry.get("band_after") or (np.nan, np.nan)
    return {"band_low": float(band[0]), "band_high": float(band[1])}


def choice_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per scenario, method and round, each figure the mean over seeds and agents."""
    references = reference_gaps(runs)
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for run in runs:
        if "agents_rounds" not in run:  # a local-only row: nothing was allocated
            continue
        for agent, rounds in run["agents_rounds"].items():
            for entry in rounds:
                key = (run["scenario"], int(run["seed"]), agent, int(entry["round"]))
                row = _agent_round(entry, references.get(key))
                groups.setdefault((run["scenario"], run["method"], key[3]), []).append(row)
    rows = []
    for (scenario, method, round_number), members in sorted(groups.items()):
        rows.append(
            {
                "scenario": scenario,
                "method": method,
                "round": round_number,
                "agent_rounds": len(members),
                **{
                    name: float(_nanmean([m[name] for m in members]))
                    for name in (
                        "allocated",
                        "mean_gap",
                        "top_cluster",
                        "clusters",
                        "acc_before",
                        "acc_after",
                        "home_share",
                        "band_low",
                        "band_high",
                    )
                },
                "shares": _nanmean([m["shares"] for m in members], axis=0).tolist(),
            }
        )
    return rows


def _nanmean(values: Any, axis: int | None = None) -> Any:
    """Mean over the finite values; NaN, silently, where there are none (older runs did not
    record every figure)."""
    array = np.asarray(values, float)
    finite = np.isfinite(array)
    with np.errstate(invalid="ignore"):
        return np.where(finite, array, 0.0).sum(axis=axis) / finite.sum(axis=axis)


def render_choices(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (shares and accuracies in percent)."""
    head = (
        "| scenario | method | round | samples per agent | mean gap | "
        + " | ".join(f"Q{q + 1}" for q in range(QUINTILES))
        + " | top cluster | clusters | home domain | greedy acc on them before -> after"
        + " | band after |"
    )
    lines = [head, "|" + "---|" * (10 + QUINTILES)]
    for row in rows:
        shares = " | ".join(_pct(s) for s in row["shares"])
        lines.append(
            f"| {row['scenario']} | {row['method']} | {row['round']} | {row['allocated']:.0f} "
            f"| {row['mean_gap']:.3f} | {shares} | {_pct(row['top_cluster'])} "
            f"| {row['clusters']:.1f} | {_pct(row['home_share'])} "
            f"| {_pct(row['acc_before'])} -> {_pct(row['acc_after'])} "
            f"| {_band(row['band_low'], row['band_high'])} |"
        )
    return "\n".join(lines)


def _band(low: float, high: float) -> str:
    return "-" if np.isnan(low) else f"q{low:.2f}-{high:.2f}"


def reward_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """Per scenario and method, what the reward paid in each gap quintile: mean nlp progress
    and mean greedy flip over every sample allocated there (all seeds, agents and rounds).
    The band moves toward the third of it that earned more, so this is what steers it."""
    references = reference_gaps(runs)
    groups: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for run in runs:
        for agent, rounds in run.get("agents_rounds", {}).items():
            for entry in rounds:
                key = (run["scenario"], int(run["seed"]), agent, int(entry["round"]))
                if "nlp_progress" not in entry or key not in references:
                    continue
                edges = _quintile_edges(references[key])
                quintile = np.searchsorted(edges, np.asarray(entry["gaps"], float), side="right")
                terms = (
                    quintile,
                    np.asarray(entry["nlp_progress"], float),
                    np.asarray(entry["greedy_flips"], float),
                )
                groups.setdefault((run["scenario"], run["method"]), []).append(terms)
    rows = []
    for (scenario, method), members in sorted(groups.items()):
        quintile, progress, flips = (np.concatenate(parts) for parts in zip(*members, strict=True))
        rows.append(
            {
                "scenario": scenario,
                "method": method,
                "samples": np.bincount(quintile, minlength=QUINTILES).tolist(),
                "nlp_progress": [_mean(progress[quintile == q]) for q in range(QUINTILES)],
                "greedy_flips": [_mean(flips[quintile == q]) for q in range(QUINTILES)],
            }
        )
    return rows


def equal_quota_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """Per scenario: the gap quintiles an equal quota per cluster would fill, estimated
    from the reference policy's samples (each cluster's own quintile mix, clusters weighted
    alike). `lada`'s first round is such an allocation: no arm has a pull, no gap is known."""
    groups: dict[str, list[np.ndarray]] = {}
    for (scenario, *_), entry in sorted(reference_entries(runs).items()):
        if "gap_clusters" not in entry:
            continue
        gaps = np.asarray(entry["gaps"], float)
        clusters = np.asarray(entry["gap_clusters"], np.int64)
        quintile = np.searchsorted(_quintile_edges(gaps), gaps, side="right")
        per_cluster = [
            np.bincount(quintile[clusters == c], minlength=QUINTILES) / (clusters == c).sum()
            for c in np.unique(clusters)
        ]
        groups.setdefault(scenario, []).append(np.mean(per_cluster, axis=0))
    return [
        {"scenario": scenario, "agent_rounds": len(shares), "shares": np.mean(shares, 0).tolist()}
        for scenario, shares in groups.items()
    ]


def _quintile_edges(reference: np.ndarray) -> np.ndarray:
    return np.quantile(reference, np.linspace(0, 1, QUINTILES + 1)[1:-1])


def render_equal_quota_rows(rows: list[dict[str, Any]]) -> str:
    """The shares an equal quota per cluster would give, as a Markdown table."""
    quintiles = " | ".join(f"Q{q + 1}" for q in range(QUINTILES))
    lines = [f"| scenario | agent-rounds | {quintiles} |", "|" + "---|" * (2 + QUINTILES)]
    for row in rows:
        shares = " | ".join(_pct(v) for v in row["shares"])
        lines.append(f"| {row['scenario']} | {row['agent_rounds']} | {shares} |")
    return "\n".join(lines)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def render_reward_rows(rows: list[dict[str, Any]]) -> str:
    """The reward's two terms per gap quintile, as a Markdown table."""
    quintiles = " | ".join(f"Q{q + 1}" for q in range(QUINTILES))
    lines = [
        f"| scenario | method | term | {quintiles} |",
        "|" + "---|" * (3 + QUINTILES),
    ]
    for row in rows:
        for term, name, fmt in (
            ("samples", "samples", "{:.0f}"),
            ("nlp_progress", "nlp progress", "{:+.4f}"),
            ("greedy_flips", "greedy flip", "{:+.3f}"),
        ):
            cells = " | ".join(
                "-" if np.isnan(v) else fmt.format(v) for v in np.asarray(row[term], float)
            )
            lines.append(f"| {row['scenario']} | {row['method']} | {name} | {cells} |")
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.0f}%"
