"""Agent benchmark: scoring throughput, train-step time per loss, greedy answers, one round.

Meant to be run as `lada bench agent` (lada/bench/agent.py re-exports `run`). Paths are the
reference path plus two corrupted copies per sample, so the numbers do not depend on an
LLM; every model of the zoo profile is measured (micro when quick, demo otherwise).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lada.tasks import Problem, format_prompt, load_dataset
from slm_agent.losses import PathSet, make_loss
from slm_agent.rounds import AllocatedSample, LLMPath, run_round
from slm_agent.trainer import LocalTrainer, TrainerSettings

POOL_SPEC = "synthetic:domains=all,n=200,seed=11"
PRIVATE_SPEC = "synthetic:domains=rates,n=64,seed=12"


def corrupted(problem: Problem, shift: int) -> str:
    body, _, answer = problem.reference.rpartition("#### ")
    return f" {body}#### {int(answer) + shift}"


def path_set(problem: Problem) -> PathSet:
    texts = [" " + problem.reference, corrupted(problem, 3), corrupted(problem, 11)]
    return PathSet(format_prompt(problem.question), texts, [-0.3, -0.5, -0.6], [True, False, False])


def llm_paths(problems: list[Problem]) -> dict[str, list[LLMPath]]:
    return {
        p.id: [
            LLMPath(t, n, c) for t, n, c in zip(s.llm_paths, s.teacher_nlp, s.correct, strict=True)
        ]
        for p, s in ((p, path_set(p)) for p in problems)
    }


def timed(call: Any, repeat: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - started) / repeat


def measure_model(name: str, model_dir: Path, quick: bool) -> dict[str, Any]:
    pool = load_dataset(POOL_SPEC)
    private = load_dataset(PRIVATE_SPEC)
    samples = pool[: 16 if quick else 64]
    settings = TrainerSettings(max_new_tokens=64, own_paths_per_sample=1)
    row: dict[str, Any] = {"model": name}
    for loss in ("sft", "contrastive"):
        trainer = LocalTrainer.from_path(model_dir, make_loss(loss), private, settings)
        sets = [path_set(p) for p in samples[:4]]
        trainer.train_round(sets, 0)  # warm-up
        row[f"{loss}_step_s"] = timed(lambda t=trainer, s=sets: t.train_round(s, 1), 3)
    row["params"] = trainer.base_parameters
    prompts = [s.prompt for p in samples for s in [path_set(p)] for _ in s.llm_paths]
    texts = [t for p in samples for t in path_set(p).llm_paths]
    row["score_paths_per_s"] = len(texts) / timed(lambda: trainer.score(prompts, texts))
    questions = [p.question for p in samples]
    row["greedy_s_per_sample"] = timed(lambda: trainer.greedy_answers(questions)) / len(questions)
    allocation = [AllocatedSample(p.id) for p in samples]
    by_id = {p.id: p for p in pool}
    paths = llm_paths(samples)
    row["round_s"] = timed(lambda: run_round(trainer, 1, allocation, by_id, paths))
    row["round_samples"] = len(samples)
    return row


def run(out_dir: Path, quick: bool) -> None:
    """Measure every SLM of the zoo profile and write agent.json / agent.md."""
    from lada.bench import write_result
    from lada.zoo import build_zoo

    profile = "micro" if quick else "demo"
    zoo = build_zoo(profile, progress=False)
    rows = [measure_model(name, path, quick) for name, path in zoo.slms.items()]
    header = (
        "| model | params | sft step (s) | contrastive step (s) | scored paths/s "
        "| greedy s/sample | round (s) / samples |\n|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['model']} | {r['params']} | {r['sft_step_s']:.3f} | {r['contrastive_step_s']:.3f} "
        f"| {r['score_paths_per_s']:.0f} | {r['greedy_s_per_sample']:.3f} "
        f"| {r['round_s']:.1f} / {r['round_samples']} |"
        for r in rows
    ]
    markdown = (
        f"# Agent benchmark ({profile} zoo)\n\nOne optimiser step = 4 samples x 3 paths "
        "+ 4 private examples; a round = own paths, scoring, greedy before/after, training.\n\n"
        + header
        + "\n".join(lines)
        + "\n"
    )
    write_result(out_dir, "agent", {"profile": profile, "rows": rows}, markdown)
