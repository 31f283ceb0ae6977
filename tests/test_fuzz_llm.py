"""Property-based fuzzing of the LLM service over real gRPC (the shared vLLM service).

Random and malformed requests get only clean status codes (never UNKNOWN), no response
carries NaN or infinity, the service stays SERVING, and a rejected Absorb leaves the
serving version as it was.
"""

from __future__ import annotations

import math

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lada.v1 import llm_service_pb2, llm_service_pb2_grpc
from tests.fuzzing import CLEAN_CODES, fuzz_settings
from tests.procs import health_status

pytestmark = [pytest.mark.vllm]

FUZZ = fuzz_settings(25)
texts = st.one_of(
    st.text(max_size=30),
    st.text(min_size=3000, max_size=6000),
    st.sampled_from(["", "\x00", "Q: 2+2?\nA:"]),
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -1.0, 0.0, 0.8]),
)


@pytest.fixture(scope="module")
def stub(llm_service):
    with grpc.insecure_channel(llm_service.address) as channel:
        yield llm_service_pb2_grpc.LLMServiceStub(channel), llm_service.address


def _call(method, request):  # type: ignore[no-untyped-def]
    try:
        return method(request, timeout=120)
    except grpc.RpcError as exc:
        assert exc.code() in CLEAN_CODES, f"{exc.code()}: {exc.details()}"
        return None


def _all_finite(reply) -> bool:  # type: ignore[no-untyped-def]
    numbers = []
    for result in getattr(reply, "results", []):
        for path in result.paths:
            numbers += [path.joint_logprob, path.normalized_logprob]
    for score in getattr(reply, "scores", []):
        numbers += [score.joint_logprob, score.normalized_logprob, *score.token_logprobs]
    return all(math.isfinite(x) for x in numbers)


@FUZZ
@given(
    ids=st.lists(texts, max_size=3),
    prompts=st.lists(texts, max_size=2),
    n=st.integers(-5, 40),
    temperature=floats,
    top_p=floats,
    max_tokens=st.one_of(st.integers(-10, 48), st.just(100_000)),
    seed=st.integers(-5, 5),
)
def test_generate_with_random_fields(
    stub, ids, prompts, n, temperature, top_p, max_tokens, seed
) -> None:
    service, address = stub
    request = llm_service_pb2.GenerateReasoningPathsRequest(
        sample_ids=ids,
        prompts=prompts,
        sampling=llm_service_pb2.SamplingParams(
            n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed
        ),
    )
    reply = _call(service.GenerateReasoningPaths, request)
    if reply is not None:
        assert _all_finite(reply)
    assert health_status(address) == "SERVING"


@FUZZ
@given(
    prompt=texts,
    completions=st.lists(texts, max_size=3),
    sample_id=texts,
    version=st.sampled_from(["", "base", "v999", "\x00"]),
)
def test_score_with_random_fields(stub, prompt, completions, sample_id, version) -> None:
    service, address = stub
    request = llm_service_pb2.ScorePathsRequest(
        prompt=prompt,
        completions=completions,
        sample_id=sample_id,
        model_version=version,
        return_token_logprobs=True,
    )
    reply = _call(service.ScorePaths, request)
    if reply is not None:
        assert _all_finite(reply)
    assert health_status(address) == "SERVING"


@FUZZ
@given(
    contributions=st.lists(st.tuples(texts, texts), max_size=3),
    epochs=st.integers(-3, 3),
    learning_rate=floats,
    rank=st.integers(-4, 4096),
)
def test_a_rejected_absorb_leaves_the_serving_version(
    stub, contributions, epochs, learning_rate, rank
) -> None:
    service, address = stub
    before = service.ListModelVersions(llm_service_pb2.ListModelVersionsRequest(), timeout=30)
    request = llm_service_pb2.AbsorbRequest(
        contributions=[
            llm_service_pb2.Contribution(sample_id="fuzz-" + s, path=p) for s, p in contributions
        ],  # never a pool ID: always rejected
        options=llm_service_pb2.AbsorbOptions(
            epochs=epochs, learning_rate=learning_rate, lora_rank=rank
        ),
    )
    assert _call(service.Absorb, request) is None
    after = service.ListModelVersions(llm_service_pb2.ListModelVersionsRequest(), timeout=30)
    assert after.serving_version == before.serving_version
    assert len(after.versions) == len(before.versions)
    assert health_status(address) == "SERVING"
