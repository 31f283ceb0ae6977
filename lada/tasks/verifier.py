"""Answer extraction and comparison: the single notion of "correct" used everywhere, and
the stricter "sound" (every arithmetic step holds) that a path must meet to be taught."""

from __future__ import annotations

import ast
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


_STEP = re.compile(r"([0-9.()+\-*/ ]*[0-9)])\s*=\s*(-?\d+(?:\.\d+)?)")
_STEP_TOLERANCE = 0.01  # worked solutions round (10/3=3.33)
_OPERATORS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def _evaluate(node: ast.AST) -> float:
    """+ - * / over numbers only; anything else raises ValueError."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError("not arithmetic")


_REWRITES = (
    (re.compile(r"(\d)\s*%\s*of\s*"), r"\1/100*"),  # 25% of 20 -> 25/100*20
    (re.compile(r"%"), ""),  # 12/20*100% = 60%
    (re.compile(r"(?<=[\d)])\s*[x×]\s*(?=[\d(.])"), "*"),  # 3 x 4, 3 × .5
    (re.compile(r"÷"), "/"),
    (re.compile(r"[−–]"), "-"),
)


def arithmetic_steps(text: str) -> list[tuple[str, str, bool]]:
    """Every checkable `expression = number` in a path, and whether it holds. Steps whose
    left side starts with an operator or has none had words cut out of them
    (`200 GB * 40% = 80`, `23 slices x 4 = 92`): skipped, not failed."""
    cleaned = text.replace(",", "").replace("$", "")
    for pattern, replacement in _REWRITES:
        cleaned = pattern.sub(replacement, cleaned)
    steps = []
    for expression, result in _STEP.findall(cleaned):
        expression = expression.strip()
        if expression[:1] in ("*", "/", "+", ")") or not re.search(r"\d\s*[-+*/]", expression):
            continue
        try:
            value = _evaluate(ast.parse(expression, mode="eval").body)
            holds = abs(value - float(result)) <= _STEP_TOLERANCE * max(1.0, abs(float(result)))
        except (SyntaxError, ValueError, ZeroDivisionError):
            holds = False
        steps.append((expression, result, holds))
    return steps


def is_sound(output: str, answer: str) -> bool:
    """Correct, with at least one arithmetic step and every step true: a path worth
    teaching, not a lucky final answer after wrong reasoning."""
    steps = arithmetic_steps(output)
    return is_correct(output, answer) and bool(steps) and all(h for _, _, h in steps)
