"""Each service, started as a real process, lists its RPCs through reflection and is SERVING.

The client here uses no generated stubs: only server reflection, as grpcurl would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import ServiceProcess, free_port, start_service
from tests.reflection_client import ReflectionClient

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


@pytest.fixture
def reflection_of(tmp_path: Path) -> Iterator:
    started: list[tuple[ServiceProcess, ReflectionClient]] = []

    def start(args: list[str], port: int, name: str) -> ReflectionClient:
        service = start_service(args, port, tmp_path, name)
        try:
            service.wait_serving(timeout=240)
        except Exception:
            service.stop()
            raise
        client = ReflectionClient(service.address)
        started.append((service, client))
        return client

    yield start
    for service, client in started:
        client.close()
        assert service.stop() == 0, service.log()[-3000:]


def _assert_reflected(client: ReflectionClient, service: str, rpcs: set[str]) -> None:
    assert {service, HEALTH, REFLECTION} <= set(client.services())
    assert set(client.methods(service)) == rpcs
    for name in ("", service):
        reply = client.call(HEALTH, "Check", {"service": name})
        assert reply["status"] == "SERVING"


def test_allocator_reflects_every_rpc_and_serves(reflection_of, redis_handle, tmp_path) -> None:
    port = free_port()
    client = reflection_of(
        [
            "allocator",
            "serve",
            "--port",
            str(port),
            "--metrics-port",
            "-1",
            "--redis-url",
            redis_handle.url,
            "--run-id",
            "reflection",
            "--public-pool",
            "synthetic:domains=all,n=64,seed=3",
        ],
        port,
        "allocator",
    )
    _assert_reflected(
        client,
        "lada.v1.Allocator",
        {
            "RegisterAgent",
            "Heartbeat",
            "Deregister",
            "GetAllocation",
            "WatchRounds",
            "ReportStats",
            "ContributePaths",
            "GetClusterModel",
            "GetRoundStatus",
            "ListAgents",
            "GetLearnabilityGaps",
            "RevokeAgent",
            "InviteAgent",
            "ListInvitations",
            "RevokeInvitation",
            "SetTotalRounds",
        },
    )
    agents = client.call("lada.v1.Allocator", "ListAgents", {})
    assert agents.get("agents", []) == []


def test_llm_service_reflects_every_rpc_and_serves(reflection_of, micro_zoo) -> None:
    port = free_port()
    client = reflection_of(
        [
            "llm",
            "serve",
            "--port",
            str(port),
            "--metrics-port",
            "-1",
            "--backend",
            "transformers",
            "--model",
            str(micro_zoo.llm),
            "--public-pool",
            "synthetic:domains=all,n=64,seed=3",
        ],
        port,
        "llm",
    )
    _assert_reflected(
        client,
        "lada.v1.LLMService",
        {"GenerateReasoningPaths", "ScorePaths", "Absorb", "ListModelVersions"},
    )
    versions = client.call("lada.v1.LLMService", "ListModelVersions", {})
    assert versions["servingVersion"]


def test_agent_reflects_every_rpc_and_serves(reflection_of, micro_zoo, tmp_path) -> None:
    port = free_port()
    slm = next(iter(micro_zoo.slms.values()))
    client = reflection_of(
        [
            "agent",
            "run",
            "--port",
            str(port),
            "--metrics-port",
            "-1",
            "--allocator",
            f"127.0.0.1:{free_port()}",
            "--llm",
            f"127.0.0.1:{free_port()}",
            "--model",
            str(slm),
            "--private-data",
            "synthetic:domains=rates,n=16,seed=4",
            "--name",
            "reflection-agent",
            "--state-dir",
            str(tmp_path / "agent"),
        ],
        port,
        "agent",
    )
    _assert_reflected(client, "lada.v1.Agent", {"GetAgentStatus", "GetAuditLog"})
