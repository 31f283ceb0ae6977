"""Rounds over real gRPC against a real `lada allocator serve` process and real Redis: three
agents, three rounds of synthetic statistics, allocations that follow the rewards."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from allocator.client import AgentClient, phase_name
from lada.config import AllocatorSettings
from lada.redis_conn import RedisHandle
from lada.v1 import allocator_pb2
from tests.fixtures_allocator import (
    OPERATOR_TOKEN,
    TEST_CLUSTERS,
    allocator_run,
    play_round,
    register_agents,
    synthetic_stats,
    wait_for,
    wait_phase,
)
from tests.procs import LADA, REPO_ROOT

REWARDED_CLUSTER = 2
CAPACITY = 20


@dataclass
class ThreeRounds:
    """What one three-round run produced: allocations per round, events, final views."""

    address: str
    agent_ids: list[str]
    allocations: list[dict[str, list[allocator_pb2.AllocatedSample]]] = field(default_factory=list)
    events: list[allocator_pb2.RoundEvent] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    gaps: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def three_rounds(
    redis_handle: RedisHandle,
    tmp_path_factory: pytest.TempPathFactory,
    test_pool_fingerprint: str,
) -> Iterator[ThreeRounds]:
    """Agent 0 gains 1.0 nlp on every sample of one cluster and nothing elsewhere; the other
    two agents gain nothing anywhere."""
    run_id = "test-" + uuid.uuid4().hex[:10]
    with allocator_run(redis_handle, run_id, tmp_path_factory.mktemp("rounds")) as deployment:
        address = deployment.replicas[0].address
        clients = register_agents(address, test_pool_fingerprint, 3, CAPACITY)
        result = ThreeRounds(address, [c.agent_id for c in clients])
        watcher = threading.Thread(
            target=lambda: result.events.extend(clients[0].watch_rounds(1, timeout_s=120))
        )
        watcher.start()
        rewards = {clients[0].agent_id: lambda c: 1.0 if c == REWARDED_CLUSTER else 0.0}
        with deployment.operator() as operator:
            for r in (1, 2, 3):
                result.allocations.append(play_round(clients, operator, r, rewards))
            watcher.join(timeout=60)
            result.status = operator.status(3)
            result.gaps = operator.gaps()
        yield result


def _clusters(samples: list[allocator_pb2.AllocatedSample]) -> Counter[int]:
    return Counter(s.cluster for s in samples)


def test_round_one_spreads_every_agent_evenly_over_clusters(three_rounds: ThreeRounds) -> None:
    for agent_id in three_rounds.agent_ids:
        counts = _clusters(three_rounds.allocations[0][agent_id])
        assert counts == {c: CAPACITY // TEST_CLUSTERS for c in range(TEST_CLUSTERS)}


def test_an_agent_rewarded_on_one_cluster_gets_more_of_it(three_rounds: ThreeRounds) -> None:
    rewarded = three_rounds.agent_ids[0]
    per_round = [_clusters(a[rewarded])[REWARDED_CLUSTER] for a in three_rounds.allocations]
    assert per_round[0] == 5
    assert per_round[1] == CAPACITY and per_round[2] == CAPACITY


def test_agents_without_reward_keep_an_even_split(three_rounds: ThreeRounds) -> None:
    for agent_id in three_rounds.agent_ids[1:]:
        for allocation in three_rounds.allocations:
            assert set(_clusters(allocation[agent_id]).values()) == {CAPACITY // TEST_CLUSTERS}


def test_no_agent_gets_a_sample_twice_within_a_round(three_rounds: ThreeRounds) -> None:
    for allocation in three_rounds.allocations:
        for samples in allocation.values():
            ids = [s.sample_id for s in samples]
            assert len(ids) == len(set(ids)) == CAPACITY


def test_arms_count_pulls_and_mean_reward(three_rounds: ThreeRounds) -> None:
    rewarded = next(g for g in three_rounds.gaps if g["agent_id"] == three_rounds.agent_ids[0])
    arms = {a["cluster"]: a for a in rewarded["arms"]}
    assert arms[REWARDED_CLUSTER]["pulls"] == 5 + CAPACITY + CAPACITY
    assert arms[REWARDED_CLUSTER]["mean_reward"] == pytest.approx(1.0)
    assert arms[0]["pulls"] == 5 and arms[0]["mean_reward"] == 0.0
    assert rewarded["samples_with_gap"] == len(
        {s.sample_id for a in three_rounds.allocations for s in a[three_rounds.agent_ids[0]]}
    )


def test_watch_streams_every_phase_then_run_finished(three_rounds: ThreeRounds) -> None:
    seen = [(e.round, phase_name(e.phase)) for e in three_rounds.events]
    lifecycle = ["OPEN", "ALLOCATED", "TRAINING", "REPORTED", "CLOSED"]
    assert seen[:-1] == [(r, p) for r in (1, 2, 3) for p in lifecycle]
    assert three_rounds.events[-1].run_finished
    assert all(e.total_rounds == 3 for e in three_rounds.events)


def test_allocated_events_size_the_fetch_window_to_the_participants(
    three_rounds: ThreeRounds,
) -> None:
    per_agent = AllocatorSettings().fetch_window_ms_per_agent  # 8 ms: 3 agents -> 24 ms
    windows = {phase_name(e.phase): e.fetch_window_ms for e in three_rounds.events if e.round == 1}
    assert windows["ALLOCATED"] == round(3 * per_agent) == 24
    assert windows["OPEN"] == windows["TRAINING"] == windows["CLOSED"] == 0


def test_status_shows_every_agent_reported(three_rounds: ThreeRounds) -> None:
    assert three_rounds.status["phase"] == "CLOSED"
    assert [(a["state"], a["allocated"], a["reported"]) for a in three_rounds.status["agents"]] == [
        ("REPORTED", CAPACITY, CAPACITY)
    ] * 3


def test_lada_status_and_allocation_commands_render_tables(three_rounds: ThreeRounds) -> None:
    common = ["--allocator", three_rounds.address, "--operator-token", OPERATOR_TOKEN]
    status = subprocess.run(
        [*LADA, "status", *common], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert "round 3/3  phase CLOSED  policy lada" in status.stdout
    assert status.stdout.count("REPORTED") == 3
    agent = three_rounds.agent_ids[0]
    shown = subprocess.run(
        [*LADA, "allocation", *common, "--agent-id", agent],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"{agent}  state REPORTED  allocated {CAPACITY}" in shown.stdout
    row = next(line.split() for line in shown.stdout.splitlines() if line.startswith("2 "))
    assert row == ["2", "45", "1.0000", row[3], str(CAPACITY)]


# ---- deadlines and late joiners --------------------------------------------------------------
def test_an_agent_missing_the_deadline_is_late_and_rejoins_next_round(
    allocator_deployment: Any, test_pool_fingerprint: str
) -> None:
    deployment = allocator_deployment(min_agents=2, rounds=2, round_deadline_s=3.0)
    address = deployment.replicas[0].address
    punctual, sleepy = register_agents(address, test_pool_fingerprint, 2, capacity=8)
    with deployment.operator() as operator:
        wait_phase(operator, 1, "ALLOCATED")
        punctual.report_stats(1, synthetic_stats(punctual.get_allocation(1).samples))
        status = wait_phase(operator, 1, "CLOSED", timeout=30)
        states = {a["agent_id"]: a["state"] for a in status["agents"]}
        assert states == {punctual.agent_id: "REPORTED", sleepy.agent_id: "LATE"}
        with pytest.raises(grpc.RpcError) as refused:
            sleepy.report_stats(1, synthetic_stats(sleepy.get_allocation(1).samples))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "round 1" in refused.value.details()
        second = wait_phase(operator, 2, "ALLOCATED")
        assert {a["agent_id"] for a in second["agents"]} == {punctual.agent_id, sleepy.agent_id}
    assert len(sleepy.get_allocation(2).samples) == 8


def test_an_agent_joining_mid_run_takes_part_from_the_next_round(
    allocator_deployment: Any, test_pool_fingerprint: str
) -> None:
    deployment = allocator_deployment(min_agents=1, rounds=2)
    address = deployment.replicas[0].address
    (early,) = register_agents(address, test_pool_fingerprint, 1, capacity=8)
    with deployment.operator() as operator:
        wait_phase(operator, 1, "ALLOCATED")
        late = AgentClient(address)
        registration = late.register("joiner", 8, test_pool_fingerprint)
        assert registration.first_round == 2
        with pytest.raises(grpc.RpcError) as absent:
            late.get_allocation(1)
        assert absent.value.code() is grpc.StatusCode.NOT_FOUND
        early.report_stats(1, synthetic_stats(early.get_allocation(1).samples))
        second = wait_phase(operator, 2, "ALLOCATED")
        assert {a["agent_id"] for a in second["agents"]} == {early.agent_id, late.agent_id}
    wait_for(lambda: len(late.get_allocation(2).samples) == 8, what="joiner's allocation")
