"""Which prompts an LLM version's adapter answers: the gate of `absorb_route gate`
(lada/gate.py), the replay it trains on, and what a stopped service routes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lada.gate import AdapterGate


def replay_to_train(
    gate: AdapterGate | None, replay: Sequence[tuple[str, str]], train_all: bool
) -> list[tuple[str, str]]:
    """The replayed (prompt, path) pairs an adapter trains on: every one with `train_all` or
    without a gate; otherwise those whose prompts a gate fitted without them sends to the
    adapter, public prompts of a kind it will answer (docs/zoo.md, attempt 18). `gate` was
    fitted with the replayed prompts as its known ones, in order."""
    if train_all or gate is None:
        return list(replay)
    if gate.known != [prompt for prompt, _ in replay]:
        raise ValueError("gate: fit it with the replayed prompts as its known ones, in order")
    routed = gate.known_routes_held_out()
    return [pair for pair, hit in zip(replay, routed, strict=True) if hit]


def serving_routes(state_dir: Path, prompts: Sequence[str]) -> list[bool] | None:
    """Which prompts the serving version's adapter answers, read from an LLM service's state
    directory (after it stopped); None while it serves the base model."""
    from llm_service.versions import VERSIONS_FILE, VersionRegistry

    registry = VersionRegistry(state_dir / VERSIONS_FILE)
    info = registry.get(registry.serving)
    if info is None or not info.adapter_dir:
        return None
    gate = AdapterGate.load(Path(info.adapter_dir))
    return gate.routes(prompts) if gate else [True] * len(prompts)
