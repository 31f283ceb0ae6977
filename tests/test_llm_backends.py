"""The two backends behind one interface: same log-probs, consistent generated paths.

This is also issue 3's check that a zoo model gives identical log-probs under
transformers and vLLM: the vLLM side is the shared `llm_service` process (real engine),
the transformers side runs in this process on the same micro zoo LLM.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from lada.tasks import format_prompt, format_target, load_dataset
from llm_service.backends.base import (
    LOGPROB_FLOOR,
    STOP_TEXT,
    BackendSettings,
    LLMBackend,
    backend_names,
    create_backend,
    finite_logprobs,
    resolve_backend_name,
    trim_at_stop,
)
from llm_service.backends.transformers_backend import TransformersBackend
from llm_service.cache import LRUCache
from llm_service.client import LLMClient
from llm_service.errors import NonFiniteLogProb
from llm_service.types import Sampling

PER_TOKEN_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def reference_backend(micro_zoo) -> Iterator[LLMBackend]:
    backend = create_backend("transformers", BackendSettings(model=Path(micro_zoo.llm)))
    yield backend
    backend.close()


def test_registry_knows_both_backends_and_auto_picks_vllm() -> None:
    assert {"transformers", "vllm"} <= set(backend_names())
    assert resolve_backend_name("auto") == "vllm"
    assert resolve_backend_name("transformers") == "transformers"


def test_unknown_backend_name_is_refused(micro_zoo) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        create_backend("tpu", BackendSettings(model=Path(micro_zoo.llm)))


def test_minus_infinity_is_clamped_and_nan_refused() -> None:
    assert finite_logprobs([-0.5, -math.inf]) == [-0.5, LOGPROB_FLOOR]
    with pytest.raises(NonFiniteLogProb):
        finite_logprobs([-0.5, math.nan])


def test_trim_cuts_before_eos_and_before_the_next_question(reference_backend) -> None:
    tok = reference_backend.tokenizer
    body = tok(" 3+4=7\n#### 7", add_special_tokens=False)["input_ids"]
    tail = tok(STOP_TEXT + " next", add_special_tokens=False)["input_ids"]
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    logprobs = [-1.0] * (len(body) + len(tail))
    ids, lps, stopped = trim_at_stop(body + tail, logprobs, decode, tok.eos_token_id)
    assert (ids, stopped, len(lps)) == (body, True, len(body))
    ids, lps, stopped = trim_at_stop(
        body + [tok.eos_token_id, 5], [-1.0] * (len(body) + 2), decode, tok.eos_token_id
    )
    assert (ids, stopped, len(lps)) == (body, True, len(body))
    assert trim_at_stop(body, [-1.0] * len(body), decode, tok.eos_token_id)[2] is False


def test_lru_cache_evicts_the_least_recently_used() -> None:
    cache: LRUCache[int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert (cache.hits, cache.misses) == (3, 1)


@pytest.mark.vllm
def test_vllm_and_transformers_agree_per_token_on_scorepaths(llm_service, reference_backend):
    problems = load_dataset(llm_service.pool_spec)[:4]
    completions = [format_target(p.reference) for p in problems] + [" 12 apples\n#### 12", ""]
    with LLMClient(llm_service.address) as client:
        for problem in problems:
            prompt = format_prompt(problem.question)
            served = client.score(completions, prompt=prompt, token_logprobs=True).scores
            local = reference_backend.score([prompt] * len(completions), completions, "base")
            for remote, ref in zip(served, local, strict=True):
                assert remote.token_count == ref.token_count
                for a, b in zip(remote.token_logprobs, ref.token_logprobs, strict=True):
                    assert a == pytest.approx(b, abs=PER_TOKEN_TOLERANCE)


@pytest.mark.vllm
def test_vllm_generated_paths_score_the_same_under_transformers(llm_service, reference_backend):
    problem = load_dataset(llm_service.pool_spec)[30]
    with LLMClient(llm_service.address) as client:
        sample = client.generate([problem.id], n=4, max_tokens=64, seed=5).results[0]
    texts = [p.text for p in sample.paths]
    local = reference_backend.score([sample.prompt] * len(texts), texts, "base")
    for path, ref in zip(sample.paths, local, strict=True):
        assert path.token_count == ref.token_count
        assert path.joint_logprob == pytest.approx(
            ref.joint, abs=PER_TOKEN_TOLERANCE * max(1, ref.token_count)
        )


def test_transformers_generated_paths_carry_their_scorepaths_logprobs(reference_backend):
    prompts = [format_prompt(p.question) for p in load_dataset("synthetic:n=3,seed=9")]
    generated = reference_backend.generate(prompts, Sampling(n=2, max_tokens=40, seed=3), "base")
    for prompt, paths in zip(prompts, generated, strict=True):
        assert len(paths) == 2
        for path in paths:
            if reference_backend.pair_ids(prompt, path.text)[1] != path.token_ids:
                continue  # non-canonical split: the core re-scores these (tested in core tests)
            (score,) = reference_backend.score([prompt], [path.text], "base")
            assert score.joint == pytest.approx(path.scores.joint, abs=1e-4)
            assert path.finish_reason in {"stop", "length"}
            assert len(path.token_ids) <= 40


def test_transformers_backend_is_the_registered_class(reference_backend) -> None:
    assert isinstance(reference_backend, TransformersBackend)
    assert reference_backend.context_length == 1024
