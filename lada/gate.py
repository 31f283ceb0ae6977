"""A prompt gate: which of two models answers a prompt, the one trained on some prompts (the
"adapter": the LLM's absorbed LoRA, an agent's distilled expert) or the one that already
answered others well (the base).

An adapter trained on what a model did not know costs it precision everywhere else
(docs/zoo.md, attempts 13-14 for the LLM, 8-9 and 14 for the agents). With a gate a model
serves the adapter only on prompts that look like those it was trained on, and the base on
prompts that look like those the base already handled: a TF-IDF + logistic-regression
classifier (scikit-learn) fitted on those two sets of prompts, saved as the prompts
themselves, so what is routed is inspectable and is refitted identically after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GATE_FILE = "gate.json"
GATE_THRESHOLD = 0.5  # P(absorbed) at or above which the adapter answers
HELD_OUT_FOLDS = 5  # folds of the known prompts in `known_routes_held_out`


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

    def known_routes_held_out(self) -> list[bool]:
        """For each known prompt, whether a gate fitted without it sends it to the adapter.

        The gate's own routes of its training prompts say little: in-sample it keeps nearly
        every known prompt from the adapter, while it sends unseen prompts like them there
        (docs/results.md, the S1 rerun). Cross-fitted routes say which of them it would not."""
        if self._model is None:
            return [True] * len(self.known)
        folds = min(HELD_OUT_FOLDS, len(self.known))
        routed = [False] * len(self.known)
        for fold in range(folds):
            held = [i for i in range(len(self.known)) if i % folds == fold]
            kept = [p for i, p in enumerate(self.known) if i % folds != fold]
            if not kept:  # one known prompt: nothing to fit the base's side on
                return [True] * len(self.known)
            probabilities = _fit(self.absorbed, kept).predict_proba([self.known[i] for i in held])
            for i, p in zip(held, probabilities[:, 1], strict=True):
                routed[i] = bool(p >= GATE_THRESHOLD)
        return routed

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
