"""Pytest fixtures for the allocator tests (registered in conftest.py via pytest_plugins):
real `lada allocator serve` processes against the test Redis, a small synthetic pool, and
helpers that play an agent's part with synthetic statistics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from allocator.client import AgentClient, OperatorClient
from lada.redis_conn import RedisHandle
from lada.state import StateStore
from lada.tasks import load_dataset, pool_fingerprint
from lada.v1 import allocator_pb2
from tests.procs import ServiceProcess, free_port, start_service

TEST_POOL = "synthetic:domains=all,n=240,seed=7"
OPERATOR_TOKEN = "operator-secret"
TEST_CLUSTERS = 4


@dataclass
class AllocatorProcess:
    """One running allocator replica and how to reach it."""

    service: ServiceProcess
    config_path: Path
    port: int

    @property
    def address(self) -> str:
        return self.service.address


@dataclass
class AllocatorDeployment:
    """Allocator replicas of one run, sharing the test Redis; restartable."""

    run_id: str
    store: StateStore
    log_dir: Path
    settings: dict[str, Any]
    replicas: list[AllocatorProcess] = field(default_factory=list)

    def start(self, name: str = "allocator", port: int | None = None) -> AllocatorProcess:
        port = port or free_port()
        config_path = self.log_dir / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump({"allocator": self.settings}))
        service = start_service(
            ["allocator", "serve", "--config", str(config_path), "--port", str(port)],
            port,
            self.log_dir,
            name,
        )
        service.wait_serving(timeout=120)
        replica = AllocatorProcess(service, config_path, port)
        self.replicas.append(replica)
        return replica

    def operator(self, replica: int = 0) -> OperatorClient:
        return OperatorClient(self.replicas[replica].address, OPERATOR_TOKEN)

    def agent(self, replica: int = 0) -> AgentClient:
        return AgentClient(self.replicas[replica].address)

    def stop_all(self) -> None:
        for replica in self.replicas:
            replica.service.stop()


@pytest.fixture(scope="session")
def test_pool_fingerprint() -> str:
    return pool_fingerprint(load_dataset(TEST_POOL))


def default_settings(run_id: str, **overrides: Any) -> dict[str, Any]:
    """Allocator settings for tests: small pool, 4 clusters, 3 agents, no metrics port."""
    settings: dict[str, Any] = {
        "run_id": run_id,
        "public_pool": TEST_POOL,
        "policy": "lada",
        "rounds": 3,
        "min_agents": 3,
        "round_deadline_s": 120.0,
        "operator_token": OPERATOR_TOKEN,
        # Tests about something else join like local experiments do; tests of enrollment
        # itself pass open_enrollment=False.
        "open_enrollment": True,
        "seed": 0,
        "lada": {"num_clusters": TEST_CLUSTERS},
        "server": {"metrics_port": -1, "log_level": "INFO"},
        # Synthetic agents here do not heartbeat; liveness has its own test.
        "settings": {"lost_after_missed_heartbeats": 0},
    }
    settings.update(overrides)
    return settings


@contextmanager
def allocator_run(
    redis_handle: RedisHandle, run_id: str, log_dir: Path, start: bool = True, **overrides: Any
) -> Iterator[AllocatorDeployment]:
    """A deployment of one run (one replica started unless `start=False`); stopped and wiped
    on exit."""
    deployment = AllocatorDeployment(
        run_id,
        StateStore(redis_handle.client, run_id),
        log_dir,
        default_settings(run_id, **overrides),
    )
    try:
        if start:
            deployment.start()
        yield deployment
    finally:
        deployment.stop_all()
        deployment.store.wipe()


@pytest.fixture
def allocator_deployment(
    redis_handle: RedisHandle, run_id: str, tmp_path: Path
) -> Iterator[Callable[..., AllocatorDeployment]]:
    """Factory: `allocator_deployment(policy=..., rounds=..., ...)` -> a running deployment;
    every process is stopped and the run's keys wiped afterwards."""
    with ExitStack() as stack:

        def make(start: bool = True, **overrides: Any) -> AllocatorDeployment:
            return stack.enter_context(
                allocator_run(redis_handle, run_id, tmp_path, start, **overrides)
            )

        yield make


# ---- playing an agent -------------------------------------------------------------------------
def register_agents(
    address: str, fingerprint: str, count: int, capacity: int = 20, prefix: str = "agent"
) -> list[AgentClient]:
    clients = []
    for i in range(count):
        client = AgentClient(address)
        client.register(f"{prefix}-{i}", capacity, fingerprint, domain_tags=["rates"])
        clients.append(client)
    return clients


def synthetic_stats(
    samples: Sequence[allocator_pb2.AllocatedSample],
    reward_of_cluster: Callable[[int], float] = lambda c: 0.0,
    gap: float = 1.0,
) -> list[allocator_pb2.SampleStats]:
    """Four LLM paths per sample, two correct; the SLM's nlp on them rises by the cluster's
    reward during training, so the realised reward equals `reward_of_cluster(cluster)`."""
    out = []
    for sample in samples:
        reward = reward_of_cluster(sample.cluster)
        before = -0.5 - gap
        paths = [
            allocator_pb2.PathStats(
                llm_normalized_logprob=-0.5 if correct else -0.9,
                correct=correct,
                slm_normalized_logprob_before=before,
                slm_normalized_logprob_after=min(before + reward, 0.0),
            )
            for correct in (True, True, False, False)
        ]
        out.append(allocator_pb2.SampleStats(sample_id=sample.sample_id, paths=paths))
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except grpc.RpcError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def wait_phase(
    operator: OperatorClient, round_number: int, phase: str, timeout: float = 60.0
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = operator.status(0)
        if status["round"] > round_number or (
            status["round"] == round_number and status["phase"] == phase
        ):
            return operator.status(round_number)
        return None

    return wait_for(reached, timeout, f"round {round_number} {phase}")


def play_round(
    clients: Sequence[AgentClient],
    operator: OperatorClient,
    round_number: int,
    rewards: dict[str, Callable[[int], float]] | None = None,
) -> dict[str, list[allocator_pb2.AllocatedSample]]:
    """Every agent fetches its allocation and reports synthetic statistics for it."""
    wait_phase(operator, round_number, "ALLOCATED")
    allocations = {}
    for client in clients:
        reply = client.get_allocation(round_number)
        allocations[client.agent_id] = list(reply.samples)
        reward = (rewards or {}).get(client.agent_id, lambda c: 0.0)
        client.report_stats(round_number, synthetic_stats(reply.samples, reward))
    return allocations


def finish_one_round_run(deployment: AllocatorDeployment) -> None:
    """Register one agent, play round 1, and wait until the (one-round) run is finished."""
    client = AgentClient(deployment.replicas[0].address)
    client.register("early", 4, deployment.store.run_info()["pool_fingerprint"])
    with deployment.operator() as operator:
        wait_phase(operator, 1, "ALLOCATED")
        client.report_stats(1, synthetic_stats(client.get_allocation(1).samples))
        wait_for(deployment.store.run_finished, 60, "the run to finish")
