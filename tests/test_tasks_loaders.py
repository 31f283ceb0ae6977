"""Dataset specs and JSONL loaders: formats, errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lada.tasks import DatasetFormatError, DatasetSpecError, load_dataset


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_gsm8k_format_strips_calculator_annotations(tmp_path: Path) -> None:
    row = {"question": "Q1?", "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 1,018"}
    path = _write(tmp_path / "g.jsonl", [json.dumps(row)])
    [p] = load_dataset(f"gsm8k:{path}")
    assert p.reference == "Janet sells 16 - 3 - 4 = 9 eggs.\n#### 1018"
    assert (p.answer, p.domain, p.difficulty) == ("1018", "gsm8k", 1)
    assert p.id.startswith("gsm8k-")


def test_generic_jsonl_with_optional_fields(tmp_path: Path) -> None:
    rows = [
        json.dumps({"question": "a?", "answer": "2+2=4\n#### 4", "id": "x1", "domain": "m"}),
        json.dumps({"question": "b?", "answer": 7}),
    ]
    problems = load_dataset(f"jsonl:{_write(tmp_path / 'j.jsonl', rows)},domain=misc")
    assert [(p.id, p.domain, p.answer, p.difficulty) for p in problems][0] == ("x1", "m", "4", 1)
    assert problems[1].domain == "misc" and problems[1].reference == "#### 7"
    assert problems[1].id.startswith("jsonl-")


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        json.dumps({"question": "q"}),
        json.dumps([1, 2]),
        json.dumps({"question": 3, "answer": "4"}),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str) -> None:
    good = json.dumps({"question": "q?", "answer": "#### 1"})
    path = _write(tmp_path / "bad.jsonl", [good, good.replace("q?", "r?"), bad])
    with pytest.raises(DatasetFormatError, match=rf"{path}:3:"):
        load_dataset(f"jsonl:{path}")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("hub:foo", "valid sources: synthetic, gsm8k, jsonl"),
        ("nocolon", "valid sources"),
        ("synthetic:size=3", "valid parameters: domains, n, seed, steps, scale"),
        ("synthetic:domains=cooking", "valid: all"),
        ("synthetic:steps=0-9", "steps"),
        ("gsm8k:/nonexistent/x.jsonl", "not found"),
        ("jsonl:/tmp/a.jsonl,bogus=1", "valid parameters: limit, domain"),
    ],
)
def test_bad_specs_explain_valid_choices(spec: str, needle: str) -> None:
    with pytest.raises(DatasetSpecError, match=needle):
        load_dataset(spec)


def test_synthetic_spec_params() -> None:
    problems = load_dataset("synthetic:domains=rates+comparisons,n=20,seed=2,steps=3,scale=2")
    assert {p.domain for p in problems} == {"rates", "comparisons"}
    assert {p.difficulty for p in problems} == {3}
