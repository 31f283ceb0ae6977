"""The distillation losses against hand-computed values on tiny tensors (method.md s.3)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from lada.config import LadaHyperParams
from slm_agent.losses import (
    LOSSES,
    ContrastiveLoss,
    PathSet,
    PrivateExample,
    SftLoss,
    align_loss,
    info_nce_loss,
    make_loss,
    teacher_distribution,
    weighted_mean,
)


def t(*values: float) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


def mask(*values: bool) -> Tensor:
    return torch.tensor(values, dtype=torch.bool)


class TableScorer:
    """A student whose nlp_S per (prompt, completion) is a learnable table entry."""

    def __init__(self, table: dict[tuple[str, str], float], private_nll: float = 0.0) -> None:
        self.keys = list(table)
        self.values = torch.tensor(list(table.values()), dtype=torch.float64, requires_grad=True)
        self.private_nll = torch.tensor(private_nll, dtype=torch.float64)
        self.nll_calls: list[list[tuple[str, str]]] = []

    def normalized_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        index = [self.keys.index(pair) for pair in zip(prompts, completions, strict=True)]
        return self.values[index]

    def token_nll(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        self.nll_calls.append(list(zip(prompts, completions, strict=True)))
        return self.private_nll

    def nlp(self, prompt: str, completion: str) -> float:
        return float(self.values.detach()[self.keys.index((prompt, completion))])


# ---- teacher distribution --------------------------------------------------------------
def test_teacher_distribution_is_softmax_over_correct_paths_only() -> None:
    q = teacher_distribution(t(-1.0, -2.0, -3.0), mask(True, True, False), tau=1.0)
    # e^-1 / (e^-1 + e^-2) = 1 / (1 + e^-1)
    assert q.tolist() == pytest.approx([0.7310585786, 0.2689414214, 0.0])


def test_teacher_distribution_sharpens_with_lower_temperature() -> None:
    q = teacher_distribution(t(-1.0, -2.0), mask(True, True), tau=0.5)
    # softmax(-2, -4): 1 / (1 + e^-2)
    assert q.tolist() == pytest.approx([0.8807970780, 0.1192029220])


def test_teacher_distribution_refuses_a_set_without_correct_paths() -> None:
    with pytest.raises(ValueError, match="at least one path must be correct"):
        teacher_distribution(t(-1.0, -2.0), mask(False, False), tau=1.0)


# ---- alignment -------------------------------------------------------------------------
def test_align_is_kl_of_teacher_against_uniform_student() -> None:
    # q = (0.7311, 0.2689, 0), p = 1/3 each: sum q log(3q) = 0.516409
    kl = align_loss(t(-1.0, -1.0, -1.0), t(-1.0, -2.0, -3.0), mask(True, True, False), tau=1.0)
    assert float(kl) == pytest.approx(0.5164091798)


def test_align_with_equal_logprobs_is_log_of_paths_over_correct_paths() -> None:
    # q = (1/2, 1/2, 0, 0), p = 1/4 each: KL = log(4 / 2)
    equal = t(-0.7, -0.7, -0.7, -0.7)
    kl = align_loss(equal, equal, mask(True, True, False, False), tau=1.0)
    assert float(kl) == pytest.approx(math.log(2))


def test_align_is_zero_when_student_matches_teacher_and_nothing_is_incorrect() -> None:
    same = t(-0.5, -1.5, -2.5)
    assert float(align_loss(same, same, mask(True, True, True), tau=1.0)) == pytest.approx(0.0)


def test_align_of_a_single_correct_path_is_zero() -> None:
    assert float(align_loss(t(-4.0), t(-1.0), mask(True), tau=1.0)) == pytest.approx(0.0)


# ---- InfoNCE ---------------------------------------------------------------------------
def test_nce_with_equal_logprobs_is_log_of_path_count_per_positive() -> None:
    # every path has p = 1/4, so -mean log p over positives = log 4
    nce = info_nce_loss(t(-1.0, -1.0, -1.0, -1.0), mask(True, True, False, False), tau=1.0)
    assert float(nce) == pytest.approx(math.log(4))


def test_nce_without_incorrect_paths_is_logsumexp_minus_mean() -> None:
    # logsumexp(-1, -2, -3) - mean(-1, -2, -3) = -0.592394 + 2
    nce = info_nce_loss(t(-1.0, -2.0, -3.0), mask(True, True, True), tau=1.0)
    assert float(nce) == pytest.approx(1.4076059644)


def test_nce_of_a_single_path_is_zero() -> None:
    assert float(info_nce_loss(t(-3.0), mask(True), tau=1.0)) == pytest.approx(0.0)


def test_nce_divides_logprobs_by_temperature() -> None:
    # tau = 0.5: -log softmax(-2, -4)[0] = log(1 + e^-2)
    nce = info_nce_loss(t(-1.0, -2.0), mask(True, False), tau=0.5)
    assert float(nce) == pytest.approx(0.1269280110)


# ---- weighting -------------------------------------------------------------------------
def test_weighted_mean_divides_by_the_sum_of_weights() -> None:
    assert float(weighted_mean(t(1.0, 3.0), t(1.0, 3.0))) == pytest.approx(10.0 / 4.0)


def test_weighted_mean_of_nothing_is_zero() -> None:
    assert float(weighted_mean(t(), t())) == 0.0


# ---- the registered losses ---------------------------------------------------------------
def test_every_loss_is_registered_by_name() -> None:
    assert set(LOSSES) == {"sft", "contrastive", "dpo", "local"}
    assert isinstance(make_loss("contrastive"), ContrastiveLoss)
    assert isinstance(make_loss("sft"), SftLoss)


def test_unknown_loss_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown loss 'kd'; valid: contrastive, dpo, local, sft"):
        make_loss("kd")


def test_path_set_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="one entry per path"):
        PathSet("Q", ["a", "b"], [-1.0], [True, False])


def two_samples() -> tuple[TableScorer, list[PathSet]]:
    """Sample A: 2 LLM paths (1 correct) + 1 own negative; sample B: 1 correct path only."""
    scorer = TableScorer(
        {
            ("A", "a+"): -1.0,
            ("A", "a-"): -1.0,
            ("A", "own-"): -1.0,
            ("B", "b+"): -2.0,
        },
        private_nll=0.25,
    )
    sets = [
        PathSet("A", ["a+", "a-"], [-0.5, -0.2], [True, False], ["own-"], weight=1.0),
        PathSet("B", ["b+"], [-0.3], [True], weight=3.0),
    ]
    return scorer, sets


def test_contrastive_total_matches_hand_computation() -> None:
    scorer, sets = two_samples()
    out = ContrastiveLoss(LadaHyperParams()).compute_loss(
        scorer, sets, [PrivateExample("private Q", " private A")]
    )
    # A: nce = log 3 (3 equal paths, 1 positive); align = KL((1,0) || (1/2,1/2)) = log 2;
    # anchor = -nlp_S(a+) = 1. B: nce = 0, align = 0, anchor = -nlp_S(b+) = 2.
    # Weighted: (1 * (1 + log 3 + 0.5 log 2) + 3 * 2) / (1 + 3).
    distill = (1 + math.log(3) + 0.5 * math.log(2) + 3 * 2) / 4
    assert out.parts["nce"] == pytest.approx(math.log(3) / 4)
    assert out.parts["align"] == pytest.approx(math.log(2) / 4)
    assert out.parts["anchor"] == pytest.approx((1 + 3 * 2) / 4)
    assert out.parts["distill"] == pytest.approx(distill)
    assert out.parts["total"] == pytest.approx(0.25 + 1.0 * distill)


def test_contrastive_scales_the_distillation_term_by_lambda_and_beta() -> None:
    scorer, sets = two_samples()
    hyper = LadaHyperParams(contrastive_lambda=2.0, align_beta=0.0, anchor_gamma=0.5)
    out = ContrastiveLoss(hyper).compute_loss(scorer, sets, [])
    assert out.parts["total"] == pytest.approx(2.0 * (math.log(3) + 0.5 * 7) / 4)
    assert out.parts["sft_private"] == 0.0


def test_contrastive_skips_samples_without_a_correct_path() -> None:
    scorer, sets = two_samples()
    sets.append(PathSet("C", ["c-"], [-0.1], [False], weight=100.0))
    scorer.keys.append(("C", "c-"))  # scored if used: it must not be
    out = ContrastiveLoss(LadaHyperParams()).compute_loss(scorer, sets, [])
    assert out.parts["distill"] == pytest.approx((7 + math.log(3) + 0.5 * math.log(2)) / 4)


def test_contrastive_with_nothing_to_learn_is_the_private_loss() -> None:
    scorer = TableScorer({}, private_nll=0.75)
    out = ContrastiveLoss(LadaHyperParams()).compute_loss(scorer, [], [PrivateExample("q", " a")])
    assert out.parts["total"] == pytest.approx(0.75)


def test_sft_trains_on_the_correct_path_the_teacher_likes_most() -> None:
    scorer = TableScorer({}, private_nll=0.5)
    sets = [PathSet("A", ["worse", "wrong", "best"], [-0.9, -0.1, -0.4], [True, False, True])]
    out = SftLoss(LadaHyperParams()).compute_loss(scorer, sets, [PrivateExample("p", " c")])
    assert scorer.nll_calls == [[("p", " c")], [("A", "best")]]
    assert out.parts["total"] == pytest.approx(0.5 + 0.5)


def test_local_trains_on_the_private_batch_alone() -> None:
    scorer, sets = two_samples()
    out = make_loss("local").compute_loss(scorer, sets, [PrivateExample("p", " c")])
    assert scorer.nll_calls == [[("p", " c")]]  # no allocated path is scored
    assert out.parts == {"sft_private": 0.25, "total": 0.25}


# ---- gradients -------------------------------------------------------------------------
def test_contrastive_gradient_raises_correct_paths_over_incorrect_ones() -> None:
    scorer = TableScorer(
        {("A", "right"): -1.0, ("A", "wrong"): -0.8, ("A", "own-wrong"): -0.9, ("A", "r2"): -1.2}
    )
    sets = [PathSet("A", ["right", "wrong", "r2"], [-0.5, -0.3, -0.6], [True, False, True])]
    sets[0].own_negatives = ["own-wrong"]
    loss = ContrastiveLoss(LadaHyperParams())

    def margin() -> float:
        best_wrong = max(scorer.nlp("A", "wrong"), scorer.nlp("A", "own-wrong"))
        return min(scorer.nlp("A", "right"), scorer.nlp("A", "r2")) - best_wrong

    before = margin()
    optimizer = torch.optim.SGD([scorer.values], lr=0.5)
    for _ in range(5):
        optimizer.zero_grad()
        loss.compute_loss(scorer, sets, []).total.backward()
        optimizer.step()
    assert before == pytest.approx(-0.4)
    assert margin() > 0.0  # every correct path now beats every incorrect one


def test_contrastive_gradient_pushes_incorrect_paths_down() -> None:
    scorer = TableScorer({("A", "right"): -1.0, ("A", "wrong"): -1.0})
    sets = [PathSet("A", ["right", "wrong"], [-1.0, -1.0], [True, False])]
    ContrastiveLoss(LadaHyperParams()).compute_loss(scorer, sets, []).total.backward()
    grad = scorer.values.grad
    assert grad is not None
    # p = (1/2, 1/2); d nce/d s = p - onehot = (-1/2, 1/2); d align/d s = same (x 0.5);
    # d anchor/d s = (-1, 0): the correct path is also pulled up on its own.
    assert grad.tolist() == pytest.approx([-1.75, 0.75])


def test_without_the_anchor_every_path_can_fall_together() -> None:
    """NCE and KL see only differences: shifting all paths down costs them nothing, while
    the anchor charges it (why docs/zoo.md measured a collapse without it)."""
    sets = [PathSet("A", ["right", "wrong"], [-1.0, -1.0], [True, False])]

    def loss_at(shift: float, gamma: float) -> float:
        scorer = TableScorer({("A", "right"): -0.5 + shift, ("A", "wrong"): -1.5 + shift})
        return (
            ContrastiveLoss(LadaHyperParams(anchor_gamma=gamma))
            .compute_loss(scorer, sets, [])
            .parts["distill"]
        )

    assert loss_at(-3.0, gamma=0.0) == pytest.approx(loss_at(0.0, gamma=0.0))
    assert loss_at(-3.0, gamma=1.0) == pytest.approx(loss_at(0.0, gamma=1.0) + 3.0)
