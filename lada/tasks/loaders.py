"""Dataset specs (`synthetic:...`, `gsm8k:PATH`, `jsonl:PATH`) and real-format loaders.

A spec is `<source>:<args>`. Synthetic args are `key=value` pairs separated by commas;
file sources take a path optionally followed by `,key=value` pairs (`limit`, `domain`).
Loading is all-or-nothing: a bad line raises before anything is returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lada.tasks.generator import ALL_DOMAINS, DOMAINS, MAX_STEPS, MIN_STEPS, generate_problems
from lada.tasks.problem import ANSWER_MARK, Problem, content_id
from lada.tasks.verifier import normalize_answer


class DatasetSpecError(ValueError):
    """A dataset spec names an unknown source or parameter, or a value is invalid."""


class DatasetFormatError(DatasetSpecError):
    """A data file is malformed; the message names the file and line number."""


SYNTHETIC_PARAMS = {
    "domains": "all",
    "n": "1000",
    "seed": "0",
    "steps": f"{MIN_STEPS}-{MAX_STEPS}",
    "scale": "1",
}
FILE_PARAMS = {"limit": "", "domain": ""}
_CALC = re.compile(r"<<[^<>]*>>")


def _parse_params(source: str, parts: list[str], valid: dict[str, str]) -> dict[str, str]:
    params = dict(valid)
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in valid:
            raise DatasetSpecError(
                f"unknown parameter {part.strip()!r} for source {source!r}; "
                f"valid parameters: {', '.join(valid)}"
            )
        params[key] = value.strip()
    return params


def _int(params: dict[str, str], key: str, spec: str) -> int:
    try:
        return int(params[key])
    except ValueError as exc:
        raise DatasetSpecError(f"{spec}: {key} must be an integer, got {params[key]!r}") from exc


def _steps(text: str, spec: str) -> tuple[int, int]:
    try:
        lo, _, hi = text.partition("-")
        return int(lo), int(hi or lo)
    except ValueError as exc:
        raise DatasetSpecError(f"{spec}: steps must be N or LO-HI, got {text!r}") from exc


def _domains(text: str, spec: str) -> tuple[str, ...]:
    """`all` = the public domains; `all+units` adds the client-only one; or named domains."""
    if text == "all":
        return DOMAINS
    names: list[str] = []
    for d in re.split(r"[+|;/]", text):
        for name in DOMAINS if d == "all" else (d,) if d else ():
            if name not in names:
                names.append(name)
    unknown = [d for d in names if d not in ALL_DOMAINS]
    if unknown or not names:
        raise DatasetSpecError(
            f"{spec}: unknown domain(s) {unknown}; valid: all (the public domains) or "
            f"'+'-joined names from all, {', '.join(ALL_DOMAINS)}"
        )
    return tuple(names)


def _load_synthetic(args: str, spec: str) -> list[Problem]:
    parts = [p for p in args.split(",") if p.strip()]
    params = _parse_params("synthetic", parts, SYNTHETIC_PARAMS)
    try:
        return generate_problems(
            n=_int(params, "n", spec),
            seed=_int(params, "seed", spec),
            domains=_domains(params["domains"], spec),
            steps=_steps(params["steps"], spec),
            scale=_int(params, "scale", spec),
        )
    except ValueError as exc:
        if isinstance(exc, DatasetSpecError):
            raise
        raise DatasetSpecError(f"{spec}: {exc}") from exc


def _split_path(args: str, source: str) -> tuple[Path, dict[str, str]]:
    parts = args.split(",")
    path_parts = [parts[0]]
    rest = parts[1:]
    while rest and "=" not in rest[0]:  # a comma inside the path
        path_parts.append(rest.pop(0))
    if not path_parts[0]:
        raise DatasetSpecError(f"{source}: needs a path, e.g. {source}:/data/test.jsonl")
    return Path(",".join(path_parts)).expanduser(), _parse_params(source, rest, FILE_PARAMS)


def reference_from_answer(raw: str) -> tuple[str, str, int]:
    """(reference, normalised answer, steps) from an answer text ending in `#### N`."""
    body, mark, final = _CALC.sub("", raw).rpartition(ANSWER_MARK)
    if not mark:
        answer = normalize_answer(raw)
        return f"{ANSWER_MARK} {answer}", answer, 0
    lines = [line.strip() for line in body.strip().splitlines() if line.strip()]
    answer = normalize_answer(final)
    return "\n".join([*lines, f"{ANSWER_MARK} {answer}"]), answer, len(lines)


def _gsm8k_record(row: dict[str, Any], default_domain: str) -> Problem:
    question, raw = row["question"], row["answer"]
    if not isinstance(question, str) or not isinstance(raw, str) or ANSWER_MARK not in raw:
        raise ValueError("'question' and 'answer' must be strings, answer ending in '#### N'")
    reference, answer, steps = reference_from_answer(raw)
    return Problem(
        id=content_id("gsm8k", question, raw),
        question=question.strip(),
        reference=reference,
        answer=answer,
        domain=default_domain or "gsm8k",
        difficulty=steps,
    )


def _jsonl_record(row: dict[str, Any], default_domain: str) -> Problem:
    question, raw = row["question"], row["answer"]
    if not isinstance(question, str) or not isinstance(raw, str | int | float):
        raise ValueError("'question' must be a string and 'answer' a string or number")
    reference, answer, steps = reference_from_answer(str(raw))
    if isinstance(row.get("reference"), str):
        reference, _, steps = reference_from_answer(row["reference"])
    pid = (
        str(row["id"])
        if row.get("id") not in (None, "")
        else content_id("jsonl", question, str(raw))
    )
    return Problem(
        id=pid,
        question=question.strip(),
        reference=reference,
        answer=answer,
        domain=str(row.get("domain") or default_domain or "default"),
        difficulty=int(row.get("difficulty", steps)),
    )


def read_jsonl(
    path: Path, parse: Callable[[dict[str, Any], str], Problem], default_domain: str = ""
) -> list[Problem]:
    """Parse every line; any malformed line raises DatasetFormatError('file:line: why')."""
    if not path.is_file():
        raise DatasetSpecError(f"data file not found: {path}")
    problems: list[Problem] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("each line must be a JSON object")
                problem = parse(row, default_domain)
            except KeyError as exc:
                raise DatasetFormatError(f"{path}:{number}: missing field {exc}") from exc
            except (ValueError, TypeError) as exc:
                raise DatasetFormatError(f"{path}:{number}: {exc}") from exc
            if problem.id not in seen:  # identical duplicates share an ID: keep the first
                seen.add(problem.id)
                problems.append(problem)
    return problems


def _load_file(source: str, args: str, spec: str) -> list[Problem]:
    path, params = _split_path(args, source)
    parse = _gsm8k_record if source == "gsm8k" else _jsonl_record
    problems = read_jsonl(path, parse, params["domain"])
    if params["limit"]:
        problems = problems[: _int(params, "limit", spec)]
    return problems


def load_dataset(spec: str) -> list[Problem]:
    """Problems for a spec, e.g. `synthetic:domains=all,n=5000,seed=1` or `gsm8k:PATH`."""
    source, sep, args = spec.strip().partition(":")
    if not sep:
        raise DatasetSpecError(
            f"dataset spec {spec!r} must look like <source>:<args>; "
            f"valid sources: {', '.join(SOURCES)}"
        )
    if source not in SOURCES:
        raise DatasetSpecError(
            f"unknown dataset source {source!r} in {spec!r}; valid sources: {', '.join(SOURCES)}"
        )
    if source == "synthetic":
        return _load_synthetic(args, spec)
    return _load_file(source, args, spec)


SOURCES = ("synthetic", "gsm8k", "jsonl")
