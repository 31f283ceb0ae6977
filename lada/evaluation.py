"""Evaluation harness: greedy accuracy, pass@k and reference-path log-probs, per slice."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lada.modeling import encode_pair, generate, load_causal_lm, score_completions
from lada.tasks import Problem, format_prompt, format_target, is_correct, load_dataset


@dataclass
class SliceStats:
    """Aggregates over one slice (overall, a domain, or a difficulty)."""

    n: int = 0
    accuracy: float = 0.0
    pass_at_k: float | None = None
    mean_nlp: float = 0.0


@dataclass
class EvalReport:
    """What `lada eval` prints and writes."""

    model: str
    data: str
    n: int
    pass_k: int
    overall: SliceStats
    by_domain: dict[str, SliceStats] = field(default_factory=dict)
    by_difficulty: dict[str, SliceStats] = field(default_factory=dict)
    by_domain_difficulty: dict[str, SliceStats] = field(default_factory=dict)
    seconds: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def write_json(self, path: str | Path) -> None:
        """Write `to_json()` to a file."""
        Path(path).write_text(json.dumps(self.to_json(), indent=2))

    def to_markdown(self) -> str:
        """Markdown tables: per domain, then per difficulty."""
        k = self.pass_k
        head = (
            f"| slice | n | greedy acc | pass@{k} | mean nlp(ref) |"
            if k
            else "| slice | n | greedy acc | mean nlp(ref) |"
        )
        rule = "|---|---:|---:|---:|---:|" if k else "|---|---:|---:|---:|"
        lines = [
            f"**{self.model}** on `{self.data}` (n={self.n}, {self.seconds:.0f} s)",
            "",
            head,
            rule,
        ]
        groups = [("all", self.overall)]
        groups += [(f"domain {d}", s) for d, s in sorted(self.by_domain.items())]
        groups += [
            (f"steps {d}", s)
            for d, s in sorted(self.by_difficulty.items(), key=lambda kv: int(kv[0]))
        ]
        for name, s in groups:
            cells = [name, str(s.n), f"{100 * s.accuracy:.1f}%"]
            if k:
                cells.append("-" if s.pass_at_k is None else f"{100 * s.pass_at_k:.1f}%")
            cells.append(f"{s.mean_nlp:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _aggregate(rows: Sequence[dict[str, Any]], with_k: bool) -> SliceStats:
    n = len(rows)
    if not n:
        return SliceStats()
    return SliceStats(
        n=n,
        accuracy=sum(r["correct"] for r in rows) / n,
        pass_at_k=sum(r["pass_at_k"] for r in rows) / n if with_k else None,
        mean_nlp=sum(r["nlp"] for r in rows) / n,
    )


def default_max_new_tokens(tokenizer: Any, problems: Sequence[Problem]) -> int:
    """Room for the longest reference path plus a margin (capped at 512)."""
    longest = max(
        len(encode_pair(tokenizer, "Q:", format_target(p.reference))[1]) for p in problems
    )
    return min(512, int(longest * 1.25) + 8)


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def evaluate(
    model_path: str | Path,
    data_spec: str,
    *,
    batch_size: int = 32,
    pass_k: int = 4,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    temperature: float = 0.8,
    top_p: float = 1.0,
    seed: int = 0,
    keep_samples: int = 20,
    expert_dir: str | Path | None = None,
) -> EvalReport:
    """Evaluate one HF model directory on a dataset spec (greedy, pass@k, nlp of refs).
    With `expert_dir` (an agent's expert under distill_route gate, its gate saved beside it)
    each problem is answered by the model the gate routes it to, as the agent answers."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    torch.manual_seed(seed)
    problems = load_dataset(data_spec)[: limit or None]
    if not problems:
        raise ValueError(f"{data_spec}: no problems to evaluate")
    model, tok = load_causal_lm(model_path)
    budget = max_new_tokens or default_max_new_tokens(tok, problems)
    by_model = _route(model, problems, expert_dir)
    rows: list[dict[str, Any]] = [{} for _ in problems]
    chunks = [
        (answering, _batches(indices, batch_size)) for answering, indices in by_model if indices
    ]
    total = sum(len(batches) for _, batches in chunks)
    bar = tqdm(total=total, desc="eval", unit="batch", disable=not progress)
    for answering, batches in chunks:
        for indices in batches:
            chunk = [problems[i] for i in indices]
            found = _eval_batch(
                answering, tok, chunk, budget, batch_size, pass_k, temperature, top_p, seed + bar.n
            )
            for i, row in zip(indices, found, strict=True):
                rows[i] = row
            bar.update()
    bar.close()
    report = _report(str(model_path), data_spec, rows, pass_k)
    report.seconds = time.perf_counter() - start
    report.samples = rows[:keep_samples]
    return report


def _route(
    model: Any, problems: Sequence[Problem], expert_dir: str | Path | None
) -> list[tuple[Any, list[int]]]:
    """(model, indices of the problems it answers): the expert those its gate routes to it."""
    everything = list(range(len(problems)))
    if expert_dir is None:
        return [(model, everything)]
    from lada.gate import AdapterGate

    gate = AdapterGate.load(Path(expert_dir))
    if gate is None:
        return [(model, everything)]
    routed = gate.routes([format_prompt(p.question) for p in problems])
    expert, _ = load_causal_lm(expert_dir)
    return [
        (model, [i for i in everything if not routed[i]]),
        (expert, [i for i in everything if routed[i]]),
    ]


def _eval_batch(
    model: Any,
    tok: Any,
    chunk: list[Problem],
    budget: int,
    batch_size: int,
    pass_k: int,
    temperature: float,
    top_p: float,
    seed: int,
) -> list[dict[str, Any]]:
    prompts = [format_prompt(p.question) for p in chunk]
    greedy = generate(model, tok, prompts, budget, greedy=True, batch_size=batch_size)
    sampled = (
        generate(
            model,
            tok,
            prompts,
            budget,
            greedy=False,
            temperature=temperature,
            top_p=top_p,
            n=pass_k,
            seed=seed,
            batch_size=max(1, batch_size // pass_k),
        )
        if pass_k
        else [[]] * len(chunk)
    )
    scores = score_completions(
        model, tok, prompts, [format_target(p.reference) for p in chunk], batch_size=batch_size
    )
    return [
        {
            "id": p.id,
            "domain": p.domain,
            "difficulty": p.difficulty,
            "answer": p.answer,
            "output": g[0],
            "correct": is_correct(g[0], p.answer),
            "pass_at_k": any(is_correct(s, p.answer) for s in samples),
            "nlp": sc.normalized,
        }
        for p, g, samples, sc in zip(chunk, greedy, sampled, scores, strict=True)
    ]


def _report(model: str, data: str, rows: list[dict[str, Any]], pass_k: int) -> EvalReport:
    with_k = pass_k > 0
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {
        "domain": defaultdict(list),
        "difficulty": defaultdict(list),
        "both": defaultdict(list),
    }
    for r in rows:
        groups["domain"][r["domain"]].append(r)
        groups["difficulty"][str(r["difficulty"])].append(r)
        groups["both"][f"{r['domain']}/{r['difficulty']}"].append(r)
    return EvalReport(
        model=model,
        data=data,
        n=len(rows),
        pass_k=pass_k,
        overall=_aggregate(rows, with_k),
        by_domain={k: _aggregate(v, with_k) for k, v in groups["domain"].items()},
        by_difficulty={k: _aggregate(v, with_k) for k, v in groups["difficulty"].items()},
        by_domain_difficulty={k: _aggregate(v, with_k) for k, v in groups["both"].items()},
    )
