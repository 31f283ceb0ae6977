"""Two allocator replicas on one Redis serving agents at the same time: each round is
dispatched once, every report lands whichever replica took it, and the run survives the
loss of a replica."""

from __future__ import annotations

import threading
from typing import Any

from allocator.client import AgentClient
from tests.fixtures_allocator import register_agents, synthetic_stats, wait_for, wait_phase

CAPACITY = 16


def _phase_events(deployment: Any) -> list[tuple[str, str]]:
    """(round, phase) of every phase change; the run's `finished` marker is left out."""
    return [(f["round"], f["phase"]) for _, f in deployment.store.events() if "finished" not in f]


def _report_concurrently(agents: list[AgentClient], round_number: int) -> list[Any]:
    """Every agent fetches and reports at the same moment, through its own replica."""
    replies: list[Any] = []
    barrier = threading.Barrier(len(agents))

    def work(agent: AgentClient) -> None:
        samples = agent.get_allocation(round_number).samples
        barrier.wait()
        replies.append(agent.report_stats(round_number, synthetic_stats(samples, lambda c: 0.5)))

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return replies


def test_two_replicas_dispatch_each_round_once_and_lose_no_report(
    allocator_deployment: Any, test_pool_fingerprint: str
) -> None:
    deployment = allocator_deployment(rounds=3, min_agents=4)
    deployment.start("allocator-b")
    addresses = [r.address for r in deployment.replicas]
    agents = [
        *register_agents(addresses[0], test_pool_fingerprint, 2, CAPACITY, prefix="via-a"),
        *register_agents(addresses[1], test_pool_fingerprint, 2, CAPACITY, prefix="via-b"),
    ]
    store = deployment.store
    with deployment.operator(1) as operator:
        for r in (1, 2):
            wait_phase(operator, r, "ALLOCATED")
            via_a = AgentClient(addresses[0])
            via_b = AgentClient(addresses[1])
            for agent in agents:
                via_a.use_identity(agent.agent_id, agent.token)
                via_b.use_identity(agent.agent_id, agent.token)
                assert via_a.get_allocation(r).samples == via_b.get_allocation(r).samples
            replies = _report_concurrently(agents, r)
            assert sorted((x.accepted, x.duplicates) for x in replies) == [(CAPACITY, 0)] * 4
            wait_phase(operator, r, "CLOSED")
            assert all(len(store.get_stats(r, a.agent_id)) == CAPACITY for a in agents)

        deployment.replicas[0].service.kill()
        survivors = [AgentClient(addresses[1]) for _ in agents]
        for client, agent in zip(survivors, agents, strict=True):
            client.use_identity(agent.agent_id, agent.token)
        wait_phase(operator, 3, "ALLOCATED", timeout=60)
        _report_concurrently(survivors, 3)
        wait_phase(operator, 3, "CLOSED", timeout=60)
    wait_for(store.run_finished, what="run finished")
    events = _phase_events(deployment)
    for r in ("1", "2", "3"):
        assert [p for rr, p in events if rr == r] == [
            "OPEN",
            "ALLOCATED",
            "TRAINING",
            "REPORTED",
            "CLOSED",
        ]
    assert sum("finished" in f for _, f in store.events()) == 1
    pulls = {a.agent_id: sum(store.learners()[a.agent_id]["pulls"]) for a in agents}
    assert pulls == {a.agent_id: 3 * CAPACITY for a in agents}
