"""PhaseTimes: where a run's or a round's minutes go."""

from __future__ import annotations

import pytest

from lada.phases import PhaseTimes


def test_a_nested_phase_is_taken_out_of_its_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A round of 10 s in which 4 s are the LLM's paths: 6 + 4, not 10 + 4."""
    clock = iter([0.0, 3.0, 7.0, 10.0])
    monkeypatch.setattr("lada.phases.time.monotonic", lambda: next(clock))
    times = PhaseTimes()
    with times.phase("round"), times.phase("paths", within="round"):
        pass
    assert times.rounded() == {"paths": 4.0, "round": 6.0}
