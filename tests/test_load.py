"""The load run in its short CI form: simulated agents against a real allocator process.

The full version (200 and 1,000 agents x 10 rounds) is `lada bench load`; here 8 agents in 2
generator processes run 2 rounds, checking what matters at any scale: no RPC fails and every
statistic sent is in Redis exactly once.
"""

from __future__ import annotations

import os
from dataclasses import replace

from lada.bench.load import run_load, scenarios


def test_every_statistic_sent_is_stored_exactly_once(redis_handle) -> None:
    (plan,) = scenarios(quick=True)
    summary = run_load(plan, redis_url=os.environ["REDIS_URL"])
    assert summary["errors"] == {}
    assert summary["failed_agents"] == []
    assert summary["exactly_once"] == {"missing": 0, "extra": 0, "altered": 0}
    assert summary["duplicates_reported_by_server"] == 0
    assert summary["agents_registered"] == plan.agents
    assert summary["agent_rounds_reported"] == plan.agents * plan.rounds
    assert summary["stats_sent"] == plan.agents * plan.rounds * plan.capacity
    rpcs = summary["rpcs"]
    assert rpcs["RegisterAgent"]["calls"] == plan.agents
    assert rpcs["GetAllocation"]["calls"] == rpcs["ReportStats"]["calls"] == 16
    assert rpcs["Heartbeat"]["calls"] > 0
    assert summary["allocator"]["redis_parser"] == "hiredis"  # a pinned dependency
    workers = summary["cpu"]["generator_workers"]
    assert len(workers) == plan.workers
    assert all(w["busy_mean"] > 0 for w in workers)


def test_two_allocator_processes_sharing_one_port_store_every_statistic_once(
    redis_handle,
) -> None:
    (quick,) = scenarios(quick=True)
    plan = replace(quick, allocator_processes=2)  # server.share_port: both bind the port
    summary = run_load(plan, redis_url=os.environ["REDIS_URL"])
    assert summary["errors"] == {}
    assert summary["exactly_once"] == {"missing": 0, "extra": 0, "altered": 0}
    assert summary["agent_rounds_reported"] == plan.agents * plan.rounds


def test_rpc_processes_beside_a_driver_process_run_every_round_and_store_every_statistic_once(
    redis_handle,
) -> None:
    (quick,) = scenarios(quick=True)
    plan = replace(quick, driver_process=True)  # role rpc serves, role driver drives
    summary = run_load(plan, redis_url=os.environ["REDIS_URL"])
    assert summary["errors"] == {}
    assert summary["exactly_once"] == {"missing": 0, "extra": 0, "altered": 0}
    assert summary["agent_rounds_reported"] == plan.agents * plan.rounds


def test_agents_watching_rounds_on_their_own_process_work_every_round_exactly_once(
    redis_handle,
) -> None:
    (quick,) = scenarios(quick=True)
    plan = replace(quick, driver_process=True, watch_process=True)  # rpc + watch + driver
    summary = run_load(plan, redis_url=os.environ["REDIS_URL"])
    assert summary["allocator"]["watch_rounds"] == "in its own process"
    assert summary["errors"] == {}
    assert summary["exactly_once"] == {"missing": 0, "extra": 0, "altered": 0}
    assert summary["agent_rounds_reported"] == plan.agents * plan.rounds
    assert summary["rpcs"]["WatchRounds (event lag)"]["calls"] >= plan.agents * plan.rounds
