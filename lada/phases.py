"""Wall seconds per phase of a run or a round: where the minutes go, measured, not guessed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping


class PhaseTimes:
    """Wall seconds per named phase, summed over repeats. A phase nested `within` another is
    taken out of that one's seconds, so the phases add up to the whole."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str, within: str | None = None) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - started, within)

    def add(self, name: str, seconds: float, within: str | None = None) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if within is not None:
            self.seconds[within] = self.seconds.get(within, 0.0) - seconds

    def add_all(self, seconds: Mapping[str, float], within: str | None = None) -> None:
        for name, value in seconds.items():
            self.add(name, value, within)

    def rounded(self) -> dict[str, float]:
        return {name: round(value, 1) for name, value in self.seconds.items()}
