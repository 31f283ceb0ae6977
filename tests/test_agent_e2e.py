"""A full federated run on real processes: Redis, the allocator, the LLM service on vLLM and
two `lada agent run` processes with different architectures and tokenizers (micro zoo).

Every byte the agents send goes through a recording TCP proxy in front of the allocator
and the LLM service, and the audit interceptor also captures each serialized message, so
the privacy test sees everything that left the agents.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from lada.redis_conn import RedisHandle
from lada.state import StateStore
from lada.tasks import Problem, load_dataset
from lada.v1 import agent_pb2, agent_pb2_grpc
from lada.zoo import ZooManifest
from slm_agent.audit import AuditLog
from slm_agent.checkpoint import CheckpointStore
from tests.fixtures_agent import (
    PRIVATE_PURCHASES,
    PRIVATE_RATES,
    RecordingProxy,
    capture_env,
    private_only,
    start_agent,
    write_private_jsonl,
)
from tests.fixtures_allocator import allocator_run
from tests.fixtures_llm import LLMServiceHandle
from tests.procs import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROUNDS = 2
CAPACITY = 8
RUN_TIMEOUT_S = 540.0


@dataclass
class AgentRun:
    name: str
    model: str
    loss: str
    state_dir: Path
    capture: Path
    private: list[Problem]
    process: ServiceProcess | None = None
    exit_code: int | None = None
    status_seen: list[agent_pb2.GetAgentStatusResponse] = field(default_factory=list)

    @property
    def store(self) -> CheckpointStore:
        return CheckpointStore(self.state_dir)

    @property
    def agent_id(self) -> str:
        identity = self.store.load_identity()
        return identity.agent_id if identity else ""


@dataclass
class Federation:
    store: StateStore
    agents: list[AgentRun]
    allocator_proxy: RecordingProxy
    llm_proxy: RecordingProxy
    public: list[Problem]


def poll_status(agent: AgentRun) -> None:
    """Ask the agent's own service what it is doing (kept for the assertions)."""
    assert agent.process is not None
    try:
        with grpc.insecure_channel(agent.process.address) as channel:
            reply = agent_pb2_grpc.AgentStub(channel).GetAgentStatus(
                agent_pb2.GetAgentStatusRequest(), timeout=2
            )
        agent.status_seen.append(reply)
    except grpc.RpcError:
        pass


@pytest.fixture(scope="module")
def federation(
    redis_handle: RedisHandle,
    agents_llm: LLMServiceHandle,
    micro_zoo: ZooManifest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Federation]:
    llm_service = agents_llm
    root = tmp_path_factory.mktemp("federation")
    public = load_dataset(llm_service.pool_spec)
    agents = [
        AgentRun("agent-rates", "slm-rates", "contrastive", root / "rates", root / "rates.bin",
                 private_only(load_dataset(PRIVATE_RATES), public)),
        AgentRun("agent-purchases", "slm-purchases", "sft", root / "purchases",
                 root / "purchases.bin", private_only(load_dataset(PRIVATE_PURCHASES), public)),
    ]  # fmt: skip
    with allocator_run(
        redis_handle, "e2e-agents", root, public_pool=llm_service.pool_spec, rounds=ROUNDS,
        min_agents=len(agents), round_deadline_s=RUN_TIMEOUT_S,
    ) as deployment:  # fmt: skip
        allocator_proxy = RecordingProxy(deployment.replicas[0].address)
        llm_proxy = RecordingProxy(llm_service.address)
        for agent in agents:
            spec = write_private_jsonl(agent.private, root / f"{agent.name}.jsonl")
            agent.process = start_agent(
                root, agent.name, micro_zoo.slms[agent.model], allocator_proxy.address,
                llm_proxy.address, spec, agent.state_dir, loss=agent.loss, capacity=CAPACITY,
                contribute=True, env=capture_env(agent.capture),
            )  # fmt: skip
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while time.monotonic() < deadline and any(
                a.process and a.process.proc.poll() is None for a in agents
            ):
                for agent in agents:
                    poll_status(agent)
                time.sleep(0.5)
            for agent in agents:
                assert agent.process is not None
                agent.exit_code = agent.process.stop(timeout=10)
            yield Federation(deployment.store, agents, allocator_proxy, llm_proxy, public)
        finally:
            for agent in agents:
                if agent.process:
                    agent.process.stop(timeout=10)
            allocator_proxy.close()
            llm_proxy.close()


def logs(federation: Federation) -> str:
    return "\n".join(a.process.log()[-3000:] for a in federation.agents if a.process)


def test_both_agents_finish_the_run_cleanly(federation: Federation) -> None:
    assert [a.exit_code for a in federation.agents] == [0, 0], logs(federation)


def test_statistics_of_every_allocated_sample_arrive_in_every_round(
    federation: Federation,
) -> None:
    for agent in federation.agents:
        for r in range(1, ROUNDS + 1):
            allocated = {a.sample_id for a in federation.store.get_allocation(r, agent.agent_id)}
            assert 0 < len(allocated) <= CAPACITY
            assert set(federation.store.get_stats(r, agent.agent_id)) == allocated


def test_each_agent_checkpoints_every_round_and_records_its_progress(
    federation: Federation,
) -> None:
    for agent in federation.agents:
        progress = agent.store.load_progress()
        assert (progress.last_trained_round, progress.last_reported_round) == (ROUNDS, ROUNDS)
        for r in range(1, ROUNDS + 1):
            outcome = agent.store.load_outcome(r)
            assert len(outcome.stats) == federation.store.allocation_size(r, agent.agent_id)
            weights = agent.store.round_dir(r) / "model"
            assert (weights / "config.json").is_file()
            assert (weights / "model.safetensors").is_file()


def test_accuracy_on_allocated_samples_does_not_collapse(federation: Federation) -> None:
    for agent in federation.agents:
        for r in range(1, ROUNDS + 1):
            outcome = agent.store.load_outcome(r)
            assert outcome.accuracy_after >= outcome.accuracy_before - 0.25, outcome.summary()
            before, after = outcome.correct_path_nlp_before, outcome.correct_path_nlp_after
            if before == before:  # NaN when the LLM wrote no correct path for the samples
                assert after >= before - 0.5, outcome.summary()


def test_the_agents_serve_their_status_while_they_run(federation: Federation) -> None:
    for agent in federation.agents:
        seen = agent.status_seen
        assert seen, f"{agent.name} never answered GetAgentStatus"
        assert {s.name for s in seen} == {agent.name}
        assert {s.agent_id for s in seen if s.agent_id} == {agent.agent_id}
        assert any(s.activity.startswith("training round") for s in seen) or any(
            s.last_reported_round >= 1 for s in seen
        )
        assert max(s.bytes_sent for s in seen) > 0


def test_no_private_question_or_answer_left_either_agent(federation: Federation) -> None:
    wire = bytes(federation.allocator_proxy.sent) + bytes(federation.llm_proxy.sent)
    assert len(federation.allocator_proxy.sent) > 1000 and len(federation.llm_proxy.sent) > 100
    for agent in federation.agents:
        captured = agent.capture.read_bytes()
        assert b"/lada.v1.Allocator/ReportStats" in captured
        assert len(agent.private) >= 30
        for problem in agent.private:
            for text in (problem.question, problem.reference):
                needle = text.encode()
                assert needle not in wire, f"private text of {problem.id} seen on the wire"
                assert needle not in captured, f"private text of {problem.id} in a message"


def test_the_audit_log_records_every_message_that_left(federation: Federation) -> None:
    for agent in federation.agents:
        records = AuditLog(agent.store.audit_path).read()
        captured = agent.capture.read_bytes()
        rpcs = {r.rpc for r in records}
        assert {
            "/lada.v1.Allocator/RegisterAgent",
            "/lada.v1.Allocator/WatchRounds",
            "/lada.v1.Allocator/GetAllocation",
            "/lada.v1.Allocator/GetClusterModel",
            "/lada.v1.Allocator/Heartbeat",
            "/lada.v1.Allocator/ReportStats",
            "/lada.v1.LLMService/GenerateReasoningPaths",
        } <= rpcs
        assert captured.count(b"/lada.v1.") == len(records)
        reports = [r for r in records if r.rpc.endswith("/ReportStats")]
        assert sorted({r.round for r in reports}) == list(range(1, ROUNDS + 1))
        assert all("stats.paths.slm_normalized_logprob_after" in r.field_names for r in reports)
        assert not any("text" in name for r in reports for name in r.field_names)


def test_lada_agent_audit_prints_what_left_the_agent(federation: Federation) -> None:
    import subprocess
    import sys

    from tests.procs import REPO_ROOT

    agent = federation.agents[0]
    result = subprocess.run(
        [sys.executable, "-m", "lada.cli", "agent", "audit", "--state-dir", str(agent.state_dir),
         "--round", "1", "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = json.loads(result.stdout)
    assert rows and all(row["round"] == 1 for row in rows)
    assert "/lada.v1.Allocator/ReportStats" in {row["rpc"] for row in rows}
