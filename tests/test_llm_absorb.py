"""Absorb over real gRPC on a vLLM service of its own (the shared one is never absorbed into).

Versions are LoRA adapters served by vLLM LoRARequest, without restarting the process.
The service absorbs in `continue` mode (each version trains its parent's adapter); the
default `rebase` mode is specified in process in tests/test_llm_core.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from allocator.llm_gateway import GrpcLLMGateway
from lada.tasks import Problem, format_prompt, format_target, load_dataset
from llm_service.backends.base import BackendSettings
from llm_service.backends.transformers_backend import TransformersBackend
from llm_service.client import LLMClient
from llm_service.types import BASE_VERSION, Contribution
from tests.fixtures_llm import LLMServiceHandle, start_llm_service

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ABSORBED = 12


@pytest.fixture(scope="module")
def absorbing_service(micro_zoo, tmp_path_factory) -> Iterator[LLMServiceHandle]:
    log_dir = tmp_path_factory.mktemp("llm-absorb")
    env = {"LADA_LLM_ABSORB_MODE": "continue"}
    handle = start_llm_service(Path(micro_zoo.llm), log_dir, name="llm-absorb", env=env)
    yield handle
    assert handle.process.stop(timeout=60) == 0, handle.log()[-3000:]


@pytest.fixture(scope="module")
def client(absorbing_service) -> Iterator[LLMClient]:
    with LLMClient(absorbing_service.address, timeout_s=600) as llm:
        yield llm


@pytest.fixture(scope="module")
def pool(absorbing_service) -> list[Problem]:
    return load_dataset(absorbing_service.pool_spec)


@pytest.fixture(scope="module")
def first_absorb(client, pool):
    """Absorb ABSORBED reference paths (one duplicated) once; returns (version, contributions)."""
    contributions = [
        Contribution(p.id, format_target(p.reference), "agent-a") for p in pool[:ABSORBED]
    ]
    contributions.append(contributions[0])
    base_before = _mean_nlp(client, contributions[:ABSORBED], "base")
    version = client.absorb(contributions)
    return version, contributions[:ABSORBED], base_before


def _mean_nlp(client: LLMClient, contributions: list[Contribution], version: str) -> float:
    values = [
        client.score([c.path], sample_id=c.sample_id, model_version=version)
        .scores[0]
        .normalized_logprob
        for c in contributions
    ]
    return sum(values) / len(values)


def test_absorb_serves_the_next_version_without_a_restart(
    absorbing_service, client, first_absorb
) -> None:
    pid = absorbing_service.process.proc.pid
    version, _, _ = first_absorb
    assert (version.version, version.parent, version.samples_absorbed) == ("v1", "base", ABSORBED)
    assert version.serving and version.final_loss > 0
    versions, serving = client.list_versions()
    assert serving == "v1"
    assert [(v.version, v.parent, v.samples_absorbed, v.serving) for v in versions] == [
        ("base", "", 0, False),
        ("v1", "base", ABSORBED, True),
    ]
    assert absorbing_service.process.proc.poll() is None
    assert absorbing_service.process.proc.pid == pid


def test_absorbed_paths_become_more_likely(client, first_absorb) -> None:
    _, contributions, base_before = first_absorb
    assert _mean_nlp(client, contributions, "base") == pytest.approx(base_before, abs=1e-4)
    assert _mean_nlp(client, contributions, "v1") > base_before + 0.01


def test_lora_version_in_vllm_scores_like_merged_weights_in_transformers(
    absorbing_service, client, first_absorb, micro_zoo
) -> None:
    _, contributions, _ = first_absorb
    adapter = absorbing_service.state_dir / "adapters" / "v1"
    reference = TransformersBackend(BackendSettings(model=Path(micro_zoo.llm)))
    reference.add_version("v1", adapter)
    for c in contributions[:4]:
        served = client.score(
            [c.path], sample_id=c.sample_id, model_version="v1", token_logprobs=True
        ).scores[0]
        prompt = client.generate([c.sample_id], n=1, max_tokens=1).results[0].prompt
        (local,) = reference.score([prompt], [c.path], "v1")
        for a, b in zip(served.token_logprobs, local.token_logprobs, strict=True):
            assert a == pytest.approx(b, abs=1e-3)


def test_each_version_has_its_own_cached_paths(client, pool, first_absorb) -> None:
    sample = [pool[50].id]
    on_v1 = client.generate(sample, n=2, max_tokens=24, seed=3)
    on_base = client.generate(sample, n=2, max_tokens=24, seed=3, model_version="base")
    assert (on_v1.model_version, on_base.model_version) == ("v1", "base")
    assert not on_base.results[0].cache_hit
    assert client.generate(sample, n=2, max_tokens=24, seed=3).results[0].cache_hit


def test_the_allocators_gateway_asks_the_version_it_names(
    absorbing_service, pool, first_absorb
) -> None:
    """The novelty check asks the base model while an adapter serves (allocator/driver.py)."""
    gateway = GrpcLLMGateway(absorbing_service.address, timeout_s=600)
    sample = pool[60].id
    assert gateway.serving_version() != BASE_VERSION  # an adapter serves
    assert gateway.accuracy([sample], 1, 0.0, BASE_VERSION)[sample] in ("0/1", "1/1")
    with pytest.raises(grpc.RpcError) as refused:
        gateway.accuracy([sample], 1, 0.0, "v99")
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert "model_version" in refused.value.details()


@pytest.mark.parametrize(
    ("contributions", "options", "code", "named"),
    [
        ([Contribution("syn-unknown", " 1")], {}, grpc.StatusCode.NOT_FOUND, "syn-unknown"),
        ([], {}, grpc.StatusCode.INVALID_ARGUMENT, "contributions"),
        (None, {"lora_rank": 16}, grpc.StatusCode.INVALID_ARGUMENT, "options.lora_rank"),
        (None, {"epochs": 1000}, grpc.StatusCode.INVALID_ARGUMENT, "options.epochs"),
        (None, {"lora_rank": 64}, grpc.StatusCode.INVALID_ARGUMENT, "max LoRA rank"),
    ],
)
def test_failed_absorb_leaves_the_serving_version_unchanged(
    client, pool, first_absorb, contributions, options, code, named
) -> None:
    before = client.list_versions()
    if contributions is None:
        contributions = [Contribution(pool[60].id, format_target(pool[60].reference))]
    with pytest.raises(grpc.RpcError) as excinfo:
        client.absorb(contributions, **options)
    assert excinfo.value.code() == code
    assert named in excinfo.value.details()
    assert client.list_versions() == before


def test_a_second_absorb_continues_from_the_first(
    absorbing_service, client, pool, first_absorb
) -> None:
    fresh = [Contribution(p.id, format_target(p.reference)) for p in pool[ABSORBED : ABSORBED + 4]]
    again = [Contribution(pool[0].id, format_target(pool[0].reference))]
    version = client.absorb(fresh + again, epochs=1)
    assert (version.version, version.parent, version.samples_absorbed) == (
        "v2",
        "v1",
        ABSORBED + 4,
    )
    versions, serving = client.list_versions()
    assert serving == "v2" and [v.version for v in versions] == ["base", "v1", "v2"]
    prompt = format_prompt(pool[0].question)
    assert client.score([" 1"], prompt=prompt).model_version == "v2"
    recorded = json.loads((absorbing_service.state_dir / "versions.json").read_text())
    assert [v["absorb_mode"] for v in recorded["versions"]] == ["", "continue", "continue"]
