"""Crash and resume: kill -9 an agent process in the middle of training, restart it.

It must come back with the same identity, the weights it trained in the earlier round,
at the round it was working on, and report every round exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from lada.modeling import load_causal_lm, score_completions
from lada.tasks import format_prompt, load_dataset
from lada.v1 import agent_pb2, agent_pb2_grpc
from lada.zoo import ZooManifest
from slm_agent.audit import AuditLog
from slm_agent.checkpoint import CheckpointStore
from slm_agent.clients import GrpcLLM
from slm_agent.rounds import AllocatedSample
from tests.fixtures_agent import (
    AGENT_TEST_ENV,
    PRIVATE_RATES,
    private_only,
    start_agent,
    write_private_jsonl,
)
from tests.fixtures_allocator import AllocatorDeployment, wait_for
from tests.fixtures_llm import LLMServiceHandle
from tests.procs import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

SLOW_TRAINING = {"LADA_AGENT_EPOCHS": "150"}  # ~300 steps: a wide window to kill it in


def agent_status(process: ServiceProcess) -> agent_pb2.GetAgentStatusResponse | None:
    try:
        with grpc.insecure_channel(process.address) as channel:
            return agent_pb2_grpc.AgentStub(channel).GetAgentStatus(
                agent_pb2.GetAgentStatusRequest(), timeout=2
            )
    except grpc.RpcError:
        return None


def test_an_agent_killed_while_training_resumes_its_round_identity_and_weights(
    allocator_deployment: Callable[..., AllocatorDeployment],
    agents_llm: LLMServiceHandle,
    micro_zoo: ZooManifest,
    tmp_path: Path,
) -> None:
    deployment = allocator_deployment(
        public_pool=agents_llm.pool_spec, min_agents=1, rounds=2, round_deadline_s=600.0
    )
    public = load_dataset(agents_llm.pool_spec)
    private = write_private_jsonl(
        private_only(load_dataset(PRIVATE_RATES), public), tmp_path / "private.jsonl"
    )
    state_dir = tmp_path / "state"
    model = micro_zoo.slms["slm-rates"]

    def launch(name: str, env: dict[str, str]) -> ServiceProcess:
        process = start_agent(
            tmp_path, name, model, deployment.replicas[0].address, agents_llm.address, private,
            state_dir, capacity=8, env=env,
        )  # fmt: skip
        process.wait_serving(60)
        return process

    first = launch("clinic", SLOW_TRAINING)
    try:
        wait_for(
            lambda: (
                (s := agent_status(first)) is not None
                and s.last_reported_round == 1
                and s.activity == "training round 2"
            ),
            timeout=300,
            what="the agent training round 2",
        )
        time.sleep(1.0)
        first.kill()
    finally:
        first.stop()
    store = CheckpointStore(state_dir)
    identity = store.load_identity()
    assert identity is not None
    assert store.load_progress().last_reported_round == 1
    assert store.latest_round() == 1  # round 2 never finished: no checkpoint of it

    # The restarted agent logs under the same name, so its log continues the first one.
    second = start_agent(
        tmp_path, "clinic", model, deployment.replicas[0].address, agents_llm.address, private,
        state_dir, capacity=8,
    )  # fmt: skip
    assert second.proc.wait(300) == 0, second.log()[-4000:]

    resumed = store.load_identity()
    assert resumed == identity
    assert [a.agent_id for a in deployment.store.list_agents()] == [identity.agent_id]
    assert '"checkpoint_round": 1' in second.log()
    audit = AuditLog(store.audit_path).read()
    assert [r.rpc for r in audit].count("/lada.v1.Allocator/RegisterAgent") == 1
    assert [r.round for r in audit if r.rpc.endswith("/ReportStats")] == [1, 2]
    for r in (1, 2):
        allocated = [a.sample_id for a in deployment.store.get_allocation(r, identity.agent_id)]
        assert set(deployment.store.get_stats(r, identity.agent_id)) == set(allocated)
    assert store.load_progress().last_reported_round == 2

    # Round 2 started from round 1's trained weights, not from the base model.
    outcome = store.load_outcome(2)
    allocation = [
        AllocatedSample(a.sample_id, a.cluster, a.version)
        for a in deployment.store.get_allocation(2, identity.agent_id)
    ]
    with grpc.insecure_channel(agents_llm.address) as channel:
        paths = GrpcLLM(channel).reasoning_paths(
            allocation,
            n=4,
            temperature=0.8,
            max_tokens=int(AGENT_TEST_ENV["LADA_AGENT_LLM_MAX_TOKENS"]),
        )  # the LLM service's cache returns the very paths the agent scored
    by_id = {p.id: p for p in public}
    prompts = [format_prompt(by_id[s.sample_id].question) for s in outcome.stats for _ in s.paths]
    texts = [p.text for s in outcome.stats for p in paths[s.sample_id]]
    reported = [p.slm_normalized_logprob_before for s in outcome.stats for p in s.paths]

    def scores_of(model_dir: Path) -> list[float]:
        lm, tokenizer = load_causal_lm(model_dir)
        return [s.normalized for s in score_completions(lm, tokenizer, prompts, texts)]

    assert reported == pytest.approx(scores_of(store.round_dir(1) / "model"), abs=1e-4)
    assert reported != pytest.approx(scores_of(model), abs=1e-4)
