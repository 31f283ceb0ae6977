"""Shared fixtures: real Redis (REDIS_URL or embedded), isolated LADA_HOME, run IDs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lada.redis_conn import RedisHandle, connect, shutdown_embedded, start_embedded
from lada.state import StateStore

# Fixture modules owned by each component (zoo, LLM service, allocator, agent).
pytest_plugins = [
    "tests.fixtures_zoo",
    "tests.fixtures_llm",
    "tests.fixtures_allocator",
    "tests.fixtures_agent",
]


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One LADA_HOME per test session (zoo cache, embedded Redis, agent state)."""
    home = Path(os.environ.get("LADA_TEST_HOME") or tmp_path_factory.mktemp("lada-home"))
    os.environ["LADA_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def redis_handle(session_home: Path) -> Iterator[RedisHandle]:
    """The Redis at REDIS_URL (its database flushed once), else an embedded server."""
    if os.environ.get("REDIS_URL"):
        handle = connect(os.environ["REDIS_URL"])
        handle.client.flushdb()
        yield handle
        handle.close()
        return
    handle = start_embedded(session_home / "redis" / "session.rdb")
    os.environ["REDIS_URL"] = handle.url
    yield handle
    shutdown_embedded(handle)


@pytest.fixture
def run_id() -> str:
    return "test-" + uuid.uuid4().hex[:10]


@pytest.fixture
def store(redis_handle: RedisHandle, run_id: str) -> Iterator[StateStore]:
    state = StateStore(redis_handle.client, run_id)
    yield state
    state.wipe()
