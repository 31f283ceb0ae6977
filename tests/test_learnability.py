"""The LaDa math (docs/method.md sections 1-3) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lada.learnability import (
    ClusterModel,
    arm_quotas,
    assign_clusters,
    band_distance,
    band_gap_bounds,
    best_correct_path,
    domain_weights,
    impute_unknown_gaps,
    learnability_gaps,
    llm_accuracy,
    novelty_scores,
    proportional_quotas,
    sample_rewards,
    select_in_band,
    select_novel,
    shrunk_means,
    skip_solved,
    tfidf_matrix,
    ucb_scores,
    update_band,
)

NAN = float("nan")


# ---- gap --------------------------------------------------------------------------------
def test_gap_is_the_mean_llm_minus_slm_over_correct_paths_only() -> None:
    llm = np.array([[-0.5, -1.0, -2.0]])
    slm = np.array([[-1.5, -3.0, -2.5]])
    correct = np.array([[True, True, False]])
    # (-0.5 - -1.5) = 1.0 and (-1.0 - -3.0) = 2.0; the incorrect path is ignored.
    assert learnability_gaps(llm, slm, correct).tolist() == [1.5]


def test_gap_is_undefined_when_the_llm_has_no_correct_path() -> None:
    gaps = learnability_gaps(
        np.array([[-0.5, -1.0], [-0.2, -0.4]]),
        np.array([[-1.0, -1.0], [-1.0, -1.0]]),
        np.array([[False, False], [False, True]]),
    )
    assert math.isnan(gaps[0])
    assert gaps[1] == pytest.approx(0.6)


def test_gap_ignores_nan_padding_of_shorter_path_lists() -> None:
    llm = np.array([[-1.0, NAN]])
    slm = np.array([[-2.5, NAN]])
    assert learnability_gaps(llm, slm, np.array([[True, False]])).tolist() == [1.5]


# ---- reward -----------------------------------------------------------------------------
def test_best_correct_path_is_the_one_the_llm_is_most_confident_in() -> None:
    llm = np.array([[-0.5, -0.2, -0.1], [-0.3, -0.3, -0.3]])
    correct = np.array([[True, True, False], [False, False, False]])
    assert best_correct_path(llm, correct).tolist() == [1, -1]


def test_reward_is_progress_on_best_path_plus_greedy_flip() -> None:
    reward = sample_rewards(
        llm_nlp=np.array([[-0.5, -0.2]]),
        slm_before=np.array([[-2.0, -3.0]]),
        slm_after=np.array([[-1.5, -2.0]]),
        correct=np.array([[True, True]]),
        correct_before=np.array([False]),
        correct_after=np.array([True]),
    )
    # y* = path 1 (nlp_L -0.2): -2.0 - -3.0 = 1.0, plus 1.0 * (1 - 0).
    assert reward.tolist() == [2.0]


def test_reward_without_correct_llm_path_is_the_greedy_term_only() -> None:
    reward = sample_rewards(
        llm_nlp=np.array([[-0.5, -0.2]]),
        slm_before=np.array([[-2.0, -3.0]]),
        slm_after=np.array([[-1.0, -1.0]]),
        correct=np.array([[False, False]]),
        correct_before=np.array([True]),
        correct_after=np.array([False]),
        correctness_weight=0.5,
    )
    assert reward.tolist() == [-0.5]


def test_llm_accuracy_is_the_fraction_of_correct_paths() -> None:
    correct = np.array([[True, False, False, False], [False, False, False, False]])
    acc = llm_accuracy(correct, np.array([4, 0]))
    assert acc[0] == 0.25
    assert math.isnan(acc[1])


# ---- UCB --------------------------------------------------------------------------------
def test_ucb_scores_match_the_formula() -> None:
    scores = ucb_scores(np.array([2.0, 0.0, 0.0]), np.array([4.0, 0.0, 1.0]), alpha=0.5)
    # N = 5, ln(6) = 1.7917595: 0.5 + 0.5*sqrt(1.79176/5), 0.5*sqrt(1.79176), 0.5*sqrt(1.79176/2)
    assert scores == pytest.approx([0.7993125, 0.6692831, 0.4732546], abs=1e-6)


def test_a_never_pulled_cluster_gets_the_full_exploration_bonus() -> None:
    scores = ucb_scores(np.array([[3.0, 0.0]]), np.array([[3.0, 0.0]]), alpha=1.0)
    assert scores[0, 1] == pytest.approx(math.sqrt(math.log(4.0)))
    assert scores[0, 0] == pytest.approx(1.0 + math.sqrt(math.log(4.0) / 4.0))


def test_round_one_splits_the_budget_evenly_across_clusters() -> None:
    quotas = arm_quotas(np.zeros(4), np.zeros(4), 0.5, budget=8, available=np.full(4, 10))
    assert quotas.tolist() == [[2, 2, 2, 2]]


def test_a_rewarding_cluster_takes_the_budget() -> None:
    quotas = arm_quotas(
        np.array([0.0, 4.0, 0.0, 0.0]), np.full(4, 2.0), 0.5, budget=8, available=np.full(4, 10)
    )
    assert quotas.tolist() == [[0, 8, 0, 0]]


def test_quotas_respect_what_a_cluster_has_left() -> None:
    quotas = arm_quotas(
        np.array([0.0, 4.0, 0.0, 0.0]),
        np.full(4, 2.0),
        0.5,
        budget=8,
        available=np.array([10, 3, 10, 10]),
    )
    assert quotas.tolist() == [[2, 3, 2, 1]]


def test_quotas_never_exceed_the_pool() -> None:
    quotas = arm_quotas(np.zeros((2, 2)), np.zeros((2, 2)), 0.5, np.array([10, 1]), np.ones((2, 2)))
    assert quotas.tolist() == [[1, 1], [1, 0]]


def one_flip_arms() -> tuple[np.ndarray, np.ndarray]:
    """16 arms of 3 pulls earning 0.02 nlp progress a sample; arm 2 also had one greedy flip
    to right, arm 7 one back to wrong (what a round-1 report looks like, docs/results.md)."""
    reward_sum = np.full(16, 0.06)
    reward_sum[2] += 1.0
    reward_sum[7] -= 1.0
    return reward_sum, np.full(16, 3.0)


def test_one_greedy_flip_fills_its_arm_to_the_cap_under_the_methods_means() -> None:
    quotas = arm_quotas(*one_flip_arms(), 0.5, budget=45, available=np.full(16, 16))[0]
    assert (quotas[2], quotas[7]) == (16, 0)


def test_prior_pulls_keep_one_flip_from_deciding_an_arm() -> None:
    quotas = arm_quotas(
        *one_flip_arms(), 0.5, budget=45, available=np.full(16, 16), prior_pulls=8.0
    )[0]
    assert (quotas[2], quotas[7], quotas.sum()) == (6, 1, 45)


def test_proportional_quotas_follow_each_clusters_available_samples() -> None:
    # 45 of 150: exactly 30% of each cluster, 27 / 9 / 6 / 3
    quotas = proportional_quotas(45, np.array([[90, 30, 20, 10]]))
    assert quotas.tolist() == [[27, 9, 6, 3]]


def test_proportional_quotas_give_the_leftover_to_the_largest_remainders() -> None:
    # 10 of 16: 6.25 / 1.875 / 1.25 / 0.625 -> floors 6 / 1 / 1 / 0, two left for 1.875, 0.625
    quotas = proportional_quotas(10, np.array([[10, 3, 2, 1]]))
    assert quotas.tolist() == [[6, 2, 1, 1]]


def test_proportional_quotas_never_exceed_the_pool() -> None:
    quotas = proportional_quotas(np.array([10, 2]), np.array([[1, 2], [0, 5]]))
    assert quotas.tolist() == [[1, 2], [0, 2]]


def test_shrunk_means_pull_each_arm_toward_the_agents_mean() -> None:
    # overall 3/4: (3 + 2 * 0.75) / (3 + 2) and (0 + 2 * 0.75) / (1 + 2)
    assert shrunk_means(np.array([3.0, 0.0]), np.array([3.0, 1.0]), 2.0) == pytest.approx(
        [0.9, 0.5]
    )
    assert shrunk_means(np.array([3.0, 0.0]), np.array([3.0, 1.0]), 0.0).tolist() == [1.0, 0.0]


# ---- band -------------------------------------------------------------------------------
def test_band_bounds_are_quantiles_of_known_gaps() -> None:
    low, high = band_gap_bounds(np.array([0.0, 1.0, 2.0, 3.0, 4.0, NAN]), 0.25, 0.75)
    assert (low, high) == (1.0, 3.0)


def test_with_no_known_gap_everything_is_in_band() -> None:
    low, high = band_gap_bounds(np.array([NAN]), 0.2, 0.8)
    assert band_distance(np.array([-5.0, 5.0]), low, high).tolist() == [0.0, 0.0]


def test_band_moves_up_when_its_upper_third_earns_more() -> None:
    q = update_band(0.2, 0.8, np.array([1.5, 3.5]), np.array([0.1, 0.9]), 1.0, 4.0, step=0.05)
    assert q == (0.25, 0.85)


def test_band_moves_down_when_its_lower_third_earns_as_much_or_more() -> None:
    q = update_band(0.2, 0.8, np.array([1.5, 3.5]), np.array([0.9, 0.1]), 1.0, 4.0, step=0.05)
    assert q == (0.15, 0.75)
    tie = update_band(0.2, 0.8, np.array([1.5, 3.5]), np.array([0.5, 0.5]), 1.0, 4.0)
    assert tie == (0.15, 0.75)


def test_band_stays_inside_zero_one_keeping_its_width() -> None:
    assert update_band(0.22, 0.98, np.array([1.5, 3.5]), np.array([0, 1.0]), 1, 4) == (0.24, 1.0)
    assert update_band(0.0, 0.6, np.array([1.5, 3.5]), np.array([1.0, 0]), 1, 4) == (0.0, 0.6)


def test_band_stays_put_when_a_third_has_no_evidence() -> None:
    q = update_band(0.2, 0.8, np.array([1.5, 1.8]), np.array([0.1, 0.9]), 1.0, 4.0)
    assert q == (0.2, 0.8)


def test_band_stays_put_when_all_gaps_are_equal() -> None:
    gaps = np.full(5, 2.0)
    low, high = band_gap_bounds(gaps, 0.2, 0.8)
    assert (low, high) == (2.0, 2.0)
    assert update_band(0.2, 0.8, gaps, np.arange(5.0), low, high) == (0.2, 0.8)


def test_selection_takes_in_band_samples_first_then_the_nearest() -> None:
    rng = np.random.default_rng(0)
    chosen = select_in_band(np.array([5.0, 1.5, 0.2, 2.5]), 3, 1.0, 3.0, rng)
    assert set(chosen[:2].tolist()) == {1, 3}
    assert chosen[2] == 2  # distance 0.8 beats 2.0


def test_selection_with_all_gaps_equal_takes_the_quota_without_repeats() -> None:
    chosen = select_in_band(np.full(6, 2.0), 4, 2.0, 2.0, np.random.default_rng(1))
    assert len(set(chosen.tolist())) == 4


def test_solved_samples_below_the_band_are_skipped() -> None:
    skipped = skip_solved(np.array([0.1, 0.1, 2.0, NAN]), np.array([True, False, True, True]), 0.5)
    assert skipped.tolist() == [True, False, False, False]


def test_unknown_gaps_take_the_cluster_median_then_the_overall_median() -> None:
    imputed = impute_unknown_gaps(np.array([1.0, 3.0, 5.0, 10.0]), np.array([0, 0, 0, 1]), 3)
    assert imputed.tolist() == [3.0, 10.0, 4.0]
    assert math.isnan(impute_unknown_gaps(np.array([]), np.array([], int), 2)[0])


# ---- LLM direction ----------------------------------------------------------------------
def test_novelty_is_minus_llm_nlp_where_the_llm_is_mostly_wrong() -> None:
    novelty = novelty_scores(np.array([-0.5, -2.0, -1.0, -1.0]), np.array([0.25, 0.0, 0.75, NAN]))
    assert novelty[:2].tolist() == [0.5, 2.0]
    assert math.isnan(novelty[2]) and math.isnan(novelty[3])


def test_novel_selection_is_top_budget_deduplicated_and_skips_absorbed() -> None:
    chosen = select_novel(["a", "b", "b", "c", "d"], np.array([1.0, 3.0, 2.0, 5.0, NAN]), {"c"}, 2)
    assert chosen.tolist() == [1, 0]


def test_novel_selection_never_picks_uncounted_contributions() -> None:
    chosen = select_novel(["a", "b"], np.array([NAN, NAN]), set(), 5)
    assert chosen.tolist() == []


# ---- domain weight ----------------------------------------------------------------------
def test_domain_weight_is_private_share_over_pool_share_clipped() -> None:
    weights = domain_weights(np.array([6, 2, 2, 0]), np.full(4, 0.25), 0.25, 4.0)
    assert weights.tolist() == pytest.approx([2.4, 0.8, 0.8, 0.25])
    assert domain_weights(np.array([1, 0]), np.array([0.1, 0.9])).tolist() == [4.0, 0.25]


def test_an_agent_without_private_samples_weighs_everything_one() -> None:
    assert domain_weights(np.zeros(3), np.full(3, 1 / 3)).tolist() == [1.0, 1.0, 1.0]


# ---- cluster model ----------------------------------------------------------------------
def test_tfidf_rows_are_l2_normalised_counts_times_idf() -> None:
    row = tfidf_matrix(["Apple apple car x"], ["apple", "car"], np.array([1.0, 2.0]))[0]
    # counts (2, 1) * idf (1, 2) = (2, 2), normalised by sqrt(8)
    assert row.tolist() == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2)])


def test_texts_go_to_the_nearest_centroid() -> None:
    model = ClusterModel(
        vocabulary=["apple", "car"],
        idf=np.ones(2),
        domains=["fruit", "road"],
        centroids=np.array([[1.0, 0.0, 0.5, 0.0, 0.5], [0.0, 1.0, 0.0, 0.5, 0.5]]),
        pool_share=np.array([0.5, 0.5]),
        domain_weight=0.5,
    )
    clusters = assign_clusters(model, ["an apple", "a car", "car"], ["fruit", "road", "fruit"])
    # "car" tagged fruit = (0, 1, 0.5, 0, 0.5): squared distance 2.0 to cluster 0, 0.5 to 1
    assert clusters.tolist() == [0, 1, 1]
