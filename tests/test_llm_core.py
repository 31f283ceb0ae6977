"""LLMCore in process (no gRPC) on the transformers backend: cache, consistency, absorb
(both absorb modes: rebase from base, continue from the parent)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import llm_service.core
from lada.config import LLMServiceConfig
from lada.tasks import format_prompt, format_target
from llm_service.absorb import REPLAY_OVERDRAW, Example, train_adapter
from llm_service.absorbed import CONTRIBUTIONS_FILE, read_contributions
from llm_service.core import LLMCore
from llm_service.errors import FailedPrecondition, InvalidArgument, NotFound
from llm_service.main import build_core
from llm_service.settings import LLMServiceExtras
from llm_service.types import AbsorbOverrides, Contribution, Sampling

POOL = "synthetic:domains=all,n=64,seed=3"


def _core(model: Path, state_dir: Path, **extras: Any) -> LLMCore:
    config = LLMServiceConfig(model=str(model), backend="transformers", public_pool=POOL)
    return build_core(config, LLMServiceExtras(state_dir=str(state_dir), **extras))


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
    found among the 16 candidates drawn for 4 contributions (0: replay off, and with it the
    gate, which learns from the replayed prompts)."""
    extras = LLMServiceExtras(
        state_dir=str(tmp_path / "state"),
        absorb_replay_ratio=ratio,
        absorb_route="gate" if ratio else "all",
    )
    config = LLMServiceConfig(model=str(DEMO_LLM), backend="transformers", public_pool=POOL)
    core = build_core(config, extras)
    try:
        info = core.absorb(_references(core, 4), AbsorbOverrides(epochs=1))
    finally:
        core.close()
    assert (info.samples_absorbed, info.samples_replayed) == (4, replayed)


# ---- absorb modes: two small absorbs, 3 then 2 reference paths ---------------------------
ONE_EPOCH = AbsorbOverrides(epochs=1)


@pytest.fixture(params=["rebase", "continue"])
def mode_core(request, micro_zoo, tmp_path: Path) -> Iterator[LLMCore]:
    llm = _core(Path(micro_zoo.llm), tmp_path / "state", absorb_mode=request.param)
    yield llm
    llm.close()


@pytest.fixture
def rebase_core(micro_zoo, tmp_path: Path) -> Iterator[LLMCore]:
    """The default mode, with one replayed path per trained contribution."""
    llm = _core(Path(micro_zoo.llm), tmp_path / "state", absorb_replay_ratio=1.0)
    yield llm
    llm.close()


def _trainings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path | None, list[Example]]]:
    """(the adapter each absorb started from, what it trained on), appended per absorb."""
    calls: list[tuple[Path | None, list[Example]]] = []

    def recording(model: Path, start: Path | None, examples: Sequence[Example], *rest: Any):
        calls.append((start, list(examples)))
        return train_adapter(model, start, examples, *rest)

    monkeypatch.setattr(llm_service.core, "train_adapter", recording)
    return calls


def _generations(monkeypatch: pytest.MonkeyPatch, core: LLMCore) -> list[tuple[str, list[str]]]:
    """(the version asked for, the sample IDs), appended per generate call."""
    calls: list[tuple[str, list[str]]] = []
    generate = core.generate

    def recording(sample_ids: Sequence[str], prompts: Sequence[str], sampling, version=""):
        calls.append((version, list(sample_ids)))
        return generate(sample_ids, prompts, sampling, version)

    monkeypatch.setattr(core, "generate", recording)
    return calls


def _examples(core: LLMCore, contributions: list[Contribution]) -> list[Example]:
    return [(format_prompt(core.pool[c.sample_id].question), c.path) for c in contributions]


def _stripped(contributions: list[Contribution]) -> list[Contribution]:
    return [Contribution(c.sample_id, c.path) for c in contributions]


def test_a_rebased_version_trains_a_fresh_adapter_on_everything_absorbed_so_far(
    rebase_core, monkeypatch
) -> None:
    first, second = _references(rebase_core, 5)[:3], _references(rebase_core, 5)[3:]
    trainings = _trainings(monkeypatch)
    rebase_core.absorb(first, ONE_EPOCH)
    info = rebase_core.absorb(second, ONE_EPOCH)
    assert [start for start, _ in trainings] == [None, None]
    absorbed = second + first
    assert trainings[1][1][: len(absorbed)] == _examples(rebase_core, absorbed)
    assert (info.version, info.parent, info.absorb_mode) == ("v2", "v1", "rebase")
    assert info.absorbed_ids == sorted(c.sample_id for c in absorbed)
    assert info.samples_absorbed == len(absorbed)


def test_a_rebased_version_replays_base_paths_outside_everything_absorbed(
    rebase_core, monkeypatch
) -> None:
    """Replay ratio 1 over the 5 cumulative contributions: 5 paths, overdrawn."""
    first, second = _references(rebase_core, 5)[:3], _references(rebase_core, 5)[3:]
    rebase_core.absorb(first, ONE_EPOCH)
    generations = _generations(monkeypatch, rebase_core)
    rebase_core.absorb(second, ONE_EPOCH)
    assert [version for version, _ in generations] == ["base"]
    drawn = set(generations[0][1])
    assert len(drawn) == REPLAY_OVERDRAW * 5
    assert not drawn & {c.sample_id for c in first + second}


def test_a_rebased_version_may_change_the_lora_rank(rebase_core) -> None:
    rebase_core.absorb(_references(rebase_core, 2), ONE_EPOCH)
    info = rebase_core.absorb(
        _references(rebase_core, 3)[2:], AbsorbOverrides(epochs=1, lora_rank=8)
    )
    assert (info.version, info.lora_rank) == ("v2", 8)


def test_rebasing_onto_a_version_that_recorded_no_contributions_keeps_serving_it(
    rebase_core,
) -> None:
    """A version trained before contributions.jsonl existed cannot be rebuilt from base."""
    v1 = rebase_core.absorb(_references(rebase_core, 2), ONE_EPOCH)
    (Path(v1.adapter_dir) / CONTRIBUTIONS_FILE).unlink()
    with pytest.raises(FailedPrecondition, match="absorb_mode continue"):
        rebase_core.absorb(_references(rebase_core, 3)[2:], ONE_EPOCH)
    versions, serving = rebase_core.list_versions()
    assert serving == "v1" and [v.version for v in versions] == ["base", "v1"]


def test_a_continued_version_trains_its_parents_adapter_and_replays_its_paths(
    micro_zoo, tmp_path, monkeypatch
) -> None:
    core = _core(Path(micro_zoo.llm), tmp_path / "state", absorb_mode="continue")
    try:
        v1 = core.absorb(_references(core, 3), ONE_EPOCH)
        trainings, generations = _trainings(monkeypatch), _generations(monkeypatch, core)
        second = _references(core, 5)[3:]
        info = core.absorb(second, ONE_EPOCH)
    finally:
        core.close()
    assert trainings[0][0] == Path(v1.adapter_dir)
    assert trainings[0][1][: len(second)] == _examples(core, second)
    assert [version for version, _ in generations] == ["v1"]
    assert (info.version, info.absorb_mode) == ("v2", "continue")


def test_every_version_records_its_cumulative_contributions(mode_core) -> None:
    """Whatever the mode, so a rebased child (or a restarted service) can rebuild."""
    first, second = _references(mode_core, 5)[:3], _references(mode_core, 5)[3:]
    v1 = mode_core.absorb(first + first[:1], ONE_EPOCH)
    v2 = mode_core.absorb(second, ONE_EPOCH)
    assert read_contributions(Path(v1.adapter_dir)) == _stripped(first)
    assert read_contributions(Path(v2.adapter_dir)) == _stripped(second + first)
    assert v2.absorbed_ids == sorted(c.sample_id for c in first + second)
