"""The Redis state store against a real Redis: registry, round transitions, reports."""

from __future__ import annotations

import logging
import secrets
import threading
from pathlib import Path

import psutil
import pytest

from lada.redis_conn import RedisUnavailable, connect, shutdown_embedded, start_embedded
from lada.state import (
    AgentRecord,
    AgentRoundState,
    AgentStatus,
    Allocation,
    AlreadyExists,
    Conflict,
    PermissionDenied,
    Phase,
    StateStore,
    Unauthenticated,
)


def _register(store: StateStore, name: str = "clinic-a") -> tuple[str, str]:
    """Register under open enrollment with a fresh secret (a distinct organisation)."""
    enrollment = store.register_agent(
        AgentRecord(agent_id="", name=name, capacity=8, domain_tags=["rates"]),
        secrets.token_urlsafe(24),
        open_enrollment=True,
    )
    return enrollment.record.agent_id, enrollment.token


def test_every_key_carries_the_run_prefix(store: StateStore) -> None:
    store.init_run(policy="lada", total_rounds=3, pool_fingerprint="f" * 64, pool_size=10)
    _register(store)
    store.open_round(1, deadline_ms=0)
    assert store.all_keys()
    assert all(key.startswith(f"lada:{store.run_id}:") for key in store.all_keys())


def test_token_is_stored_only_as_hash(store: StateStore) -> None:
    agent_id, token = _register(store)
    stored = store.redis.hgetall(store.key("agent", agent_id))
    assert token.encode() not in b"".join(stored.values())
    assert store.authenticate(agent_id, token).name == "clinic-a"


@pytest.mark.parametrize("token", ["", "wrong"])
def test_wrong_or_missing_token_is_unauthenticated(store: StateStore, token: str) -> None:
    agent_id, _ = _register(store)
    with pytest.raises(Unauthenticated):
        store.authenticate(agent_id, token)


def test_revoked_agent_cannot_authenticate(store: StateStore) -> None:
    agent_id, token = _register(store)
    store.set_agent_status(agent_id, AgentStatus.REVOKED)
    with pytest.raises(Unauthenticated, match="REVOKED"):
        store.authenticate(agent_id, token)


def test_duplicate_agent_name_is_refused(store: StateStore) -> None:
    _register(store)
    with pytest.raises(AlreadyExists, match="name"):
        _register(store)


def test_run_refuses_a_different_pool_fingerprint(store: StateStore) -> None:
    store.init_run(policy="lada", total_rounds=3, pool_fingerprint="a" * 64, pool_size=10)
    with pytest.raises(Conflict, match="pool_fingerprint"):
        store.init_run(policy="lada", total_rounds=3, pool_fingerprint="b" * 64, pool_size=10)


def test_round_walks_the_lifecycle_in_order(store: StateStore) -> None:
    assert store.open_round(1, deadline_ms=0)
    for phase in (Phase.ALLOCATED, Phase.TRAINING, Phase.REPORTED, Phase.CLOSED):
        assert store.transition(1, phase)
        assert store.round_phase(1) is phase
    phases = [fields["phase"] for _, fields in store.events()]
    assert phases == ["OPEN", "ALLOCATED", "TRAINING", "REPORTED", "CLOSED"]


def test_illegal_transition_changes_nothing(store: StateStore) -> None:
    store.open_round(1, deadline_ms=0)
    assert not store.transition(1, Phase.CLOSED)
    assert store.round_phase(1) is Phase.OPEN
    assert len(store.events()) == 1


def test_next_round_opens_only_after_the_previous_closed(store: StateStore) -> None:
    store.open_round(1, deadline_ms=0)
    assert not store.open_round(2, deadline_ms=0)
    for phase in (Phase.ALLOCATED, Phase.REPORTED, Phase.CLOSED):
        store.transition(1, phase)
    assert store.open_round(2, deadline_ms=0)
    assert store.current_round() == 2


def test_racing_transitions_have_exactly_one_winner(store: StateStore) -> None:
    store.open_round(1, deadline_ms=0)
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        wins.append(store.transition(1, Phase.ALLOCATED))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 1
    assert len(store.events()) == 2


def _allocate(store: StateStore, agent_id: str, sample_ids: list[str]) -> None:
    store.open_round(1, deadline_ms=0)
    store.record_allocations(1, {agent_id: [Allocation(s, 0, "base") for s in sample_ids]})


def test_allocation_keeps_its_order(store: StateStore) -> None:
    agent_id, _ = _register(store)
    _allocate(store, agent_id, ["s3", "s1", "s2"])
    assert [a.sample_id for a in store.get_allocation(1, agent_id)] == ["s3", "s1", "s2"]
    assert store.agent_round_state(1, agent_id) is AgentRoundState.ALLOCATED


def test_report_is_idempotent_per_sample(store: StateStore) -> None:
    agent_id, _ = _register(store)
    _allocate(store, agent_id, ["s1", "s2"])
    first = store.apply_report(1, agent_id, {"s1": b"a", "s2": b"b"})
    again = store.apply_report(1, agent_id, {"s1": b"changed", "s2": b"b"})
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (again.accepted, again.duplicates) == (0, 2)
    assert store.get_stats(1, agent_id) == {"s1": b"a", "s2": b"b"}


def test_report_with_an_unallocated_sample_writes_nothing(store: StateStore) -> None:
    agent_id, _ = _register(store)
    _allocate(store, agent_id, ["s1"])
    before = store.snapshot()
    with pytest.raises(PermissionDenied, match="s9"):
        store.apply_report(1, agent_id, {"s1": b"a", "s9": b"x"})
    assert store.snapshot() == before


def test_unreachable_redis_error_names_the_url() -> None:
    with pytest.raises(RedisUnavailable, match="redis://127.0.0.1:1/0"):
        connect("redis://127.0.0.1:1/0", socket_timeout=1.0)


def test_embedded_redis_restart_loses_no_state(tmp_path: Path) -> None:
    db_path = tmp_path / "embedded" / "lada.rdb"
    handle = start_embedded(db_path)
    store = StateStore(handle.client, "restart")
    agent_id, token = _register(store)
    _allocate(store, agent_id, ["s1", "s2"])
    store.apply_report(1, agent_id, {"s1": b"a"})
    before = store.snapshot()
    shutdown_embedded(handle)

    restarted = start_embedded(db_path)
    try:
        store_after = StateStore(restarted.client, "restart")
        assert store_after.snapshot() == before
        assert store_after.authenticate(agent_id, token).agent_id == agent_id
    finally:
        shutdown_embedded(restarted)


def test_embedded_redis_stops_cleanly_without_a_fallback_kill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handle = start_embedded(tmp_path / "embedded" / "lada.rdb")
    pid = handle.client.pid  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO):
        shutdown_embedded(handle)
    assert not psutil.pid_exists(pid)
    assert "shutdown failed" not in caplog.text


def test_redis_url_password_is_redacted_in_errors() -> None:
    with pytest.raises(RedisUnavailable) as caught:
        connect("redis://lada:s3cret@127.0.0.1:1/0", socket_timeout=1.0)
    assert "s3cret" not in str(caught.value)
    assert "redis://lada:***@127.0.0.1:1/0" in str(caught.value)


def test_acl_user_in_redis_url_is_used(redis_handle) -> None:
    if redis_handle.embedded:
        pytest.skip("ACL users are exercised on the TCP Redis at REDIS_URL (set in CI)")
    admin = redis_handle.client
    admin.acl_setuser(
        "lada-acl-test", enabled=True, passwords=["+pw-123"], keys=["lada:*"], commands=["+@all"]
    )
    try:
        url = redis_handle.url.replace("redis://", "redis://lada-acl-test:pw-123@", 1)
        handle = connect(url)
        store = StateStore(handle.client, "acl")
        assert store.open_round(1, deadline_ms=0)
        store.wipe()
        with pytest.raises(RedisUnavailable, match="lada-acl-test:\\*\\*\\*@"):
            connect(url.replace("pw-123", "wrong"), socket_timeout=2.0)
    finally:
        admin.acl_deluser("lada-acl-test")
