"""The one problem record and the one prompt template shared by the LLM, the SLMs and eval."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

ANSWER_MARK = "####"


@dataclass(frozen=True)
class Problem:
    """A reasoning sample; `id` is a content hash so every party derives the same ID."""

    id: str
    question: str
    reference: str  # step-by-step reasoning path ending with "#### <answer>"
    answer: str  # normalised final answer string
    domain: str
    difficulty: int  # number of reasoning steps

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSONL friendly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        """Inverse of `to_dict`."""
        return cls(
            id=str(data["id"]),
            question=str(data["question"]),
            reference=str(data["reference"]),
            answer=str(data["answer"]),
            domain=str(data["domain"]),
            difficulty=int(data["difficulty"]),
        )


def content_id(prefix: str, *parts: str) -> str:
    """Stable ID from content: `<prefix>-<12 hex of sha256>`."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:12]}"


def format_prompt(question: str) -> str:
    """THE prompt template: every model sees exactly this before its reasoning path."""
    return f"Q: {question.strip()}\nA:"


def format_target(reference: str) -> str:
    """The completion a model is trained/scored on for a prompt: a space, then the path."""
    return " " + reference.strip()
