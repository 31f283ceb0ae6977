"""Sampling parameters, shared by every generator (LLM backends, agents, evaluation).

Light on purpose (no torch): the LLM client and the wire translation import it too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters of one generation request; temperature 0 means greedy."""

    n: int = 4
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 128
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0
