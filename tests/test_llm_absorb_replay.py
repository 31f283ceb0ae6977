"""Replay in absorb: the LLM's own sound paths on other public samples train beside the
contributions, so absorbing client knowledge does not erase what the LLM knew."""

from __future__ import annotations

from collections.abc import Sequence

from lada.tasks import Problem, format_prompt, format_target, load_dataset
from llm_service.absorb import REPLAY_OVERDRAW, replay_candidates, sound_replay

POOL = load_dataset("synthetic:domains=all,n=40,seed=5")


def test_replay_candidates_leave_out_the_contributed_samples() -> None:
    contributed = {p.id for p in POOL[:30]}
    drawn = replay_candidates(POOL, contributed, count=20, seed=0)
    assert {p.id for p in drawn} == {p.id for p in POOL[30:]}  # only 10 are left


def test_replay_candidates_overdraw_and_are_seeded() -> None:
    first = replay_candidates(POOL, set(), count=8, seed=1)
    assert len(first) == 8 * REPLAY_OVERDRAW == 16
    assert [p.id for p in replay_candidates(POOL, set(), count=8, seed=1)] == [p.id for p in first]
    assert [p.id for p in replay_candidates(POOL, set(), count=8, seed=2)] != [p.id for p in first]


def test_no_replay_asked_draws_nothing() -> None:
    assert replay_candidates(POOL, set(), count=0, seed=0) == []


def _half_right(problems: Sequence[Problem]) -> list[str]:
    """The reference path for even positions, a wrong final answer for odd ones."""
    return [
        format_target(p.reference) if i % 2 == 0 else " 1+1=2\n#### -7"
        for i, p in enumerate(problems)
    ]


def test_only_sound_paths_are_replayed_up_to_the_count() -> None:
    candidates = POOL[:10]
    pairs = sound_replay(candidates, _half_right, count=3)
    assert pairs == [
        (format_prompt(p.question), format_target(p.reference)) for p in candidates[0:6:2]
    ]
    assert len(sound_replay(candidates, _half_right, count=100)) == 5
