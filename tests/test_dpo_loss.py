"""The `dpo` loss (method.md section 5) against hand-computed values, and one real round."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import Tensor

from lada.config import LadaHyperParams
from lada.tasks import Problem
from lada.zoo import ZooManifest
from slm_agent.losses import DpoLoss, PathSet, PrivateExample, make_loss
from tests.test_agent_trainer import contrast_set, margin, trainer_for


def neg_logsigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


class JointScorer:
    """A student whose joint lp_S per (prompt, completion) is a learnable table entry."""

    def __init__(self, table: dict[tuple[str, str], float], private_nll: float = 0.0) -> None:
        self.keys = list(table)
        self.values = torch.tensor(list(table.values()), dtype=torch.float64, requires_grad=True)
        self.private_nll = torch.tensor(private_nll, dtype=torch.float64)
        self.scored: list[tuple[str, str]] = []

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        pairs = list(zip(prompts, completions, strict=True))
        self.scored.extend(pairs)
        return self.values[[self.keys.index(pair) for pair in pairs]]

    def normalized_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        raise AssertionError("dpo contrasts joint log-probabilities, not normalised ones")

    def token_nll(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        return self.private_nll

    def shift(self, pair: tuple[str, str], by: float) -> None:
        with torch.no_grad():
            self.values[self.keys.index(pair)] += by


def one_pair() -> tuple[JointScorer, list[PathSet]]:
    scorer = JointScorer({("A", "right"): -10.0, ("A", "wrong"): -12.0}, private_nll=0.25)
    return scorer, [PathSet("A", ["right", "wrong"], [-0.5, -0.9], [True, False])]


def test_dpo_is_registered_by_name_with_beta_from_the_config() -> None:
    loss = make_loss("dpo", LadaHyperParams(dpo_beta=0.3))
    assert isinstance(loss, DpoLoss)
    assert loss.hyper.dpo_beta == 0.3
    assert LadaHyperParams().dpo_beta == 0.1


def test_dpo_is_log_two_while_the_student_is_its_own_reference() -> None:
    scorer, sets = one_pair()
    out = DpoLoss(LadaHyperParams()).compute_loss(scorer, sets, [PrivateExample("p", " c")])
    # every margin is 0: -log sigmoid(0) = log 2
    assert out.parts["dpo"] == pytest.approx(math.log(2))
    assert out.parts["reward_margin"] == 0.0
    assert out.parts["total"] == pytest.approx(0.25 + math.log(2))


def test_dpo_measures_the_margin_against_the_model_frozen_at_the_start_of_the_round() -> None:
    scorer, sets = one_pair()
    loss = DpoLoss(LadaHyperParams())
    loss.begin_round(scorer, sets)
    scorer.shift(("A", "right"), +1.0)
    scorer.shift(("A", "wrong"), -1.0)
    out = loss.compute_loss(scorer, sets, [])
    # beta * [(+1) - (-1)] = 0.2
    assert out.parts["dpo"] == pytest.approx(neg_logsigmoid(0.2))
    assert out.parts["reward_margin"] == pytest.approx(0.2)
    loss.begin_round(scorer, sets)  # the next round freezes the moved model
    assert loss.compute_loss(scorer, sets, []).parts["dpo"] == pytest.approx(math.log(2))


def test_beta_scales_the_margin() -> None:
    scorer, sets = one_pair()
    loss = DpoLoss(LadaHyperParams(dpo_beta=0.5))
    loss.begin_round(scorer, sets)
    scorer.shift(("A", "right"), +1.0)
    scorer.shift(("A", "wrong"), -1.0)
    assert loss.compute_loss(scorer, sets, []).parts["dpo"] == pytest.approx(neg_logsigmoid(1.0))


def test_dpo_gradient_raises_the_correct_path_over_the_incorrect_one() -> None:
    scorer, sets = one_pair()
    loss = DpoLoss(LadaHyperParams())
    loss.compute_loss(scorer, sets, []).total.backward()
    assert scorer.values.grad is not None
    # d/d lp(y+) = -beta * sigmoid(0) = -0.05; d/d lp(y-) = +0.05
    assert scorer.values.grad.tolist() == pytest.approx([-0.05, 0.05])
    optimizer = torch.optim.SGD([scorer.values], lr=10.0)
    for _ in range(3):
        optimizer.zero_grad()
        loss.compute_loss(scorer, sets, []).total.backward()
        optimizer.step()
    right, wrong = scorer.values.detach().tolist()
    assert right - wrong > 2.0  # wider than the reference's gap of 2


def test_dpo_averages_every_pair_and_weights_samples_like_contrastive() -> None:
    scorer = JointScorer(
        {
            ("A", "a+"): -5.0,
            ("A", "a-"): -5.0,
            ("A", "own-"): -5.0,
            ("B", "b+"): -5.0,
            ("B", "b-"): -5.0,
        }
    )
    sets = [
        PathSet("A", ["a+", "a-"], [-0.5, -0.2], [True, False], ["own-"], weight=1.0),
        PathSet("B", ["b+", "b-"], [-0.3, -0.4], [True, False], weight=3.0),
    ]
    loss = DpoLoss(LadaHyperParams(dpo_beta=1.0))
    loss.begin_round(scorer, sets)
    scorer.shift(("A", "a+"), 1.0)  # A: margins vs a- and own- are both 1
    scorer.shift(("B", "b-"), 2.0)  # B: margin -2
    out = loss.compute_loss(scorer, sets, [])
    expected = (1.0 * neg_logsigmoid(1.0) + 3.0 * neg_logsigmoid(-2.0)) / 4.0
    assert out.parts["dpo"] == pytest.approx(expected)
    assert out.parts["reward_margin"] == pytest.approx((1.0 * 1.0 + 3.0 * -2.0) / 4.0)


def test_own_incorrect_paths_serve_as_the_incorrect_side_of_a_pair() -> None:
    scorer = JointScorer({("A", "a+"): -3.0, ("A", "own-"): -4.0})
    sets = [PathSet("A", ["a+"], [-0.5], [True], ["own-"])]
    out = DpoLoss(LadaHyperParams()).compute_loss(scorer, sets, [])
    assert out.parts["dpo"] == pytest.approx(math.log(2))


def test_samples_without_both_a_correct_and_an_incorrect_path_are_skipped_unscored() -> None:
    scorer, sets = one_pair()
    only_right = PathSet("C", ["c+", "c++"], [-0.1, -0.2], [True, True], weight=100.0)
    only_wrong = PathSet("D", ["d-"], [-0.1], [False], own_negatives=["d--"], weight=100.0)
    loss = DpoLoss(LadaHyperParams())
    loss.begin_round(scorer, [*sets, only_right, only_wrong])
    out = loss.compute_loss(scorer, [*sets, only_right, only_wrong], [])
    assert out.parts["dpo"] == pytest.approx(math.log(2))
    assert {prompt for prompt, _ in scorer.scored} == {"A"}


def test_a_batch_without_any_pair_trains_on_the_private_term_alone() -> None:
    scorer = JointScorer({}, private_nll=0.75)
    sets = [PathSet("C", ["c+"], [-0.1], [True])]
    out = DpoLoss(LadaHyperParams()).compute_loss(scorer, sets, [PrivateExample("q", " a")])
    assert (out.parts["dpo"], out.parts["total"]) == (0.0, pytest.approx(0.75))


def test_a_dpo_round_on_a_micro_model_moves_its_weights_toward_correct_paths(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    trainer = trainer_for(micro_zoo, "slm-rates", "dpo", [], learning_rate=1e-2, epochs=4)
    sets = [contrast_set(p) for p in private_rates[:4]]
    weights_before = [p.detach().clone() for p in trainer.model.parameters()]
    before = [margin(trainer, s) for s in sets]
    report = trainer.train_round(sets, round_number=1)
    after = [margin(trainer, s) for s in sets]
    moved = sum(
        float((p.detach() - w).abs().sum())
        for p, w in zip(trainer.model.parameters(), weights_before, strict=True)
    )
    assert report.steps == 4  # 4 epochs x 1 step of 4 samples
    assert report.mean_parts["dpo"] > 0.0
    assert moved > 0.0
    assert np.mean(after) > np.mean(before) + 0.1
