"""Which prompts a version's adapter answers: the gate of `absorb_route gate`.

An adapter absorbed from clients teaches a small LLM what only they knew, and costs it
precision everywhere else (docs/zoo.md, attempts 13-14: no rate, replay, module subset or
anchor kept the public domains within 3 points). With the gate, a version serves its adapter
only on prompts that look like those it absorbed, and the base model on prompts that look
like those the base already answered soundly (the paths replayed beside the absorb): a
TF-IDF + logistic-regression classifier (scikit-learn) fitted on those two sets of prompts
when the adapter is trained, saved beside it as the prompts themselves, so what a version
routes is inspectable and is refitted identically when the service restarts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GATE_FILE = "gate.json"
GATE_THRESHOLD = 0.5  # P(absorbed) at or above which the adapter answers


class AdapterGate:
    """Routes a prompt to the adapter when it is closer to the absorbed prompts than to the
    known ones. With no known prompts there is nothing to keep from the adapter, so every
    prompt routes to it (the behaviour of `absorb_route all`)."""

    def __init__(self, absorbed: Sequence[str], known: Sequence[str]) -> None:
        if not absorbed:
            raise ValueError("absorbed: a gate needs the prompts its adapter absorbed")
        self.absorbed = list(absorbed)
        self.known = list(known)
        self._model = _fit(self.absorbed, self.known) if self.known else None

    def routes(self, prompts: Sequence[str]) -> list[bool]:
        """For each prompt, whether the adapter (True) or the base model answers it."""
        if self._model is None or not prompts:
            return [True] * len(prompts)
        probabilities = self._model.predict_proba(list(prompts))[:, 1]
        return [bool(p >= GATE_THRESHOLD) for p in probabilities]

    def save(self, adapter_dir: Path) -> None:
        payload = {"absorbed": self.absorbed, "known": self.known}
        (adapter_dir / GATE_FILE).write_text(json.dumps(payload))

    @classmethod
    def load(cls, adapter_dir: Path) -> AdapterGate | None:
        """The gate saved beside an adapter; None for an adapter that serves every prompt."""
        path = adapter_dir / GATE_FILE
        if not path.exists():
            return None
        payload = json.loads(path.read_text())
        return cls(payload["absorbed"], payload["known"])


def replay_to_train(
    gate: AdapterGate | None, replay: Sequence[tuple[str, str]], train_all: bool
) -> list[tuple[str, str]]:
    """The replayed (prompt, path) pairs an adapter trains on: every one with `train_all` or
    without a gate; otherwise those whose prompts the gate sends to the adapter, the only
    public prompts of their kind it will answer (docs/zoo.md, attempt 18)."""
    if train_all or gate is None:
        return list(replay)
    routed = gate.routes([prompt for prompt, _ in replay])
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


def _fit(absorbed: list[str], known: list[str]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(class_weight="balanced", max_iter=1000),
    )
    model.fit([*absorbed, *known], [1] * len(absorbed) + [0] * len(known))
    return model
