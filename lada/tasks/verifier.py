"""Answer extraction and comparison: the single notion of "correct" used everywhere."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUM = r"-?\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_MARKED = re.compile(r"####\s*(" + _NUM + r"|[^\s]+)")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*:?\s*(" + _NUM + ")", re.IGNORECASE)
_A_COLON = re.compile(r"(?:^|\n)\s*A:\s*(" + _NUM + ")")
_ANY_NUM = re.compile(r"(?<![\w.])" + _NUM.replace(r"-?\$?\s*", r"-?\$?"))


def normalize_answer(text: str) -> str:
    """Canonical answer string: no `$`/commas/trailing dot, `18.0` -> `18`, `3.50` -> `3.5`."""
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "")
    cleaned = cleaned.rstrip(".").lstrip("+")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return cleaned
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_answer(text: str) -> str | None:
    """Final answer of any model output: `#### N`, `the answer is N`, `A: N`, else last number."""
    for pattern in (_MARKED, _ANSWER_IS, _A_COLON):
        matches = pattern.findall(text)
        if matches:
            return normalize_answer(matches[-1])
    numbers = _ANY_NUM.findall(text)
    return normalize_answer(numbers[-1]) if numbers else None


def is_correct(output: str, answer: str) -> bool:
    """True when the answer extracted from `output` equals the reference answer."""
    predicted = extract_answer(output)
    if predicted is None:
        return False
    expected = normalize_answer(answer)
    if predicted == expected:
        return True
    try:
        return abs(Decimal(predicted) - Decimal(expected)) < Decimal("1e-6")
    except InvalidOperation:
        return False
