"""Liveness by heartbeat: one agent of three is killed (kill -9) mid-round. The round closes
a few heartbeat intervals later, not at its deadline, with the dead agent LOST; the next
round waits until the agent is back, and the restarted agent works it from its checkpoint."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from allocator.client import AgentClient, OperatorClient
from lada.zoo import ZooManifest
from tests.fixtures_agent import start_agent
from tests.fixtures_allocator import allocator_run, synthetic_stats, wait_for, wait_phase
from tests.fixtures_llm import LLM_POOL, LLMServiceHandle
from tests.netproxy import TcpProxy
from tests.procs import ServiceProcess
from tests.test_faults import private_spec, wait_exit

pytestmark = [pytest.mark.slow]

# 1 s keeps the suite short; LADA_LIVENESS_HEARTBEAT_S=5 measures the real agents' default.
HEARTBEAT_S = float(os.environ.get("LADA_LIVENESS_HEARTBEAT_S", "1.0"))
MISSED = 3
DEADLINE_S = 600.0
WORKING = ("ALLOCATED", "TRAINING")


def working(operator: OperatorClient, round_number: int) -> bool:
    status = operator.status(0)
    return status["round"] == round_number and status["phase"] in WORKING


class HeartbeatingAgent:
    """A synthetic agent (no model) that heartbeats in the background and reports at once."""

    def __init__(self, address: str, name: str, fingerprint: str) -> None:
        self.client = AgentClient(address)
        self.client.register(name, 4, fingerprint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.client.heartbeat()

    def work(self, round_number: int) -> None:
        samples = self.client.get_allocation(round_number).samples
        self.client.report_stats(round_number, synthetic_stats(samples))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_killed_agent_costs_the_round_a_few_heartbeats_and_rejoins_next_round(
    redis_handle, agents_llm: LLMServiceHandle, micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    with allocator_run(
        redis_handle,
        "liveness",
        tmp_path,
        public_pool=LLM_POOL,
        rounds=2,
        min_agents=3,
        round_deadline_s=DEADLINE_S,
        settings={"heartbeat_interval_s": HEARTBEAT_S, "lost_after_missed_heartbeats": MISSED},
    ) as deployment:
        address = deployment.replicas[0].address
        fingerprint = deployment.store.run_info()["pool_fingerprint"]
        synthetic = [HeartbeatingAgent(address, f"steady-{i}", fingerprint) for i in range(2)]

        def start_real_agent(llm: str) -> ServiceProcess:
            return start_agent(
                tmp_path, "mortal", micro_zoo.slms["slm-rates"], address, llm,
                private_spec(tmp_path), tmp_path / "mortal", capacity=4,
                env={"LADA_AGENT_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S)},
            )  # fmt: skip

        # The real agent reaches the LLM service through a proxy that, during round 1, holds
        # the service's replies: the agent sits in the middle of its round when it is killed.
        llm_proxy = TcpProxy(int(agents_llm.address.rsplit(":", 1)[1])).start()
        mortal = start_real_agent(llm_proxy.address)
        operator = deployment.operator()
        try:
            mortal_id = wait_for(lambda: deployment.store.agent_id_by_name("mortal"), 300, "join")
            llm_proxy.reply_delay_s = 60.0
            wait_for(lambda: working(operator, 1), 300, "round 1 allocated")
            for agent in synthetic:
                agent.work(1)
            wait_for(
                lambda: deployment.store.agent_round_state(1, mortal_id).value == "TRAINING",
                300,
                "the real agent to fetch its allocation",
            )
            time.sleep(1.0)  # it is waiting for its LLM paths now
            mortal.kill()
            killed_at = time.monotonic()
            wait_for(lambda: operator.status(1)["phase"] in ("REPORTED", "CLOSED"), 60, "close")
            cost_s = time.monotonic() - killed_at
            print(f"round 1 closed {cost_s:.2f} s after the kill")
            states = {a["name"]: a["state"] for a in operator.status(1)["agents"]}
            assert states == {"steady-0": "REPORTED", "steady-1": "REPORTED", "mortal": "LOST"}
            # The last heartbeat came at most one interval before the kill; the driver ticks
            # every 0.2 s. The deadline (600 s) played no part.
            assert cost_s <= MISSED * HEARTBEAT_S + 1.0, cost_s
            wait_phase(operator, 1, "CLOSED")
            time.sleep(MISSED * HEARTBEAT_S + 1.0)
            assert operator.status(0)["round"] == 1  # round 2 waits for three live agents
            llm_proxy.reply_delay_s = 0.0
            mortal = start_real_agent(llm_proxy.address)
            wait_for(lambda: working(operator, 2), 300, "round 2 allocated")
            for agent in synthetic:
                agent.work(2)
            assert wait_exit(mortal, 600) == 0, mortal.log()[-4000:]
            final = {a["name"]: a["state"] for a in operator.status(2)["agents"]}
            assert final == {"steady-0": "REPORTED", "steady-1": "REPORTED", "mortal": "REPORTED"}
        finally:
            for agent in synthetic:
                agent.stop()
            mortal.stop(timeout=10)
            operator.close()
            llm_proxy.close()
