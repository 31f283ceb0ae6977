"""A prompt gate: which of two models answers a prompt, the one trained on some prompts (the
"adapter": the LLM's absorbed LoRA, an agent's distilled expert) or the one that already
answered others well (the base).

An adapter trained on what a model did not know costs it precision everywhere else
(docs/zoo.md, attempts 13-14 for the LLM, 8-9 and 14 for the agents). With a gate a model
serves the adapter only on prompts that look like those it was trained on, and the base on
prompts that look like those the base already handled: a TF-IDF + logistic-regression
classifier (scikit-learn) fitted on those two sets of prompts, saved as the prompts
themselves, so what is routed is inspectable and is refitted identically after a restart.

Looking like the absorbed prompts is not enough where the base model is mostly right: a few
absorbed prompts of a domain the base answers 92% of draw that whole domain to the adapter,
and the adapter answers it worse (docs/results.md, S1 at the paper's scale). So a gate given
the base model's greedy answers on public prompts (`base_answers`) also asks a second
classifier, fitted on those answers without class weights, whether the base is more likely
wrong than right on a prompt, and sends the adapter only prompts on which both agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GATE_FILE = "gate.json"
GATE_THRESHOLD = 0.5  # P(absorbed) at or above which the adapter answers
BASE_WRONG_THRESHOLD = 0.5  # P(base answers wrong) at or above which it may
# inverse regularisation of the base-wrong classifier: at scikit-learn's 1.0 base answers on
# 80 public prompts let 22% of client-only prompts through, at 4.0 93% (150: 99.7%) with at
# most 0.5% of any public domain (the demo LLM's answers on synthetic pools of seeds 9101-9103,
# no test set; docs/llm_service.md)
BASE_WRONG_C = 4.0
HELD_OUT_FOLDS = 5  # folds of the known prompts in `known_routes_held_out`


class AdapterGate:
    """Routes a prompt to the adapter when it is closer to the absorbed prompts than to the
    known ones. With no known prompts there is nothing to keep from the adapter, so every
    prompt routes to it (the behaviour of `absorb_route all`).

    `base_answers`: (prompt, whether the base model's greedy answer was right) pairs; with
    them a prompt routes to the adapter only where the base is also likely wrong. Without
    any wrong answer among them the base is right wherever it was asked, so nothing routes
    to the adapter; without any right one the base check passes every prompt."""

    def __init__(
        self,
        absorbed: Sequence[str],
        known: Sequence[str],
        base_answers: Sequence[tuple[str, bool]] = (),
    ) -> None:
        if not absorbed:
            raise ValueError("absorbed: a gate needs the prompts its adapter absorbed")
        self.absorbed = list(absorbed)
        self.known = list(known)
        self.base_answers = [(prompt, bool(right)) for prompt, right in base_answers]
        self._model = _fit(self.absorbed, self.known) if self.known else None
        self._base_wrong = _base_wrong_rule(self.base_answers)

    def routes(self, prompts: Sequence[str]) -> list[bool]:
        """For each prompt, whether the adapter (True) or the base model answers it."""
        if not prompts:
            return []
        looks_absorbed = [True] * len(prompts)
        if self._model is not None:
            probabilities = self._model.predict_proba(list(prompts))[:, 1]
            looks_absorbed = [bool(p >= GATE_THRESHOLD) for p in probabilities]
        base_wrong = self._base_wrong(list(prompts))  # all True for a gate without answers
        return [a and b for a, b in zip(looks_absorbed, base_wrong, strict=True)]

    def known_routes_held_out(self) -> list[bool]:
        """For each known prompt, whether a gate fitted without it sends it to the adapter.

        The gate's own routes of its training prompts say little: in-sample it keeps nearly
        every known prompt from the adapter, while it sends unseen prompts like them there
        (docs/results.md, the S1 rerun). Cross-fitted routes say which of them it would not.
        The base check is left out: the known prompts are ones the base answered soundly, and
        which of them train the adapter is a question of what it absorbed."""
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
        payload = {
            "absorbed": self.absorbed,
            "known": self.known,
            "base_answers": [[prompt, right] for prompt, right in self.base_answers],
        }
        (adapter_dir / GATE_FILE).write_text(json.dumps(payload))

    @classmethod
    def load(cls, adapter_dir: Path) -> AdapterGate | None:
        """The gate saved beside an adapter; None for an adapter that serves every prompt."""
        path = adapter_dir / GATE_FILE
        if not path.exists():
            return None
        payload = json.loads(path.read_text())
        answers = [(prompt, right) for prompt, right in payload.get("base_answers", [])]
        return cls(payload["absorbed"], payload["known"], answers)


def _fit(absorbed: list[str], known: list[str]) -> Any:
    """Balanced: a dozen absorbed prompts against hundreds of known ones still route."""
    return _classifier(absorbed, known, class_weight="balanced")


def _base_wrong_rule(answers: list[tuple[str, bool]]) -> Callable[[list[str]], list[bool]]:
    """Whether P(the base answers wrong) >= BASE_WRONG_THRESHOLD, fitted unweighted so that
    it keeps the base's own error rate: a domain it answers 92% of stays with it. A constant
    where the answers hold one class only (or none: then every prompt passes)."""
    wrong = [prompt for prompt, right in answers if not right]
    right = [prompt for prompt, right in answers if right]
    if not wrong or not right:
        return lambda prompts: [not right] * len(prompts)
    model = _classifier(wrong, right, class_weight=None, inverse_regularisation=BASE_WRONG_C)
    return lambda prompts: [
        bool(p >= BASE_WRONG_THRESHOLD) for p in model.predict_proba(prompts)[:, 1]
    ]


def _classifier(
    positive: list[str],
    negative: list[str],
    class_weight: str | None,
    inverse_regularisation: float = 1.0,
) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(class_weight=class_weight, C=inverse_regularisation, max_iter=1000),
    )
    model.fit([*positive, *negative], [1] * len(positive) + [0] * len(negative))
    return model
