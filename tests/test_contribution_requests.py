"""Contribution requests (method.md section 2, issue 15): the allocator asks each agent for
paths on public samples of its domains where the LLM is weak, records the requests with the
round's allocations, returns them over GetAllocation, and a contributing agent answers them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from allocator.client import AgentClient
from allocator.requests import WeakSamples, round_requests, select_requests, weak_samples
from lada.state import AgentRecord, Allocation, Phase, StateStore
from lada.tasks import Problem, load_dataset
from lada.v1 import allocator_pb2
from lada.zoo import ZooManifest
from slm_agent.rounds import AllocatedSample, answer_requests, requested_problems
from slm_agent.trainer import LocalTrainer
from tests.fixtures_allocator import TEST_POOL, allocator_run, wait_phase
from tests.fixtures_zoo import ONE_AGENT_SOURCE, simulate_one_rates_agent

NAN = float("nan")
# Pool of 12: domain a at 0..7, b at 8..11. LLM accuracy per sample (NaN: unknown).
DOMAINS = ["a"] * 8 + ["b"] * 4
ACCURACY = np.array([0.0, 0.25, 0.5, 1.0, NAN, NAN, 0.0, NAN, 0.0, NAN, 0.0, 1.0])
ABSORBED = np.zeros(12, bool)
ABSORBED[6] = True
KNOWN_WEAK_A = {0, 1}  # 6 is absorbed; 2 (0.5 is not below 0.5) and 3 are known-strong
UNKNOWN_A = {4, 5, 7}


def _weak() -> WeakSamples:
    return weak_samples(DOMAINS, ACCURACY, ABSORBED, 0.5)


def _select(
    budget: int, allocated: Sequence[int] = (), tags: Sequence[str] = ("a",), key: int = 0
) -> list[int]:
    rng = np.random.default_rng(key)
    return select_requests(_weak(), tags, np.asarray(allocated, np.int64), budget, rng).tolist()


# ---- the selection --------------------------------------------------------------------------
def test_known_weak_come_first_then_unknown_and_never_strong_or_absorbed() -> None:
    chosen = _select(10)
    assert set(chosen[:2]) == KNOWN_WEAK_A
    assert set(chosen[2:]) == UNKNOWN_A
    assert len(chosen) == len(set(chosen))


def test_only_the_agents_domains_are_asked() -> None:
    assert set(_select(10, tags=["b"])) == {8, 9, 10}
    assert set(_select(10, tags=["b", "a"])) == KNOWN_WEAK_A | UNKNOWN_A | {8, 9, 10}
    assert _select(10, tags=["c"]) == []


def test_the_budget_caps_and_zero_budget_asks_nothing() -> None:
    assert set(_select(1)) <= KNOWN_WEAK_A and len(_select(1)) == 1
    assert set(_select(3)) - KNOWN_WEAK_A <= UNKNOWN_A and len(_select(3)) == 3
    assert _select(0) == []


def test_samples_allocated_to_the_agent_this_round_are_never_asked() -> None:
    assert set(_select(10, allocated=[0, 4, 9])) == {1, 5, 7}
    assert set(_select(2, allocated=[0, 1])) <= UNKNOWN_A and len(_select(2, allocated=[0, 1])) == 2


def test_draws_are_reproducible_per_seed_round_and_agent_name() -> None:
    agents = [AgentRecord(f"id-{n}", n, domain_tags=["a"]) for n in ("x", "y")]

    def draw(seed: int, round_number: int) -> dict[str, list[int]]:
        chosen = round_requests(seed, round_number, agents, {}, _weak(), 4)
        return {agent_id: v.tolist() for agent_id, v in chosen.items()}

    first = draw(0, 1)
    assert first == draw(0, 1)
    assert all(set(v[:2]) == KNOWN_WEAK_A for v in first.values())
    orders = [draw(s, r)[a] for s in (0, 1) for r in (1, 2, 3) for a in ("id-x", "id-y")]
    assert len({tuple(o) for o in orders}) > 1  # the order moves with seed, round and name


# ---- recorded with the allocation, returned over gRPC ---------------------------------------
def test_requests_are_written_with_the_allocations_or_not_at_all(store: StateStore) -> None:
    store.init_run(policy="lada", total_rounds=2, pool_fingerprint="f" * 64, pool_size=10)
    store.open_round(1, deadline_ms=0)
    allocations = {"agent-1": [Allocation("s1", 0, "base")]}
    requests = {"agent-1": ["s3", "s2"]}
    assert store.record_round_allocations(1, allocations, 0, requests)
    assert store.round_phase(1) is Phase.ALLOCATED
    assert store.contribution_requests(1, "agent-1") == ["s3", "s2"]
    assert store.contribution_request_count(1, "agent-1") == 2
    before = store.snapshot()
    assert not store.record_round_allocations(1, allocations, 0, {"agent-1": ["s9"]})
    assert store.snapshot() == before  # the round was no longer OPEN: nothing written


def _no_llm_path_correct(samples: Sequence[allocator_pb2.AllocatedSample]) -> list:
    """Statistics on which all four LLM paths were wrong: the LLM cannot solve these."""
    path = allocator_pb2.PathStats(
        llm_normalized_logprob=-0.9,
        correct=False,
        slm_normalized_logprob_before=-1.5,
        slm_normalized_logprob_after=-1.4,
    )
    return [allocator_pb2.SampleStats(sample_id=s.sample_id, paths=[path] * 4) for s in samples]


@pytest.mark.slow
def test_get_allocation_asks_for_what_the_llm_cannot_solve(
    redis_handle, tmp_path: Path, test_pool_fingerprint: str
) -> None:
    domain = {p.id: p.domain for p in load_dataset(TEST_POOL)}
    with allocator_run(
        redis_handle,
        "contribution-requests",
        tmp_path,
        rounds=2,
        min_agents=1,
        lada={"num_clusters": 4, "contribution_requests": 12},
    ) as deployment:
        agent = AgentClient(deployment.replicas[0].address)
        agent.register("rates-clinic", 16, test_pool_fingerprint, domain_tags=["rates"])
        with deployment.operator() as operator:
            wait_phase(operator, 1, "ALLOCATED")
            first = agent.get_allocation(1)
            allocated_1 = [s.sample_id for s in first.samples]
            asked_1 = list(first.contribution_requests)
            assert len(asked_1) == 12 and {domain[s] for s in asked_1} == {"rates"}
            assert not set(asked_1) & set(allocated_1)
            assert asked_1 == deployment.store.contribution_requests(1, agent.agent_id)
            agent.report_stats(1, _no_llm_path_correct(first.samples))
            status = wait_phase(operator, 2, "ALLOCATED")
            second = agent.get_allocation(2)
        assert status["agents"][0]["requested"] == 12
        weak = [s for s in allocated_1 if domain[s] == "rates"]
        assert weak, "round 1 allocated no rates sample; pick another seed"
        allocated_2 = {s.sample_id for s in second.samples}
        asked_2 = list(second.contribution_requests)
        assert not set(weak) & allocated_2  # unlearnable: never allocated again ...
        assert set(asked_2[: len(weak)]) == set(weak)  # ... but asked about first
        assert {domain[s] for s in asked_2} == {"rates"} and not set(asked_2) & allocated_2


# ---- the agent's side -----------------------------------------------------------------------
class OracleTrainer:
    """Stands for a trained model that writes the reference path for every question."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.reference = {p.question: p.reference for p in problems}
        self.asked: list[str] = []

    def greedy_answers(self, questions: Sequence[str]) -> list[str]:
        self.asked += questions
        return [self.reference.get(q, "no idea") for q in questions]


def test_the_agent_answers_requested_samples_it_holds_and_was_not_allocated() -> None:
    problems = load_dataset("synthetic:domains=all,n=8,seed=3")
    pool = {p.id: p for p in problems}
    requested = [problems[0].id, problems[1].id, "not-in-the-pool", problems[2].id]
    asked = requested_problems(requested, pool, [AllocatedSample(problems[1].id)])
    assert [p.id for p in asked] == [problems[0].id, problems[2].id]
    trainer = OracleTrainer(problems[:1])  # knows only the first: the other path is wrong
    picked = answer_requests(trainer, asked)  # type: ignore[arg-type]
    assert picked == {problems[0].id: problems[0].reference}
    assert trainer.asked == [problems[0].question, problems[2].question]


# ---- end to end: the in-process federation --------------------------------------------------
@pytest.mark.slow
def test_a_federation_reaches_samples_the_llm_cannot_solve(
    redis_handle, micro_zoo: ZooManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The micro models write no sound path, so the agent's greedy answers on its home domain
    are replaced by the references (a model that knows its domain); everything else is real."""
    source = load_dataset(ONE_AGENT_SOURCE)
    references = {p.question: p.reference for p in source if p.domain == "rates"}
    real_greedy = LocalTrainer.greedy_answers

    def knows_rates(self: LocalTrainer, questions: Sequence[str]) -> list[str]:
        answers = real_greedy(self, questions)
        return [references.get(q, a) for q, a in zip(questions, answers, strict=True)]

    monkeypatch.setattr(LocalTrainer, "greedy_answers", knows_rates)
    store, agent_id, checkpoints = simulate_one_rates_agent(
        redis_handle, micro_zoo, tmp_path, "requests", contribution_requests=3
    )
    public = {p.id: p for p in load_dataset(f"jsonl:{tmp_path / 'data' / 'public.jsonl'}")}
    answered: set[str] = set()
    for r in (1, 2):
        asked = store.contribution_requests(r, agent_id)
        allocated = {a.sample_id for a in store.get_allocation(r, agent_id)}
        assert len(asked) == 3 and {public[s].domain for s in asked} == {"rates"}
        assert not set(asked) & allocated
        assert checkpoints.load_outcome(r).requested == asked  # it attempted every one
        contributed = {s for a, s, _ in store.contributions(r) if a == agent_id}
        assert set(asked) <= contributed  # ... and its sound paths reached the allocator
        answered |= set(asked)
    assert answered & store.absorbed()  # the LLM absorbed paths on samples it could not solve
    store.wipe()
