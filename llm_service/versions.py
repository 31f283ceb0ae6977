"""The model-version registry: base plus one LoRA adapter per absorb, persisted as JSON.

A version is only added after its adapter trained and loaded, so a failed absorb never
changes what is served. The file lets a restarted service serve the same versions.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llm_service.types import BASE_VERSION

VERSIONS_FILE = "versions.json"  # in the service's state directory


@dataclass
class VersionInfo:
    """One servable version and how it came to be."""

    version: str
    parent: str = ""
    samples_absorbed: int = 0
    created_unix_ms: int = 0
    final_loss: float = 0.0
    adapter_dir: str = ""
    lora_rank: int = 0
    absorbed_ids: list[str] = field(default_factory=list)
    # own sound paths (base's or the parent's): the gate's known prompts; those of them the
    # adapter trained on beside the contributions (all, or those the gate routes to it)
    samples_replayed: int = 0
    replay_trained: int = 0
    train_steps: int = 0  # optimiser steps the adapter took
    absorb_mode: str = ""  # how the adapter was trained: rebase or continue ("" for base)
    absorb_route: str = ""  # which prompts the adapter answers: all or gate ("" for base)


class VersionRegistry:
    """Ordered versions (oldest first) and the serving pointer, saved to `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._versions: dict[str, VersionInfo] = {}
        self.serving = BASE_VERSION
        if path.exists():
            self._load()
        else:
            self._versions[BASE_VERSION] = VersionInfo(BASE_VERSION, created_unix_ms=now_ms())

    def get(self, version: str) -> VersionInfo | None:
        return self._versions.get(version)

    def all(self) -> list[VersionInfo]:
        return list(self._versions.values())

    def adapters(self) -> list[VersionInfo]:
        """Versions with an adapter, oldest first (for reloading into a fresh backend)."""
        return [v for v in self._versions.values() if v.adapter_dir]

    def next_name(self) -> str:
        return f"v{len(self._versions)}"

    def add_and_serve(self, info: VersionInfo) -> None:
        with self._lock:
            self._versions[info.version] = info
            self.serving = info.version
            self._save()

    def _load(self) -> None:
        data = json.loads(self.path.read_text())
        for item in data["versions"]:
            self._versions[item["version"]] = VersionInfo(**item)
        self.serving = data["serving"]

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"serving": self.serving, "versions": [asdict(v) for v in self.all()]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, self.path)


def now_ms() -> int:
    return int(time.time() * 1000)
