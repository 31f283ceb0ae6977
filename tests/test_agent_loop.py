"""The agent loop in-process against a real allocator process (real Redis, real gRPC).

The LLM side is `LocalLLM`: the real micro LLM in this process, as a simulation would
plug it in through LLMPort. The end-to-end tests run the real LLM service process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import pytest

from lada.tasks import Problem, pool_fingerprint
from lada.zoo import ZooManifest
from slm_agent.agent import Agent, AgentPlan
from slm_agent.audit import AuditLog, audited_channel
from slm_agent.checkpoint import CheckpointStore
from slm_agent.clients import GrpcAllocator
from slm_agent.losses import make_loss
from slm_agent.rounds import SampleStat
from slm_agent.trainer import LocalTrainer, TrainerSettings
from tests.fixtures_agent import LocalLLM, torch_threads_one
from tests.fixtures_allocator import AllocatorDeployment, wait_for

torch_threads_one()


class ReportCrash(RuntimeError):
    """Stands for the process dying between training and reporting."""


class CrashBeforeReport(GrpcAllocator):
    """The real allocator client, except that the first report never leaves."""

    crashed = False

    def report_stats(self, round_number: int, stats: Sequence[SampleStat]) -> tuple[int, int]:
        if not self.crashed:
            self.crashed = True
            raise ReportCrash(f"died before reporting round {round_number}")
        return super().report_stats(round_number, stats)


def make_agent(
    zoo: ZooManifest,
    pool: dict[str, Problem],
    private: list[Problem],
    llm: LocalLLM,
    allocator_address: str,
    state_dir: Path,
    client_class: type[GrpcAllocator] = GrpcAllocator,
) -> tuple[Agent, grpc.Channel]:
    store = CheckpointStore(state_dir)
    audit = AuditLog(store.audit_path)
    channel = audited_channel(allocator_address, audit)
    latest = store.latest_round()
    trainer = LocalTrainer.from_path(
        zoo.slms["slm-rates"],
        make_loss("contrastive"),
        private,
        TrainerSettings(max_new_tokens=32, own_paths_per_sample=1),
        checkpoint=store.round_dir(latest) if latest else None,
    )
    plan = AgentPlan(
        name="clinic-a",
        capacity=6,
        model_description="gpt2",
        tokenizer_name="bpe-b",
        pool=pool,
        pool_fingerprint=pool_fingerprint(list(pool.values())),
        private=private,
        allocator_target=allocator_address,
        llm_max_tokens=32,
        heartbeat_interval_s=1.0,
        retry_deadline_s=20.0,
    )
    return Agent(plan, trainer, client_class(channel), llm, store), channel


def reports_of(audit: AuditLog) -> list[int]:
    return [r.round for r in audit.read() if r.rpc.endswith("/ReportStats")]


def test_agent_works_every_round_and_reports_each_once(
    allocator_deployment: Callable[..., AllocatorDeployment],
    micro_zoo: ZooManifest,
    agent_pool: dict[str, Problem],
    private_rates: list[Problem],
    local_llm: LocalLLM,
    tmp_path: Path,
) -> None:
    deployment = allocator_deployment(min_agents=1, rounds=2)
    agent, channel = make_agent(
        micro_zoo, agent_pool, private_rates, local_llm, deployment.replicas[0].address, tmp_path
    )
    with channel:
        agent.run()
    agent_id = agent.identity.agent_id if agent.identity else ""
    store = deployment.store
    for r in (1, 2):
        allocated = {a.sample_id for a in store.get_allocation(r, agent_id)}
        assert len(allocated) == 6
        assert set(store.get_stats(r, agent_id)) == allocated
    assert agent.progress.last_reported_round == 2
    assert reports_of(AuditLog(agent.store.audit_path)) == [1, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["round-1", "round-2"]


def test_a_restarted_agent_keeps_its_identity_and_reports_its_trained_round_once(
    allocator_deployment: Callable[..., AllocatorDeployment],
    micro_zoo: ZooManifest,
    agent_pool: dict[str, Problem],
    private_rates: list[Problem],
    local_llm: LocalLLM,
    tmp_path: Path,
) -> None:
    deployment = allocator_deployment(min_agents=1, rounds=1, round_deadline_s=300.0)
    address = deployment.replicas[0].address
    first, channel = make_agent(
        micro_zoo, agent_pool, private_rates, local_llm, address, tmp_path, CrashBeforeReport
    )
    with channel, pytest.raises(ReportCrash):
        first.run()
    llm_calls_before_restart = len(local_llm.calls)
    assert first.progress.last_trained_round == 1 and first.progress.last_reported_round == 0

    second, channel = make_agent(micro_zoo, agent_pool, private_rates, local_llm, address, tmp_path)
    with channel:
        second.run()
    audit = AuditLog(second.store.audit_path)
    agent_id = second.identity.agent_id if second.identity else ""
    assert first.identity and agent_id == first.identity.agent_id
    assert [r.rpc for r in audit.read()].count("/lada.v1.Allocator/RegisterAgent") == 1
    assert len(local_llm.calls) == llm_calls_before_restart  # nothing regenerated or retrained
    assert reports_of(audit) == [1]
    assert len(deployment.store.get_stats(1, agent_id)) == 6
    assert second.progress.last_reported_round == 1


def test_the_agent_rides_out_an_allocator_restart(
    allocator_deployment: Callable[..., AllocatorDeployment],
    micro_zoo: ZooManifest,
    agent_pool: dict[str, Problem],
    private_rates: list[Problem],
    local_llm: LocalLLM,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="lada.agent")
    deployment = allocator_deployment(min_agents=1, rounds=3, round_deadline_s=300.0)
    replica = deployment.replicas[0]
    agent, channel = make_agent(
        micro_zoo, agent_pool, private_rates, local_llm, replica.address, tmp_path
    )
    agent.plan.retry_deadline_s = 90.0
    worker = threading.Thread(target=agent.run, daemon=True)
    with channel:
        worker.start()
        wait_for(lambda: agent.progress.last_reported_round >= 1, 120, "round 1 reported")
        replica.service.stop()
        deployment.start("allocator-again", port=replica.port)
        worker.join(240)
    assert not worker.is_alive()
    assert agent.progress.last_reported_round == 3
    assert reports_of(AuditLog(agent.store.audit_path)) == [1, 2, 3]
    assert any("round stream lost" in r.getMessage() for r in caplog.records)
