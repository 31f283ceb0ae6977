"""kill -9 of the allocator in the middle of a round: the restarted process is in the same
round, has every statistic applied before the crash, and never re-allocates a sample."""

from __future__ import annotations

from typing import Any

from lada.state import Phase
from tests.fixtures_allocator import (
    play_round,
    register_agents,
    synthetic_stats,
    wait_for,
    wait_phase,
)


def _allocated_events(deployment: Any, round_number: int) -> int:
    return sum(
        1
        for _, fields in deployment.store.events()
        if fields["round"] == str(round_number) and fields["phase"] == "ALLOCATED"
    )


def test_kill_nine_mid_round_then_restart_resumes_the_same_round(
    allocator_deployment: Any, test_pool_fingerprint: str
) -> None:
    deployment = allocator_deployment(rounds=2)
    first = deployment.replicas[0]
    agents = register_agents(first.address, test_pool_fingerprint, 3, capacity=12)
    store = deployment.store
    with deployment.operator() as operator:
        wait_phase(operator, 1, "ALLOCATED")
    before = {a.agent_id: list(a.get_allocation(1).samples) for a in agents}
    for agent in agents[:2]:
        agent.report_stats(1, synthetic_stats(before[agent.agent_id], lambda c: 0.5))
    stats_before = {a.agent_id: store.get_stats(1, a.agent_id) for a in agents}
    allocations_in_redis = {a.agent_id: store.get_allocation(1, a.agent_id) for a in agents}

    first.service.kill()
    assert first.service.proc.returncode == -9
    deployment.start("allocator-restarted", port=first.port)

    with deployment.operator(1) as operator:
        status = operator.status(0)
        assert (status["round"], status["phase"]) == (1, "TRAINING")
        states = {a["agent_id"]: a["state"] for a in status["agents"]}
        assert [states[a.agent_id] for a in agents] == ["REPORTED", "REPORTED", "TRAINING"]
        after = {a.agent_id: list(a.get_allocation(1).samples) for a in agents}
        assert after == before
        assert {a.agent_id: store.get_stats(1, a.agent_id) for a in agents} == stats_before
        replay = agents[0].report_stats(1, synthetic_stats(before[agents[0].agent_id]))
        assert (replay.accepted, replay.duplicates) == (0, 12)

        last = agents[2]
        assert last.report_stats(1, synthetic_stats(before[last.agent_id])).accepted == 12
        play_round(agents, operator, 2)
        wait_phase(operator, 2, "CLOSED")
    assert {a.agent_id: store.get_allocation(1, a.agent_id) for a in agents} == (
        allocations_in_redis
    )
    assert _allocated_events(deployment, 1) == 1
    assert store.round_phase(1) is Phase.CLOSED
    wait_for(store.run_finished, what="run finished")


def test_agents_registered_before_a_crash_take_part_after_the_restart(
    allocator_deployment: Any, test_pool_fingerprint: str
) -> None:
    deployment = allocator_deployment(rounds=1, min_agents=4)
    first = deployment.replicas[0]
    agents = register_agents(first.address, test_pool_fingerprint, 3, capacity=6)
    first.service.kill()
    deployment.start("allocator-restarted", port=first.port)
    late = register_agents(first.address, test_pool_fingerprint, 1, capacity=6, prefix="late")
    with deployment.operator(1) as operator:
        status = wait_phase(operator, 1, "ALLOCATED")
    assert len(status["agents"]) == 4
    samples = [len(a.get_allocation(1).samples) for a in [*agents, *late]]
    assert samples == [6, 6, 6, 6]
    assert _allocated_events(deployment, 1) == 1
