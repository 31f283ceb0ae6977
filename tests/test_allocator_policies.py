"""Policies, folding and the LLM direction in-process (no gRPC): the same code the round
driver runs, checked on small hand-made pools."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from allocator.client import cluster_model_from_message
from allocator.core import LLM_LEARNER, AllocatorCore
from allocator.driver import RoundDriver
from allocator.folding import fold_report, report_arrays
from allocator.llm_gateway import Contribution, LLMGateway
from allocator.policies import (
    POLICIES,
    AgentView,
    AllocationRequest,
    LearnerState,
    PolicyContext,
    PoolIndex,
    make_policy,
)
from allocator.service import cluster_model_message
from lada.config import AllocatorConfig, ConfigError, LadaHyperParams
from lada.learnability import assign_clusters, domain_relevance
from lada.state import StateStore
from lada.tasks import Problem, load_dataset
from lada.v1 import allocator_pb2
from llm_service.types import BASE_VERSION
from tests.fixtures_allocator import TEST_POOL, synthetic_stats

PARAMS = LadaHyperParams(num_clusters=1)


def _pool(size: int, clusters: int = 1) -> PoolIndex:
    return PoolIndex([f"s{i}" for i in range(size)], np.arange(size) % clusters, clusters)


def _request(
    pool: PoolIndex,
    agents: list[AgentView],
    unlearnable: np.ndarray | None = None,
    round_number: int = 1,
) -> AllocationRequest:
    mask = np.zeros(len(pool), bool) if unlearnable is None else unlearnable
    return AllocationRequest(round_number, pool, agents, mask, PARAMS, seed=3)


def _agent(
    capacity: int,
    known: Sequence[int] = (),
    gaps: Sequence[float] = (),
    solved: Sequence[bool] = (),
) -> AgentView:
    return AgentView(
        "a",
        capacity,
        LearnerState.fresh(1, PARAMS),
        np.asarray(known, np.int64),
        np.asarray(gaps, float),
        np.asarray(solved or [False] * len(known), bool),
    )


def test_the_method_policies_and_baselines_are_registered_by_name() -> None:
    assert {"full", "random", "home", "lada", "eenet"} <= set(POLICIES)
    with pytest.raises(ValueError, match="policy: unknown policy 'best'; valid: eenet, full, home"):
        make_policy("best")


def test_full_sends_every_sample_to_every_agent() -> None:
    pool = _pool(7)
    chosen = make_policy("full").allocate(_request(pool, [_agent(2)]))
    assert chosen["a"].tolist() == list(range(7))


def test_random_draws_capacity_distinct_samples_reproducibly() -> None:
    pool = _pool(1000)
    policy = make_policy("random")
    first = policy.allocate(_request(pool, [_agent(50)]))["a"]
    again = policy.allocate(_request(pool, [_agent(50)]))["a"]
    later = policy.allocate(_request(pool, [_agent(50)], round_number=2))["a"]
    assert len(set(first.tolist())) == 50
    assert first.tolist() == again.tolist()
    assert first.tolist() != later.tolist()


HOME_DOMAINS = ["purchases", "rates", "units"] * 4  # pool index i has domain i % 3


def _home_policy(store: StateStore) -> Any:
    policy = make_policy("home")
    policy.bind(PolicyContext(store, HOME_DOMAINS))
    return policy


def _home_agent(capacity: int, tags: tuple[str, ...]) -> AgentView:
    return AgentView("a", capacity, LearnerState.fresh(1, PARAMS), domain_tags=tags)


def test_home_draws_only_the_agents_own_domains_while_they_last(store: StateStore) -> None:
    policy, pool = _home_policy(store), _pool(len(HOME_DOMAINS))
    first = policy.allocate(_request(pool, [_home_agent(3, ("rates",))]))["a"]
    again = policy.allocate(_request(pool, [_home_agent(3, ("rates",))]))["a"]
    assert len(set(first.tolist())) == 3
    assert all(HOME_DOMAINS[i] == "rates" for i in first)
    assert first.tolist() == again.tolist()


def test_home_tops_up_from_other_domains_when_its_own_run_short(store: StateStore) -> None:
    chosen = _home_policy(store).allocate(
        _request(_pool(len(HOME_DOMAINS)), [_home_agent(6, ("rates",))])
    )["a"]
    domains = Counter(HOME_DOMAINS[i] for i in chosen)
    assert len(set(chosen.tolist())) == 6
    assert domains["rates"] == 4  # all of them, then 2 from the rest
    assert domains["purchases"] + domains["units"] == 2


def test_home_refuses_to_allocate_before_it_knows_the_pools_domains() -> None:
    with pytest.raises(RuntimeError, match="policy home: not bound"):
        make_policy("home").allocate(_request(_pool(4), [_home_agent(2, ("rates",))]))


def test_lada_prefers_the_band_over_known_samples_outside_it() -> None:
    # known gaps 0..9: band q(0.2)=1.8 .. q(0.8)=7.2; unknown samples impute the median 4.5
    chosen = make_policy("lada").allocate(
        _request(_pool(40), [_agent(30, range(10), [float(g) for g in range(10)])])
    )["a"]
    assert len(chosen) == 30
    assert not {0, 1, 8, 9} & set(chosen.tolist())
    assert {2, 3, 4, 5, 6, 7} & set(chosen.tolist())


def test_lada_skips_samples_the_agent_solves_below_the_band() -> None:
    solved = [True, True] + [False] * 8
    chosen = make_policy("lada").allocate(
        _request(_pool(40), [_agent(40, range(10), [float(g) for g in range(10)], solved)])
    )["a"]
    assert sorted(chosen.tolist()) == list(range(2, 40))


def test_lada_never_allocates_samples_without_a_correct_llm_path() -> None:
    unlearnable = np.zeros(40, bool)
    unlearnable[[11, 12, 13]] = True
    chosen = make_policy("lada").allocate(_request(_pool(40), [_agent(40)], unlearnable))["a"]
    assert len(chosen) == 37 and not {11, 12, 13} & set(chosen.tolist())


def test_lada_round_one_is_even_across_clusters() -> None:
    pool = _pool(400, clusters=8)
    params = LadaHyperParams(num_clusters=8)
    agent = AgentView("a", 24, LearnerState.fresh(8, params))
    request = AllocationRequest(1, pool, [agent], np.zeros(400, bool), params)
    chosen = make_policy("lada").allocate(request)["a"]
    assert Counter(pool.clusters[chosen].tolist()) == {c: 3 for c in range(8)}


@pytest.mark.parametrize(
    ("split", "shares"), [("even", [5, 5, 5, 5]), ("proportional", [12, 4, 2, 2])]
)
def test_lada_round_one_split_follows_first_round_split(split: str, shares: list[int]) -> None:
    """Clusters of 120 / 40 / 20 / 20 samples, 20 to allocate: `even` (the method) gives each
    cluster 5; `proportional` gives what a uniform draw would, 10% of each."""
    sizes = [120, 40, 20, 20]
    pool = PoolIndex([f"s{i}" for i in range(200)], np.repeat(np.arange(4), sizes), 4)
    params = LadaHyperParams(num_clusters=4, first_round_split=split)
    agent = AgentView("a", 20, LearnerState.fresh(4, params))
    request = AllocationRequest(1, pool, [agent], np.zeros(200, bool), params)
    chosen = make_policy("lada").allocate(request)["a"]
    assert [Counter(pool.clusters[chosen].tolist())[c] for c in range(4)] == shares


def test_proportional_first_round_split_leaves_an_agent_with_pulls_to_ucb() -> None:
    """Only agents with no pull yet are split in proportion; one with rewards follows its arms
    (cluster 1 earned 4.0 over 2 pulls: it takes the whole budget, as under `even`)."""
    pool = PoolIndex([f"s{i}" for i in range(200)], np.repeat(np.arange(4), [120, 40, 20, 20]), 4)
    params = LadaHyperParams(num_clusters=4, first_round_split="proportional")
    learner = LearnerState(np.array([0.0, 4.0, 0.0, 0.0]), np.full(4, 2.0), 0.2, 0.8)
    agents = [AgentView("old", 8, learner), AgentView("new", 8, LearnerState.fresh(4, params))]
    request = AllocationRequest(2, pool, agents, np.zeros(200, bool), params)
    chosen = make_policy("lada").allocate(request)
    assert Counter(pool.clusters[chosen["old"]].tolist()) == {1: 8}
    assert [Counter(pool.clusters[chosen["new"]].tolist())[c] for c in range(4)] == [5, 1, 1, 1]


def test_an_unknown_first_round_split_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="lada.first_round_split: 'uniform'"):
        LadaHyperParams(first_round_split="uniform").check()


@pytest.mark.parametrize(("prior_pulls", "flipped_cluster_share"), [(0.0, 19), (8.0, 6)])
def test_lada_round_two_follows_a_single_flip_unless_arm_means_are_shrunk(
    prior_pulls: float, flipped_cluster_share: int
) -> None:
    """Round 2 after a report of 3 samples per cluster, one of which flipped to right in
    cluster 2: without shrinkage it takes all 19 samples of that cluster;
    `lada.arm_prior_pulls` reaches the policy's quotas."""
    pool = _pool(16 * 19, clusters=16)
    params = LadaHyperParams(num_clusters=16, arm_prior_pulls=prior_pulls)
    reward_sum = np.full(16, 0.06)
    reward_sum[2] += 1.0
    learner = LearnerState(reward_sum, np.full(16, 3.0), 0.2, 0.8)
    agent = AgentView("a", 45, learner)
    request = AllocationRequest(2, pool, [agent], np.zeros(len(pool), bool), params)
    chosen = make_policy("lada").allocate(request)["a"]
    assert len(chosen) == 45
    assert Counter(pool.clusters[chosen].tolist())[2] == flipped_cluster_share


# ---- folding --------------------------------------------------------------------------------
def test_folding_adds_rewards_to_the_sample_clusters_and_records_post_training_gaps() -> None:
    pool = _pool(4, clusters=2)
    stats = [
        allocator_pb2.SampleStats(
            sample_id="s0",
            paths=[
                allocator_pb2.PathStats(
                    llm_normalized_logprob=-0.5,
                    correct=True,
                    slm_normalized_logprob_before=-2.0,
                    slm_normalized_logprob_after=-1.25,
                )
            ],
            correct_before=False,
            correct_after=True,
        ),
        allocator_pb2.SampleStats(
            sample_id="s1",
            paths=[
                allocator_pb2.PathStats(
                    llm_normalized_logprob=-0.4,
                    correct=False,
                    slm_normalized_logprob_before=-1.0,
                    slm_normalized_logprob_after=-1.0,
                )
            ],
        ),
    ]
    params = LadaHyperParams(num_clusters=2)
    result = fold_report(
        LearnerState.fresh(2, params), np.zeros(0), report_arrays(stats), pool, params
    )
    # s0: 0.75 progress on its correct path + 1.0 greedy flip; s1: no correct path, no flip
    assert result.learner.reward_sum.tolist() == [1.75, 0.0]
    assert result.learner.pulls.tolist() == [1.0, 1.0]
    assert result.gaps == {"s0": "0.75|1", "s1": "nan|0"}
    assert result.llm_acc == {"s0": "1/1", "s1": "0/1"}


# ---- the cluster model agents download -------------------------------------------------------
@pytest.fixture(scope="module")
def test_problems() -> list[Problem]:
    return load_dataset(TEST_POOL)


def _core(store: StateStore, problems: list[Problem], **overrides: Any) -> AllocatorCore:
    config = AllocatorConfig(
        public_pool=TEST_POOL, run_id=store.run_id, lada=LadaHyperParams(num_clusters=4)
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return AllocatorCore(store, config, problems)


def test_public_clusters_separate_the_synthetic_domains(
    store: StateStore, test_problems: list[Problem]
) -> None:
    core = _core(store, test_problems)
    pairs = Counter(
        zip(core.pool.clusters.tolist(), [p.domain for p in test_problems], strict=True)
    )
    assert len(pairs) == 4  # each of the 4 clusters holds exactly one domain
    assert core.cluster_model.pool_share.sum() == pytest.approx(1.0)


def test_the_downloaded_cluster_model_assigns_texts_like_the_allocator(
    store: StateStore,
    test_problems: list[Problem],
) -> None:
    core = _core(store, test_problems)
    model = cluster_model_from_message(cluster_model_message(core.cluster_model))
    local = assign_clusters(
        model, [p.question for p in test_problems], [p.domain for p in test_problems]
    )
    assert local.tolist() == core.pool.clusters.tolist()


def test_the_round_driver_hands_home_each_agents_registered_domains(
    store: StateStore, test_problems: list[Problem]
) -> None:
    core = _core(store, test_problems, policy="home", min_agents=2)
    tags = {"a": ["rates"], "b": ["purchases", "units"]}
    ids = {}
    for name, domains in tags.items():
        _, secret, _ = core.invite(name, 0)
        ids[name] = core.register(name, "", "", domains, 20, core.fingerprint, secret).record
    driver = RoundDriver(core)
    driver.step()
    driver.step()  # open, allocate
    domain_of = {p.id: p.domain for p in test_problems}
    for name, record in ids.items():
        sent = [domain_of[s.sample_id] for s in core.allocation(record.agent_id, 1).samples]
        assert len(sent) == 20
        assert set(sent) <= set(tags[name])


def test_a_foreign_samples_reward_reaches_the_arms_at_the_configured_scale(
    store: StateStore, test_problems: list[Problem]
) -> None:
    """`lada.foreign_reward_scale=0.25`: an agent of `rates` that earned 1.0 on every sample
    banks 1.0 per `rates` sample and 0.25 per sample of another domain, cluster by cluster."""
    core = _core(store, test_problems, policy="random")
    core.config.lada.foreign_reward_scale = 0.25
    _, secret, _ = core.invite("a", 0)
    record = core.register("a", "", "", ["rates"], 40, core.fingerprint, secret).record
    driver = RoundDriver(core)
    driver.step()
    driver.step()  # open, allocate
    samples = core.allocation(record.agent_id, 1).samples
    core.report(record.agent_id, 1, synthetic_stats(samples, lambda c: 1.0))
    assert driver.fold(1)
    domain_of = {p.id: p.domain for p in test_problems}
    weights = [1.0 if domain_of[s.sample_id] == "rates" else 0.25 for s in samples]
    assert 0 < weights.count(1.0) < len(samples)  # both kinds were allocated
    clusters = [core.pool.clusters[core.pool.index_of[s.sample_id]] for s in samples]
    expected = np.bincount(clusters, weights=weights, minlength=core.pool.num_clusters)
    learner = core.learner(record.agent_id)
    assert learner.reward_sum == pytest.approx(expected)
    assert learner.pulls.sum() == len(samples)


def test_domain_relevance_weighs_only_what_an_agent_with_domains_calls_foreign() -> None:
    domains = ["rates", "units", "purchases"]
    assert domain_relevance(domains, ["rates", "units"], 0.25).tolist() == [1.0, 1.0, 0.25]
    assert domain_relevance(domains, [], 0.25).tolist() == [1.0, 1.0, 1.0]


def test_a_foreign_reward_scale_outside_zero_to_one_is_refused_naming_the_field() -> None:
    with pytest.raises(
        ConfigError, match="lada.foreign_reward_scale: must be in \\[0, 1\\], got 1.5"
    ):
        LadaHyperParams(foreign_reward_scale=1.5).check()


def test_a_second_replica_reuses_the_stored_clustering(
    store: StateStore, test_problems: list[Problem]
) -> None:
    first = _core(store, test_problems)
    second = _core(store, test_problems, seed=99)
    assert second.pool.clusters.tolist() == first.pool.clusters.tolist()


# ---- the LLM direction -------------------------------------------------------------------------
class ScriptedLLM(LLMGateway):
    """A stand-in for the LLM service (the real one needs a model): fixed nlp per sample,
    better by 1.5 on everything after absorbing."""

    def __init__(self, nlp: dict[str, float]) -> None:
        self.nlp = nlp
        self.absorbed: list[list[Contribution]] = []

    def serving_version(self) -> str:
        return f"v{len(self.absorbed)}"

    def score(self, sample_id: str, completions: Sequence[str], version: str = "") -> list[float]:
        bonus = 1.5 if version and version != "v0" else 0.0
        return [self.nlp[sample_id] + bonus for _ in completions]

    def accuracy(
        self, sample_ids: Sequence[str], paths: int, temperature: float, version: str = ""
    ) -> dict[str, str]:
        return {s: "0/4" for s in sample_ids}

    def absorb(self, contributions: Sequence[Contribution]) -> str:
        self.absorbed.append(list(contributions))
        return self.serving_version()


class GreedyRightLLM(ScriptedLLM):
    """Right greedily on `right`, though every sampled path is wrong (0/4); a version other
    than the base (an adapter behind its gate) is right greedily on `serving_right`."""

    def __init__(
        self, nlp: dict[str, float], right: set[str], serving_right: set[str] | None = None
    ) -> None:
        super().__init__(nlp)
        self.right = right
        self.serving_right = right if serving_right is None else serving_right
        self.greedy_asked: list[list[str]] = []

    def accuracy(
        self, sample_ids: Sequence[str], paths: int, temperature: float, version: str = ""
    ) -> dict[str, str]:
        if (paths, temperature) != (1, 0.0):
            return super().accuracy(sample_ids, paths, temperature, version)
        self.greedy_asked.append(list(sample_ids))
        base = (version or self.serving_version()) == BASE_VERSION
        right = self.right if base else self.serving_right
        return {s: f"{int(s in right)}/1" for s in sample_ids}


def _reported_round_one(core: AllocatorCore, llm: ScriptedLLM) -> tuple[str, RoundDriver]:
    """One agent registered, round 1 opened and allocated, and its report in: (agent, driver)."""
    _, secret, _ = core.invite("a", 0)
    record = core.register("a", "", "", [], 3, core.fingerprint, secret).record
    driver = RoundDriver(core, llm)
    driver.step()
    driver.step()  # open, allocate
    samples = core.allocation(record.agent_id, 1).samples
    report = synthetic_stats(
        [allocator_pb2.AllocatedSample(sample_id=s.sample_id) for s in samples]
    )
    core.report(record.agent_id, 1, report)
    return record.agent_id, driver


def _absorbed_after_one_round(
    store: StateStore, test_problems: list[Problem], llm: ScriptedLLM, greedy_check: bool
) -> list[str]:
    """Contribute test_problems[0:2]'s references in a one-round run; what the LLM absorbed."""
    core = _core(store, test_problems, min_agents=1, rounds=1)
    core.config.lada.novelty_greedy_check = greedy_check
    agent_id, driver = _reported_round_one(core, llm)
    core.contribute(agent_id, 1, [(p.id, p.reference) for p in test_problems[:2]])
    while store.round_phase(1).value != "CLOSED":
        driver.step()
    return [c.sample_id for batch in llm.absorbed for c in batch]


def test_a_sample_the_llm_answers_right_greedily_is_not_novel(
    store: StateStore, test_problems: list[Problem]
) -> None:
    """Its sampled paths are all wrong (0/4), but greedy decoding knows it: nothing to learn."""
    known, unknown = test_problems[0], test_problems[1]
    llm = GreedyRightLLM({known.id: -2.0, unknown.id: -1.0}, right={known.id})
    assert _absorbed_after_one_round(store, test_problems, llm, True) == [unknown.id]
    assert sorted(llm.greedy_asked[0]) == sorted([known.id, unknown.id])


def test_the_greedy_check_asks_the_base_model_not_an_adapter_that_errs_where_it_is_sent(
    store: StateStore, test_problems: list[Problem]
) -> None:
    """An earlier absorb serves an adapter that gets `known` wrong greedily, though the base
    answers it right: the adapter's error is not knowledge the LLM lacks."""
    known, unknown = test_problems[0], test_problems[1]
    llm = GreedyRightLLM({known.id: -2.0, unknown.id: -1.0}, right={known.id}, serving_right=set())
    llm.absorbed.append([])  # serving "v1" from the start
    assert _absorbed_after_one_round(store, test_problems, llm, True) == [unknown.id]


def test_without_the_greedy_check_sampled_accuracy_alone_decides_novelty(
    store: StateStore, test_problems: list[Problem]
) -> None:
    known, unknown = test_problems[0], test_problems[1]
    llm = GreedyRightLLM({known.id: -2.0, unknown.id: -1.0}, right={known.id})
    absorbed = _absorbed_after_one_round(store, test_problems, llm, False)
    assert sorted(absorbed) == sorted([known.id, unknown.id])
    assert llm.greedy_asked == []


def test_the_llm_absorbs_the_most_novel_contributions_where_it_is_weak(
    store: StateStore,
    test_problems: list[Problem],
) -> None:
    core = _core(store, test_problems, min_agents=1, rounds=1)
    core.config.lada.llm_budget = 1
    novel, familiar, strong = test_problems[0], test_problems[1], test_problems[2]
    llm = ScriptedLLM({novel.id: -2.0, familiar.id: -0.3, strong.id: -3.0})
    agent_id, driver = _reported_round_one(core, llm)
    # The LLM got 3/4 paths right on `strong` (per an agent's report): not counted as novel.
    store.fold_round(0, {}, {}, {strong.id: "3/4"})
    accepted = core.contribute(
        agent_id,
        1,
        [(novel.id, novel.reference), (familiar.id, familiar.reference), (strong.id, "#### -1")],
    )
    assert (accepted.accepted, accepted.rejected_incorrect) == (2, 1)
    while store.round_phase(1).value != "CLOSED":
        driver.step()
    assert [[c.sample_id for c in batch] for batch in llm.absorbed] == [[novel.id]]
    assert store.absorbed() == {novel.id}
    assert store.llm_version() == "v1"
    llm_arms = core.learner(LLM_LEARNER)
    cluster = core.pool.clusters[core.pool.index_of[novel.id]]
    assert llm_arms.pulls[cluster] == 1 and llm_arms.reward_sum[cluster] == pytest.approx(1.5)
    assert llm_arms.pulls.sum() == 1
