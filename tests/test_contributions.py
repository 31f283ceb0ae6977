"""Contributed paths are checked, not trusted: a registered agent sends sound, unsound,
wrong and over-cap paths over real gRPC; only the sound ones within the cap are recorded,
the round status counts every rejection, and the LLM service absorbs nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from allocator.client import AgentClient
from lada.tasks import Problem, is_sound, load_dataset
from lada.zoo import ZooManifest
from tests.fixtures_allocator import allocator_run, synthetic_stats, wait_for, wait_phase
from tests.fixtures_llm import LLM_POOL, start_llm_service

pytestmark = [pytest.mark.slow]

CAP = 2


def unsound(problem: Problem) -> str:
    """The reference's final answer after a false first step."""
    return "2+2=5\n" + problem.reference.splitlines()[-1]


def test_only_sound_paths_within_the_cap_reach_absorb(
    redis_handle, micro_zoo: ZooManifest, tmp_path: Path, test_pool_fingerprint: str
) -> None:
    llm = start_llm_service(Path(micro_zoo.llm), tmp_path, "absorbing-llm", "transformers")
    try:
        with allocator_run(
            redis_handle,
            "contributions",
            tmp_path,
            rounds=1,
            min_agents=1,
            llm_address=llm.address,
            settings={"max_contributions_per_agent_round": CAP},
            # every accepted path counts as novel: this test is about soundness and the cap
            lada={
                "num_clusters": 4,
                "novelty_max_llm_accuracy": 1.01,
                "novelty_greedy_check": False,
            },
        ) as deployment:
            agent = AgentClient(deployment.replicas[0].address)
            agent.register("clinic-a", 8, test_pool_fingerprint)
            operator = deployment.operator()
            wait_phase(operator, 1, "ALLOCATED")
            samples = agent.get_allocation(1).samples
            by_id = {p.id: p for p in load_dataset(LLM_POOL)}
            sound = [by_id[s.sample_id] for s in samples[:3]]
            assert all(is_sound(p.reference, p.answer) for p in sound)
            wrong_step, wrong_answer = by_id[samples[3].sample_id], by_id[samples[4].sample_id]
            reply = agent.contribute_paths(
                1,
                [
                    (wrong_step.id, unsound(wrong_step)),
                    (wrong_answer.id, wrong_answer.reference + "1"),
                    *((p.id, p.reference) for p in sound),
                ],
            )
            assert (
                reply.accepted,
                reply.rejected_unsound,
                reply.rejected_incorrect,
                reply.rejected_over_cap,
            ) == (CAP, 1, 1, 1)
            recorded = {s for _, s, _ in deployment.store.contributions(1)}
            assert recorded == {sound[0].id, sound[1].id}
            assert operator.status(1)["contributions"] == {
                "accepted": CAP,
                "rejected_incorrect": 1,
                "rejected_unsound": 1,
                "rejected_over_cap": 1,
            }
            agent.report_stats(1, synthetic_stats(samples))
            wait_for(deployment.store.run_finished, 300, "the round to close and absorb")
            assert deployment.store.absorbed() == recorded
            assert deployment.store.llm_version() != "base"
    finally:
        llm.process.stop()
