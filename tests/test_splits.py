"""Federated splits: disjointness, skew, determinism and the public-pool fingerprint."""

from __future__ import annotations

from collections import Counter

import pytest

from lada.tasks import DOMAINS, DatasetSpecError, SplitSpec, make_split, pool_fingerprint

SPEC = {
    "source": "synthetic:domains=all,n=2400,seed=1",
    "public_size": 600,
    "test_size": 50,
    "skew": 50.0,
    "seed": 3,
    "agents": [
        {"name": "a", "domains": ["purchases"], "private_size": 200},
        {"name": "b", "domains": "rates+percentages", "private_size": 150},
        {"name": "c", "domains": ["comparisons"], "private_size": 100},
    ],
}


def test_sets_are_disjoint_and_sized() -> None:
    split = make_split(SplitSpec.from_dict(SPEC))
    groups = [split.public, *split.private.values(), *split.test.values()]
    ids = [p.id for group in groups for p in group]
    assert len(ids) == len(set(ids))
    assert len(split.public) == 600 and set(split.test) == set(DOMAINS)
    assert [len(v) for v in split.private.values()] == [200, 150, 100]
    assert {p.domain for p in split.public} == set(DOMAINS)


def test_private_sets_skew_to_home_domain() -> None:
    split = make_split(SplitSpec.from_dict(SPEC))
    home = Counter(p.domain for p in split.private["a"])
    assert home["purchases"] / 200 > 0.7
    both = Counter(p.domain for p in split.private["b"])
    assert (both["rates"] + both["percentages"]) / 150 > 0.7


def test_deterministic_and_fingerprint_stable() -> None:
    one, two = make_split(SplitSpec.from_dict(SPEC)), make_split(SplitSpec.from_dict(SPEC))
    assert one.fingerprint == two.fingerprint == pool_fingerprint(list(reversed(one.public)))
    assert one.private == two.private
    other = make_split(SplitSpec.from_dict({**SPEC, "seed": 4}))
    assert other.fingerprint != one.fingerprint


def test_fingerprint_sensitive_to_content() -> None:
    pool = make_split(SplitSpec.from_dict(SPEC)).public
    changed = [pool[0].__class__(**{**pool[0].to_dict(), "answer": "999"}), *pool[1:]]
    assert pool_fingerprint(changed) != pool_fingerprint(pool)


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"public_size": 100000}, "not enough"),
        ({"agents": [{"name": "z", "domains": ["cooking"]}]}, "not in source"),
        ({"colour": 1}, "unknown split field"),
    ],
)
def test_bad_split_specs(patch: dict, needle: str) -> None:
    with pytest.raises(DatasetSpecError, match=needle):
        make_split(SplitSpec.from_dict({**SPEC, **patch}))
