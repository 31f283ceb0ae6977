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


def test_the_caller_of_a_token_is_found_and_checked_in_one_call(store: StateStore) -> None:
    agent_id, token = _register(store)
    other_id, other_token = _register(store, "clinic-b")
    assert store.caller(token).agent_id == agent_id
    assert store.caller(other_token).agent_id == other_id
    for unknown in ("", "wrong"):
        with pytest.raises(Unauthenticated, match="missing or unknown agent token"):
            store.caller(unknown)
    store.set_agent_status(agent_id, AgentStatus.REVOKED)  # takes effect on the next call
    with pytest.raises(Unauthenticated, match="REVOKED"):
        store.caller(token)
    assert store.caller(other_token).agent_id == other_id


def test_heartbeat_reads_the_current_round_and_its_phase(store: StateStore) -> None:
    agent_id, _ = _register(store)
    stamp, current, phase = store.heartbeat_and_round(agent_id)
    assert (current, phase) == (0, None)
    assert store.get_agent(agent_id).last_heartbeat_ms == stamp
    store.open_round(1, deadline_ms=0)
    store.transition(1, Phase.ALLOCATED)
    _, current, phase = store.heartbeat_and_round(agent_id)
    assert (current, phase) == (1, Phase.ALLOCATED)


def test_a_heartbeat_by_token_is_written_only_for_its_own_active_agent(
    store: StateStore,
) -> None:
    agent_id, token = _register(store)
    other_id, _ = _register(store, "clinic-b")
    store.open_round(1, deadline_ms=0)
    record, beat = store.caller_heartbeat(token, agent_id)
    assert record.agent_id == agent_id
    assert beat is not None and beat[1:] == (1, Phase.OPEN)
    assert store.get_agent(agent_id).last_heartbeat_ms == beat[0]
    assert store.caller_heartbeat(token, "")[1] is not None  # '' = the token's own agent
    before = store.snapshot()
    record, beat = store.caller_heartbeat(token, other_id)  # acting for another agent
    assert (record.agent_id, beat) == (agent_id, None)
    for wrong in ("", "wrong"):
        with pytest.raises(Unauthenticated, match="missing or unknown agent token"):
            store.caller_heartbeat(wrong, agent_id)
    assert store.snapshot() == before
    store.set_agent_status(agent_id, AgentStatus.REVOKED)
    revoked = store.snapshot()
    with pytest.raises(Unauthenticated, match="REVOKED"):
        store.caller_heartbeat(token, agent_id)
    assert store.snapshot() == revoked


def test_silent_agents_are_those_without_a_heartbeat_since(store: StateStore) -> None:
    quiet, _ = _register(store)
    beating, _ = _register(store, "clinic-b")
    stamp = store.heartbeat(beating)
    store.redis.hset(store.key("agent", quiet), "last_heartbeat_ms", stamp - 10_000)
    assert store.silent_agents([quiet, beating, "agent-gone"], since_ms=stamp - 5_000) == [
        quiet,
        "agent-gone",
    ]
    assert store.silent_agents([beating], since_ms=stamp) == []
    assert store.silent_agents([beating], since_ms=stamp + 1) == [beating]
    assert store.silent_agents([], since_ms=stamp) == []


def test_a_fetched_allocation_moves_the_agent_and_the_round_to_training_once(
    store: StateStore,
) -> None:
    alice, _ = _register(store)
    bob, _ = _register(store, "clinic-b")
    store.open_round(1, deadline_ms=0)
    store.record_round_allocations(
        1, {alice: [Allocation("s1", 0, "base")], bob: [Allocation("s2", 0, "base")]}, 0
    )
    store.mark_training(1, alice)
    store.mark_training(1, bob)  # the round is TRAINING already: no second event
    assert store.round_phase(1) is Phase.TRAINING
    assert store.agent_round_state(1, alice) is AgentRoundState.TRAINING
    assert store.agent_round_state(1, bob) is AgentRoundState.TRAINING
    phases = [fields["phase"] for _, fields in store.events()]
    assert phases == ["OPEN", "ALLOCATED", "TRAINING"]


def test_several_agents_stats_are_read_at_once(store: StateStore) -> None:
    alice, _ = _register(store)
    bob, _ = _register(store, "clinic-b")
    store.open_round(1, deadline_ms=0)
    store.record_allocations(1, {alice: [Allocation("s1", 0, "base")], bob: []})
    store.apply_report(1, alice, {"s1": b"a"})
    assert store.get_stats_many(1, [alice, bob]) == {alice: {"s1": b"a"}, bob: {}}
    assert store.get_stats_many(1, []) == {}
    assert [a.agent_id for a in store.list_agents()] == [alice, bob]


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


def test_each_fold_keeps_its_rounds_learners_and_a_refold_changes_nothing(
    store: StateStore,
) -> None:
    first = {"agent-a": {"reward_sum": [0.5], "pulls": [1], "band": [0.25, 0.85]}}
    second = {"agent-a": {"reward_sum": [0.9], "pulls": [2], "band": [0.3, 0.9]}}
    assert store.fold_round(1, first, {}, {})
    assert store.fold_round(2, second, {}, {})
    assert not store.fold_round(2, first, {}, {})
    assert store.round_learners(1) == first
    assert store.round_learners(2) == second
    assert store.learners() == second
    assert store.round_learners(3) == {}


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
