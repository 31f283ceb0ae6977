"""Pytest fixtures for the zoo tests (registered in conftest.py via pytest_plugins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lada.zoo import ZooManifest, build_zoo


def micro_zoo_manifest(root: Path) -> ZooManifest:
    """Build (or reuse, cached by content hash) the micro zoo under `root`/zoo."""
    return build_zoo("micro", root=Path(root) / "zoo", progress=False)


@pytest.fixture(scope="session")
def micro_zoo(session_home: Path) -> ZooManifest:
    """The micro zoo, built once per session (reused across runs with LADA_TEST_HOME)."""
    return micro_zoo_manifest(session_home)
