"""Evaluation harness and shared scoring/generation on the micro zoo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lada.evaluation import evaluate
from lada.modeling import generate, load_causal_lm, score_completions
from lada.tasks import format_prompt, format_target, load_dataset
from lada.zoo import ZooManifest

GSM8K_TEST = Path("/work/shared/data/gsm8k/test.jsonl")


def test_evaluate_reports_slices(micro_zoo: ZooManifest, tmp_path: Path) -> None:
    report = evaluate(
        micro_zoo.llm,
        "synthetic:domains=all,n=8,seed=7",
        batch_size=4,
        pass_k=2,
        max_new_tokens=12,
        progress=False,
    )
    assert report.n == 8 and set(report.by_domain) == {
        "purchases",
        "rates",
        "percentages",
        "comparisons",
    }
    assert 0.0 <= report.overall.accuracy <= 1.0 and report.overall.pass_at_k is not None
    assert report.overall.mean_nlp < 0
    assert sum(s.n for s in report.by_difficulty.values()) == 8
    table = report.to_markdown()
    assert "| all | 8 |" in table and "pass@2" in table
    report.write_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 8


@pytest.mark.skipif(not GSM8K_TEST.exists(), reason="GSM8K data not present")
def test_evaluate_on_gsm8k_file(micro_zoo: ZooManifest) -> None:
    slm = next(iter(micro_zoo.slms.values()))
    report = evaluate(
        slm, f"gsm8k:{GSM8K_TEST},limit=3", batch_size=3, pass_k=0, max_new_tokens=6, progress=False
    )
    assert report.n == 3 and set(report.by_domain) == {"gsm8k"}
    assert report.overall.pass_at_k is None and "pass@" not in report.to_markdown()


def test_scores_do_not_depend_on_batching(micro_zoo: ZooManifest) -> None:
    model, tok = load_causal_lm(micro_zoo.llm)
    problems = load_dataset("synthetic:n=5,seed=11")
    prompts = [format_prompt(p.question) for p in problems]
    targets = [format_target(p.reference) for p in problems]
    together = score_completions(model, tok, prompts, targets, batch_size=5)
    alone = [
        score_completions(model, tok, [p], [t])[0] for p, t in zip(prompts, targets, strict=True)
    ]
    for a, b in zip(together, alone, strict=True):
        assert a.joint == pytest.approx(b.joint, abs=1e-3)
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)


def test_generate_batched_matches_single_and_samples(micro_zoo: ZooManifest) -> None:
    model, tok = load_causal_lm(micro_zoo.llm)
    prompts = [format_prompt(p.question) for p in load_dataset("synthetic:n=3,seed=2")]
    batched = generate(model, tok, prompts, max_new_tokens=10)
    single = [generate(model, tok, [p], max_new_tokens=10)[0] for p in prompts]
    assert batched == single
    sampled = generate(
        model, tok, prompts, max_new_tokens=10, greedy=False, temperature=1.0, n=3, seed=5
    )
    assert [len(s) for s in sampled] == [3, 3, 3]
    assert sampled == generate(
        model, tok, prompts, max_new_tokens=10, greedy=False, temperature=1.0, n=3, seed=5
    )


def test_a_sampled_path_depends_on_its_prompt_and_seed_not_on_its_batch(
    micro_zoo: ZooManifest,
) -> None:
    model, tokenizer = load_causal_lm(micro_zoo.llm)
    prompts = [format_prompt(p.question) for p in load_dataset("synthetic:n=5,seed=3")]
    sample = {"greedy": False, "temperature": 1.0, "n": 3, "seed": 7}
    together = generate(model, tokenizer, prompts, 16, batch_size=4, **sample)
    alone = [generate(model, tokenizer, [p], 16, **sample)[0] for p in reversed(prompts)]
    assert together == alone[::-1]
    assert len({text for paths in together for text in paths}) > 5  # really sampled
    reseeded = generate(model, tokenizer, prompts, 16, **{**sample, "seed": 8})
    assert reseeded != together
