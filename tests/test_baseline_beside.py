"""`lada up` simulates its baseline in a child process beside the live federation: the
child exists only while the caller waits for it, and none is started without a baseline."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psutil
import pytest

from lada.cluster import DataFiles, baseline_beside
from lada.config import ClusterConfig, load_config
from tests.procs import REPO_ROOT

CONFIG = REPO_ROOT / "tests" / "data" / "up-micro.yaml"
NO_DATA = DataFiles(public="", private={}, test={}, fingerprint="")


def spawned_workers() -> set[int]:
    """Live processes started by multiprocessing's spawn (not its resource tracker, which
    lives as long as this process does)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.is_running() and "spawn_main" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def test_leaving_early_stops_the_baseline_child(tmp_path: Path) -> None:
    config = load_config(ClusterConfig, str(CONFIG), section="cluster")
    with pytest.raises(KeyboardInterrupt), baseline_beside(config, {}, NO_DATA, tmp_path):
        assert len(spawned_workers()) == 1
        raise KeyboardInterrupt
    assert spawned_workers() == set()


def test_without_a_baseline_policy_no_child_starts_and_the_result_is_none(tmp_path: Path) -> None:
    config = dataclasses.replace(
        load_config(ClusterConfig, str(CONFIG), section="cluster"), baseline_policy=""
    )
    with baseline_beside(config, {}, NO_DATA, tmp_path) as result:
        assert spawned_workers() == set()
        assert result() is None
