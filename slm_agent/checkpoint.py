"""The agent's state directory: identity, progress and per-round checkpoints, crash-safe.

Every write goes to a temporary path first and is renamed into place, so a kill -9 at any
moment leaves either the old state or the new one, never half of either.

Layout of `state_dir`:
  enrollment.json          name and enrollment secret (mode 0600), written before the
                           agent registers, so a crash mid-registration resumes the same agent
  identity.json            agent ID, token (mode 0600), name, first round, allocator
  progress.json            last trained / reported / contributed round, last accuracy
  checkpoints/round-<r>/   weights after round r, outcome.json (stats to report)
  audit.jsonl              every message that left the agent (slm_agent.audit)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slm_agent.rounds import RoundOutcome

CHECKPOINTS = "checkpoints"
OUTCOME_FILE = "outcome.json"
KEEP_CHECKPOINTS = 2


@dataclass
class Identity:
    """Who the agent is to the allocator; the token is a secret and stays on disk only."""

    agent_id: str
    token: str
    name: str
    first_round: int
    allocator: str
    pool_fingerprint: str


@dataclass
class Progress:
    """How far the agent got; rounds are never reported twice because of this record."""

    last_trained_round: int = 0
    last_reported_round: int = 0
    last_contributed_round: int = 0
    last_accuracy: float = 0.0
    skipped_rounds: list[int] | None = None

    def skipped(self) -> list[int]:
        return list(self.skipped_rounds or [])


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary sibling, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class CheckpointStore:
    """Reads and writes one agent's state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def audit_path(self) -> Path:
        return self.root / "audit.jsonl"

    # ---- identity ------------------------------------------------------------------
    def load_identity(self) -> Identity | None:
        path = self.root / "identity.json"
        return Identity(**json.loads(path.read_text())) if path.is_file() else None

    def save_identity(self, identity: Identity) -> None:
        write_atomic(self.root / "identity.json", _dump(asdict(identity)), mode=0o600)

    # ---- enrollment ----------------------------------------------------------------
    def load_enrollment(self, name: str) -> str:
        """The enrollment secret this agent registered (or was about to) with, if any."""
        path = self.root / "enrollment.json"
        if not path.is_file():
            return ""
        saved = json.loads(path.read_text())
        return str(saved["secret"]) if saved.get("name") == name else ""

    def save_enrollment(self, name: str, secret: str) -> None:
        write_atomic(
            self.root / "enrollment.json", _dump({"name": name, "secret": secret}), mode=0o600
        )

    # ---- progress ------------------------------------------------------------------
    def load_progress(self) -> Progress:
        path = self.root / "progress.json"
        return Progress(**json.loads(path.read_text())) if path.is_file() else Progress()

    def save_progress(self, progress: Progress) -> None:
        write_atomic(self.root / "progress.json", _dump(asdict(progress)))

    # ---- per-round checkpoints -----------------------------------------------------
    def round_dir(self, round_number: int) -> Path:
        return self.root / CHECKPOINTS / f"round-{round_number}"

    def save_round(self, outcome: RoundOutcome, write_weights: Callable[[Path], None]) -> Path:
        """Weights and the round's outcome into a temp dir, renamed into place at the end."""
        final = self.round_dir(outcome.round)
        tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_weights(tmp)
        write_atomic(tmp / OUTCOME_FILE, _dump(outcome.to_json()))
        _fsync_dir(tmp)
        if final.exists():  # a re-run of the same round after a crash: replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        self._prune(keep_from=outcome.round)
        return final

    def latest_round(self) -> int:
        """The newest complete checkpoint's round (0: none)."""
        rounds = [r for r, path in self._round_dirs() if (path / OUTCOME_FILE).is_file()]
        return max(rounds, default=0)

    def load_outcome(self, round_number: int) -> RoundOutcome:
        data = json.loads((self.round_dir(round_number) / OUTCOME_FILE).read_text())
        return RoundOutcome.from_json(data)

    def clean_temporaries(self) -> None:
        """Remove half-written checkpoints a crash left behind."""
        base = self.root / CHECKPOINTS
        if base.is_dir():
            for leftover in base.glob(".round-*.tmp*"):
                shutil.rmtree(leftover, ignore_errors=True)

    def _round_dirs(self) -> list[tuple[int, Path]]:
        base = self.root / CHECKPOINTS
        if not base.is_dir():
            return []
        found = []
        for path in base.iterdir():
            name = path.name
            if name.startswith("round-") and name[6:].isdigit():
                found.append((int(name[6:]), path))
        return sorted(found)

    def _prune(self, keep_from: int) -> None:
        """Keep the newest KEEP_CHECKPOINTS rounds up to `keep_from`."""
        rounds = [r for r, _ in self._round_dirs() if r <= keep_from]
        for old in rounds[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(self.round_dir(old), ignore_errors=True)


def _dump(data: Any) -> bytes:
    return json.dumps(data, indent=2, allow_nan=True).encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
