"""Verifier: answer extraction formats, normalisation, and the real GSM8K references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lada.tasks import (
    arithmetic_steps,
    extract_answer,
    is_correct,
    is_sound,
    load_dataset,
    normalize_answer,
)

GSM8K_TEST = Path("/work/shared/data/gsm8k/test.jsonl")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#### 18", "18"),
        ("steps...\n#### 18", "18"),
        ("The answer is 18.", "18"),
        ("the answer is $1,234.00", "1234"),
        ("A: 18", "18"),
        ("She sells 16 - 3 - 4 = 9 eggs", "9"),
        ("#### -5", "-5"),
        ("costs $3.50 in total", "3.5"),
        ("#### $1,000", "1000"),
        ("18.0", "18"),
        ("5 then 7 then 12", "12"),
        ("#### 7\nQ: next 99", "7"),
    ],
)
def test_extract_answer_formats(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


def test_no_number_is_none_and_incorrect() -> None:
    assert extract_answer("I do not know") is None
    assert not is_correct("I do not know", "3")


@pytest.mark.parametrize(
    ("raw", "norm"),
    [("$1,000", "1000"), ("18.", "18"), ("3.50", "3.5"), ("+4", "4"), ("007", "7"), ("1/2", "1/2")],
)
def test_normalize_answer(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm


def test_is_correct_compares_normalised() -> None:
    assert is_correct("so #### 18.0", "18")
    assert is_correct("The answer is $2,125.", "2,125")
    assert not is_correct("#### 17", "18")


@pytest.mark.skipif(not GSM8K_TEST.exists(), reason="GSM8K data not present")
def test_gsm8k_references_verify_against_raw_answers() -> None:
    raw = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines() if line.strip()]
    problems = load_dataset(f"gsm8k:{GSM8K_TEST}")
    assert len(problems) == len({p.id for p in problems}) > 1000
    for row in raw:  # the raw GSM8K answer text (with <<calc>> annotations) must verify
        final = row["answer"].rpartition("####")[2]
        assert is_correct(row["answer"], final)
    for p in problems:
        assert is_correct(p.reference, p.answer)
        assert "<<" not in p.reference and p.reference.endswith(f"#### {p.answer}")


def test_a_lucky_answer_after_wrong_steps_is_correct_but_not_sound() -> None:
    path = " 6+3=2\n#### 3"
    assert is_correct(path, "3") and not is_sound(path, "3")
    assert not is_sound(" #### 3", "3")  # no reasoning to teach
    assert is_sound(" 25% of 20=5\n20-5=15\n15*3=45\n#### 45", "45")


def test_steps_written_the_way_people_write_them_are_checked() -> None:
    steps = arithmetic_steps("$10 x 1.2 = $12, 18 ÷ 3 = 6, 54 − 37 = 17, 16 x .75 = 12, 10/3=3.33")
    assert [(expression, holds) for expression, _, holds in steps] == [
        ("10*1.2", True),
        ("18 / 3", True),
        ("54 - 37", True),
        ("16*.75", True),
        ("10/3", True),
    ]
    assert arithmetic_steps("23 slices x 4 = 92 and 200 GB * 40% = 80") == []  # words cut out


def test_every_synthetic_reference_is_sound() -> None:
    problems = load_dataset("synthetic:domains=all,n=400,seed=1")
    assert all(is_sound(p.reference, p.answer) for p in problems)


@pytest.mark.skipif(not GSM8K_TEST.exists(), reason="GSM8K data not present")
def test_most_gsm8k_references_are_sound() -> None:
    problems = load_dataset(f"gsm8k:{GSM8K_TEST}")
    sound = sum(is_sound(p.reference, p.answer) for p in problems)
    assert sound / len(problems) > 0.8  # 1096 of 1319: the rest skip or garble notation
