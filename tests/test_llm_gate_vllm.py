"""The adapter gate over real gRPC on a vLLM service (LoRARequest per routed prompt): after a
gated absorb of client-only paths, public samples are answered by the base model and the
client-only ones by the adapter. The demo LLM, because the gate learns what the base knows
from its sound replayed paths, and the micro LLM has few."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lada.tasks import CLIENT_DOMAINS, Problem, format_target, load_dataset
from llm_service.client import LLMClient
from llm_service.types import Contribution
from tests.fixtures_llm import start_llm_service

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
DEMO_LLM = Path(__file__).resolve().parents[1] / "zoo" / "demo" / "llm"  # committed weights
POOL = "synthetic:domains=all+units,n=80,seed=3"


@pytest.fixture(scope="module")
def gated(tmp_path_factory) -> Iterator[tuple[LLMClient, str, list[Problem]]]:
    """A service that absorbed 8 client-only reference paths through the gate."""
    log_dir = tmp_path_factory.mktemp("llm-gate")
    env = {"LADA_LLM_ABSORB_ROUTE": "gate", "LADA_LLM_ABSORB_REPLAY_RATIO": "2"}
    handle = start_llm_service(DEMO_LLM, log_dir, name="llm-gate", pool_spec=POOL, env=env)
    pool = load_dataset(POOL)
    units = [p for p in pool if p.domain in CLIENT_DOMAINS]
    try:
        with LLMClient(handle.address, timeout_s=600) as client:
            contributions = [Contribution(p.id, format_target(p.reference)) for p in units[:8]]
            version = client.absorb(contributions, epochs=2, learning_rate=1e-2)
            yield client, version.version, pool
    finally:
        assert handle.process.stop(timeout=60) == 0, handle.log()[-3000:]


def test_the_gated_version_answers_public_samples_as_the_base_model(gated) -> None:
    client, version, pool = gated
    public = [p.id for p in pool if p.domain not in CLIENT_DOMAINS][:6]
    on_version = client.generate(public, n=2, max_tokens=48, seed=5, model_version=version)
    on_base = client.generate(public, n=2, max_tokens=48, seed=5, model_version="base")
    for a, b in zip(on_version.results, on_base.results, strict=True):
        assert [p.text for p in a.paths] == [p.text for p in b.paths]
        assert [p.joint_logprob for p in a.paths] == pytest.approx(
            [p.joint_logprob for p in b.paths], abs=1e-4
        )


def test_the_gated_version_scores_client_only_paths_with_its_adapter(gated) -> None:
    client, version, pool = gated
    held_out = [p for p in pool if p.domain in CLIENT_DOMAINS][8]
    path = [format_target(held_out.reference)]
    adapted = client.score(path, sample_id=held_out.id, model_version=version).scores[0]
    base = client.score(path, sample_id=held_out.id, model_version="base").scores[0]
    assert adapted.joint_logprob > base.joint_logprob + 0.1


def test_list_versions_says_the_version_is_gated(gated) -> None:
    client, version, _ = gated
    versions, serving = client.list_versions()
    assert serving == version
    assert [(v.version, v.absorb_mode, v.absorb_route) for v in versions] == [
        ("base", "", ""),
        (version, "rebase", "gate"),
    ]
