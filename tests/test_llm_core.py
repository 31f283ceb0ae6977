"""LLMCore in process (no gRPC) on the transformers backend: cache, consistency, absorb."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lada.config import LLMServiceConfig
from lada.tasks import format_target
from llm_service.core import LLMCore
from llm_service.errors import InvalidArgument, NotFound
from llm_service.main import build_core
from llm_service.settings import LLMServiceExtras
from llm_service.types import AbsorbOverrides, Contribution, Sampling

POOL = "synthetic:domains=all,n=64,seed=3"


def _core(model: Path, state_dir: Path) -> LLMCore:
    config = LLMServiceConfig(model=str(model), backend="transformers", public_pool=POOL)
    return build_core(config, LLMServiceExtras(state_dir=str(state_dir)))


@pytest.fixture
def core(micro_zoo, tmp_path: Path) -> Iterator[LLMCore]:
    llm = _core(Path(micro_zoo.llm), tmp_path / "state")
    yield llm
    llm.close()


def _references(core: LLMCore, count: int) -> list[Contribution]:
    ids = list(core.pool)[:count]
    return [Contribution(i, format_target(core.pool[i].reference), "agent-a") for i in ids]


def test_repeated_sample_ids_in_one_request_are_generated_once(core) -> None:
    sample = list(core.pool)[0]
    result = core.generate([sample, sample], [], Sampling(n=2, max_tokens=16, seed=1))
    assert result.results[0].paths == result.results[1].paths
    assert len(core.cache) == 1


def test_every_reported_path_logprob_is_what_score_gives_for_its_text(core) -> None:
    ids = list(core.pool)[:4]
    result = core.generate(ids, [], Sampling(n=3, max_tokens=48, seed=2))
    for sample in result.results:
        texts = [p.text for p in sample.paths]
        scores = core.score(sample.prompt, texts).scores
        for path, score in zip(sample.paths, scores, strict=True):
            assert path.token_count == score.token_count
            assert path.joint_logprob == pytest.approx(score.joint_logprob, abs=1e-4)


def test_absorb_fails_cleanly_when_the_adapter_cannot_be_saved(core) -> None:
    (core.state_dir / "adapters").parent.mkdir(parents=True, exist_ok=True)
    (core.state_dir / "adapters").write_text("not a directory")
    with pytest.raises(OSError):
        core.absorb(_references(core, 2), AbsorbOverrides(epochs=1))
    versions, serving = core.list_versions()
    assert serving == "base" and [v.version for v in versions] == ["base"]


def test_absorb_validates_before_training(core) -> None:
    with pytest.raises(NotFound, match="syn-missing"):
        core.absorb([Contribution("syn-missing", " 1")])
    with pytest.raises(InvalidArgument, match=r"contributions\[0\].path"):
        core.absorb([Contribution(list(core.pool)[0], "  ")])
    with pytest.raises(InvalidArgument, match="options.lora_rank"):
        core.absorb(_references(core, 1), AbsorbOverrides(lora_rank=64))
    with pytest.raises(InvalidArgument, match="contributions: give at least one"):
        core.absorb([])
    assert core.serving_version == "base"


def test_versions_survive_a_restart_of_the_core(micro_zoo, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = _core(Path(micro_zoo.llm), state)
    contributions = _references(first, 3)
    info = first.absorb(contributions, AbsorbOverrides(epochs=1))
    before = first.score("", [contributions[0].path], sample_id=contributions[0].sample_id)
    first.close()
    second = _core(Path(micro_zoo.llm), state)
    after = second.score("", [contributions[0].path], sample_id=contributions[0].sample_id)
    assert second.serving_version == info.version == "v1"
    assert after.model_version == "v1"
    assert after.scores[0].joint_logprob == pytest.approx(before.scores[0].joint_logprob, abs=1e-4)
    second.close()


DEMO_LLM = Path(__file__).resolve().parents[1] / "zoo" / "demo" / "llm"  # committed weights


@pytest.mark.parametrize(("ratio", "replayed"), [(2.0, 8), (0.0, 0)])
def test_absorb_replays_the_llms_own_sound_paths_beside_the_contributions(
    tmp_path: Path, ratio: float, replayed: int
) -> None:
    """The demo LLM solves most public samples, so 2 replayed paths per contribution are
    found among the 16 candidates drawn for 4 contributions (0: replay off)."""
    extras = LLMServiceExtras(state_dir=str(tmp_path / "state"), absorb_replay_ratio=ratio)
    config = LLMServiceConfig(model=str(DEMO_LLM), backend="transformers", public_pool=POOL)
    core = build_core(config, extras)
    try:
        info = core.absorb(_references(core, 4), AbsorbOverrides(epochs=1))
    finally:
        core.close()
    assert (info.samples_absorbed, info.samples_replayed) == (4, replayed)
