"""Synthetic generator: determinism, domains, difficulty and self-consistent references."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from lada.tasks import (
    ALL_DOMAINS,
    CLIENT_DOMAINS,
    DOMAINS,
    format_prompt,
    generate_problems,
    is_correct,
    load_dataset,
)


def test_same_seed_same_problems_and_ids() -> None:
    a = load_dataset("synthetic:domains=all,n=300,seed=5")
    b = load_dataset("synthetic:domains=all,n=300,seed=5")
    assert a == b
    assert a[0].id.startswith("syn-") and len(a[0].id) == 16
    assert load_dataset("synthetic:domains=all,n=300,seed=6") != a


def test_prefix_property_and_distinct_ids() -> None:
    small = generate_problems(50, seed=3)
    large = generate_problems(400, seed=3)
    assert large[:50] == small
    assert len({p.id for p in large}) == 400


def test_domains_and_difficulties_covered() -> None:
    problems = generate_problems(960, seed=0)
    assert {p.domain for p in problems} == set(DOMAINS) and len(DOMAINS) >= 4
    assert {p.difficulty for p in problems} == set(range(1, 7))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), lo=st.integers(1, 6), scale=st.integers(1, 3))
def test_reference_is_consistent(seed: int, lo: int, scale: int) -> None:
    for p in generate_problems(10, seed=seed, domains=ALL_DOMAINS, steps=(lo, lo), scale=scale):
        lines = p.reference.splitlines()
        assert p.difficulty == lo == len(lines) - 1
        assert lines[-1] == f"#### {p.answer}" and is_correct(p.reference, p.answer)
        for line in lines[:-1]:  # every step's arithmetic is right
            expr, value = line.rsplit("=", 1)
            pct = re.fullmatch(r"(\d+)% of (\d+)", expr)
            got = int(pct[1]) * int(pct[2]) / 100 if pct else eval(expr)  # noqa: S307
            assert got == int(value) and int(value) >= 0
        assert format_prompt(p.question).startswith("Q: ")


def test_client_only_domain_is_outside_all() -> None:
    assert set(ALL_DOMAINS) == set(DOMAINS) | set(CLIENT_DOMAINS) and "units" in CLIENT_DOMAINS
    everything = load_dataset("synthetic:domains=all+units,n=100,seed=2")
    assert {p.domain for p in everything} == set(ALL_DOMAINS)
    assert load_dataset("synthetic:domains=all,n=100,seed=2") == generate_problems(100, seed=2)
    units = generate_problems(60, seed=4, domains=("units",))
    assert {p.difficulty for p in units} == set(range(1, 7))
    for p in units:  # the conversion factor is knowledge, not text
        first = p.reference.splitlines()[0]
        factor = first.split("=")[0].split("*")[1]
        assert factor in ("12", "2", "7") and f"*{factor}" not in p.question


def test_comparisons_end_by_combining_the_last_person_with_the_first() -> None:
    """The final line adds or subtracts the first person's count (the question's first
    number) and the chain's end: no lookup of an unnamed middle value (docs/zoo.md)."""
    problems = generate_problems(120, seed=9, domains=("comparisons",), steps=(2, 6))
    for p in problems:
        lines = [line.split("=") for line in p.reference.splitlines()[:-1]]
        first = re.search(r"\d+", p.question)[0]
        chain_end = lines[-2][1]
        operands = re.split(r"[+-]", lines[-1][0])
        assert sorted(operands) == sorted([first, chain_end]), p.question
    assert {p.difficulty for p in problems} == set(range(2, 7))
