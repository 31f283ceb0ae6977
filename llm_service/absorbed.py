"""What each version absorbed, kept beside its adapter as `contributions.jsonl`.

A rebased version trains a fresh adapter on everything its chain absorbed, so every version
records that cumulative set: its child, or a restarted service, rebuilds from the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from llm_service.types import Contribution

CONTRIBUTIONS_FILE = "contributions.jsonl"


def cumulative(parent: Sequence[Contribution], new: Sequence[Contribution]) -> list[Contribution]:
    """Distinct (sample_id, path) pairs, newest first; agent IDs are not kept."""
    pairs = dict.fromkeys((c.sample_id, c.path) for c in [*new, *parent])
    return [Contribution(sample_id, path) for sample_id, path in pairs]


def write_contributions(adapter_dir: Path, contributions: Sequence[Contribution]) -> None:
    """One {"sample_id", "path"} object per line, in the given order."""
    lines = [json.dumps({"sample_id": c.sample_id, "path": c.path}) + "\n" for c in contributions]
    (adapter_dir / CONTRIBUTIONS_FILE).write_text("".join(lines))


def read_contributions(adapter_dir: Path) -> list[Contribution]:
    """The contributions `write_contributions` saved (FileNotFoundError when none were)."""
    text = (adapter_dir / CONTRIBUTIONS_FILE).read_text()
    items = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [Contribution(item["sample_id"], item["path"]) for item in items]
