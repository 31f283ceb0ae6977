"""Fault injection on real processes (loopback only, each test bounded in time).

- the LLM service is killed while an agent fetches paths, and comes back on the same
  port: the agent backs off, retries, and the round completes uncorrupted;
- the network between an agent and the allocator is slow and drops connections (a small
  local TCP proxy): the agent still finishes every round, every statistic stored once;
- the reply to RegisterAgent is lost after the allocator committed the registration: the
  agent retries with the same invitation and finishes every round as the one agent.

kill -9 of an agent (tests/test_agent_resume.py), of the allocator
(tests/test_allocator_restart.py) and a restart of Redis with append-only persistence
(tests/test_state_store.py) are specified next to the component they exercise.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lada.state import StateStore
from lada.tasks import load_dataset
from lada.zoo import ZooManifest
from tests.fixtures_agent import (
    PRIVATE_RATES,
    private_only,
    start_agent,
    write_private_jsonl,
)
from tests.fixtures_allocator import allocator_run, wait_phase
from tests.fixtures_llm import LLM_POOL, LLMServiceHandle, start_llm_service
from tests.netproxy import TcpProxy
from tests.procs import ServiceProcess, free_port

pytestmark = [pytest.mark.slow]

ROUNDS = 2
CAPACITY = 4
RUN_TIMEOUT_S = 600.0


def private_spec(tmp_path: Path) -> str:
    problems = private_only(load_dataset(PRIVATE_RATES), load_dataset(LLM_POOL))
    return write_private_jsonl(problems, tmp_path / "private.jsonl")


def wait_exit(process: ServiceProcess, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if process.proc.poll() is None:
        process.stop(timeout=10)
        raise AssertionError(f"agent did not finish in {timeout}s:\n{process.log()[-4000:]}")
    return int(process.proc.returncode)


def assert_every_statistic_stored_once(store: StateStore, agent_name: str) -> None:
    agent_id = store.agent_id_by_name(agent_name)
    assert agent_id
    for round_number in range(1, ROUNDS + 1):
        allocated = {a.sample_id for a in store.get_allocation(round_number, agent_id)}
        assert allocated
        assert set(store.get_stats(round_number, agent_id)) == allocated


def test_agent_rides_out_the_llm_service_dying_mid_fetch(
    redis_handle, micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    port = free_port()
    llm = start_llm_service(micro_zoo.llm, tmp_path, "llm-1", "transformers", port=port).process
    with allocator_run(
        redis_handle,
        "fault-llm",
        tmp_path,
        public_pool=LLM_POOL,
        rounds=ROUNDS,
        min_agents=1,
        round_deadline_s=RUN_TIMEOUT_S,
    ) as deployment:
        agent = start_agent(
            tmp_path,
            "fault-llm-agent",
            micro_zoo.slms["slm-rates"],
            deployment.replicas[0].address,
            f"127.0.0.1:{port}",
            private_spec(tmp_path),
            tmp_path / "agent",
            capacity=CAPACITY,
        )
        try:
            wait_phase(deployment.operator(), 1, "TRAINING", timeout=300)
            llm.kill()  # the agent is now fetching (or about to fetch) its paths
            time.sleep(3)
            llm = start_llm_service(
                micro_zoo.llm, tmp_path, "llm-2", "transformers", port=port
            ).process
            code = wait_exit(agent, RUN_TIMEOUT_S)
            log = agent.log()
        finally:
            agent.stop(timeout=10)
            llm.stop()
        assert code == 0, log[-4000:]
        assert_every_statistic_stored_once(deployment.store, "fault-llm-agent")
        assert deployment.operator().status(ROUNDS)["phase"] == "CLOSED"


def test_agent_finishes_through_a_slow_network_that_drops_connections(
    redis_handle, agents_llm: LLMServiceHandle, micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    with allocator_run(
        redis_handle,
        "fault-net",
        tmp_path,
        public_pool=LLM_POOL,
        rounds=ROUNDS,
        min_agents=1,
        round_deadline_s=RUN_TIMEOUT_S,
    ) as deployment:
        proxy = TcpProxy(deployment.replicas[0].port, delay_s=0.05).start()
        agent = start_agent(
            tmp_path,
            "fault-net-agent",
            micro_zoo.slms["slm-rates"],
            proxy.address,
            agents_llm.address,
            private_spec(tmp_path),
            tmp_path / "agent",
            capacity=CAPACITY,
        )
        dropping = threading.Event()

        def drop_connections() -> None:
            for _ in range(6):
                if dropping.wait(4.0):
                    return
                proxy.drop_all()

        dropper = threading.Thread(target=drop_connections, daemon=True)
        dropper.start()
        try:
            code = wait_exit(agent, RUN_TIMEOUT_S)
            log = agent.log()
        finally:
            dropping.set()
            agent.stop(timeout=10)
            proxy.close()
        assert code == 0, log[-4000:]
        assert proxy.bytes_forwarded > 0
        assert_every_statistic_stored_once(deployment.store, "fault-net-agent")


def test_a_lost_registration_reply_leaves_one_agent_that_finishes_every_round(
    redis_handle, agents_llm: LLMServiceHandle, micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    with allocator_run(
        redis_handle,
        "fault-lost-reply",
        tmp_path,
        public_pool=LLM_POOL,
        rounds=ROUNDS,
        min_agents=1,
        round_deadline_s=RUN_TIMEOUT_S,
        open_enrollment=False,
    ) as deployment:
        with deployment.operator() as operator:
            secret = operator.invite("lost-reply-agent").enrollment_secret
        proxy = TcpProxy(deployment.replicas[0].port, drop_first_reply=True).start()
        agent = start_agent(
            tmp_path,
            "lost-reply-agent",
            micro_zoo.slms["slm-rates"],
            proxy.address,
            agents_llm.address,
            private_spec(tmp_path),
            tmp_path / "agent",
            capacity=CAPACITY,
            env={"LADA_AGENT_ENROLLMENT_SECRET": secret},
        )
        try:
            code = wait_exit(agent, RUN_TIMEOUT_S)
            log = agent.log()
        finally:
            agent.stop(timeout=10)
            proxy.close()
        assert code == 0, log[-4000:]
        assert proxy.replies_dropped == 1
        assert '"resumed": true' in log
        (registered,) = deployment.store.list_agents()
        assert registered.name == "lost-reply-agent"
        assert_every_statistic_stored_once(deployment.store, "lost-reply-agent")
