"""Distillation losses behind one interface (docs/method.md section 3 and section 4).

Like TRL's `compute_loss`, each loss is one class registered by name; the trainer hands it
a differentiable student scorer, the round's path sets and a private batch, and gets back
a scalar to minimise plus its parts for logging. Adding a loss never touches the loop.

The pure functions (`teacher_distribution`, `align_loss`, `info_nce_loss`,
`weighted_mean`) carry the math so they can be checked by hand on tiny tensors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch
from torch import Tensor

from lada.config import LadaHyperParams


class StudentScorer(Protocol):
    """What a loss needs from the student model; every returned tensor carries gradients."""

    def normalized_logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """nlp_S(y|x) per (prompt, completion) pair, shape [N], in the student's tokens."""
        ...

    def token_nll(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """Mean next-token negative log-likelihood over all completion tokens (scalar)."""
        ...

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """lp_S(y|x), the joint (summed) log-probability per pair, shape [N] (for `dpo`)."""
        ...


@dataclass
class PathSet:
    """One allocated sample as a loss sees it: the LLM's scored paths and own negatives."""

    prompt: str
    llm_paths: list[str]
    teacher_nlp: list[float]  # nlp_L(y|x) per LLM path
    correct: list[bool]  # c(y) per LLM path
    own_negatives: list[str] = field(default_factory=list)  # the agent's incorrect paths
    weight: float = 1.0  # w_k(i), the domain weight

    def __post_init__(self) -> None:
        if not len(self.llm_paths) == len(self.teacher_nlp) == len(self.correct):
            raise ValueError(
                "llm_paths, teacher_nlp and correct must have one entry per path "
                f"(got {len(self.llm_paths)}, {len(self.teacher_nlp)}, {len(self.correct)})"
            )

    @property
    def has_correct_path(self) -> bool:
        return any(self.correct)

    def best_correct_path(self) -> str:
        """The correct LLM path the teacher likes most (highest nlp_L): y* for SFT."""
        scored = [(nlp, text) for nlp, text, ok in self._rows() if ok]
        if not scored:
            raise ValueError("best_correct_path: the path set has no correct path")
        return max(scored, key=lambda row: row[0])[1]

    def _rows(self) -> list[tuple[float, str, bool]]:
        return list(zip(self.teacher_nlp, self.llm_paths, self.correct, strict=True))


@dataclass
class PrivateExample:
    """One private training pair; it never leaves the agent."""

    prompt: str
    completion: str


@dataclass
class LossOutput:
    """The scalar to minimise and its parts (floats, for logs and tests)."""

    total: Tensor
    parts: dict[str, float]


# ---- the math, on tensors ------------------------------------------------------------
def teacher_distribution(teacher_nlp: Tensor, correct: Tensor, tau: float) -> Tensor:
    """q(y) = softmax(nlp_L / tau) over the correct paths; incorrect paths get q = 0."""
    if not bool(correct.any()):
        raise ValueError("teacher_distribution: at least one path must be correct")
    masked = (teacher_nlp / tau).masked_fill(~correct, float("-inf"))
    return torch.softmax(masked, dim=-1)


def align_loss(student_nlp: Tensor, teacher_nlp: Tensor, correct: Tensor, tau: float) -> Tensor:
    """KL(q || p) over the LLM path set, p = softmax(nlp_S / tau); masked paths add 0."""
    q = teacher_distribution(teacher_nlp, correct, tau)
    log_p = torch.log_softmax(student_nlp / tau, dim=-1)
    log_q = torch.log(q.clamp_min(torch.finfo(q.dtype).tiny))
    return torch.where(correct, q * (log_q - log_p), torch.zeros_like(q)).sum()


def info_nce_loss(student_nlp: Tensor, positive: Tensor, tau: float) -> Tensor:
    """-mean over positives of log softmax(nlp_S / tau); every other path is a negative."""
    if not bool(positive.any()):
        raise ValueError("info_nce_loss: at least one path must be positive")
    log_p = torch.log_softmax(student_nlp / tau, dim=-1)
    return -log_p[positive].mean()


def anchor_loss(student_nlp: Tensor, teacher_nlp: Tensor, correct: Tensor, tau: float) -> Tensor:
    """-sum_y q(y) nlp_S(y): the teacher-weighted per-token NLL of the correct LLM paths.

    NCE and KL only compare paths with each other, so on their own they can lower every
    path's likelihood, the correct ones included; this term holds the correct ones up.
    """
    q = teacher_distribution(teacher_nlp, correct, tau)
    return -(q * torch.where(correct, student_nlp, torch.zeros_like(student_nlp))).sum()


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """sum_i w_i v_i / sum_i w_i (the domain-weighted average over samples)."""
    if values.numel() == 0:
        return values.new_zeros(())
    return (weights * values).sum() / weights.sum()


def contrastive_sample_loss(
    student_llm_nlp: Tensor,
    student_own_nlp: Tensor,
    teacher_nlp: Tensor,
    correct: Tensor,
    hyper: LadaHyperParams,
) -> tuple[Tensor, Tensor, Tensor]:
    """(L_nce, L_align, L_anchor) for one sample: NCE over LLM paths + own negatives, KL and
    the anchor over LLM paths."""
    everything = torch.cat([student_llm_nlp, student_own_nlp])
    positive = torch.cat([correct, torch.zeros_like(student_own_nlp, dtype=torch.bool)])
    nce = info_nce_loss(everything, positive, hyper.tau)
    align = align_loss(student_llm_nlp, teacher_nlp, correct, hyper.tau)
    anchor = anchor_loss(student_llm_nlp, teacher_nlp, correct, hyper.tau)
    return nce, align, anchor


# ---- the plug-in interface -----------------------------------------------------------
class DistillationLoss(ABC):
    """One way to learn from allocated samples; `compute_loss` returns what to minimise."""

    name: ClassVar[str]

    def __init__(self, hyper: LadaHyperParams) -> None:
        self.hyper = hyper

    @abstractmethod
    def compute_loss(
        self, scorer: StudentScorer, path_sets: Sequence[PathSet], private: Sequence[PrivateExample]
    ) -> LossOutput:
        """Loss for one step: a batch of allocated samples plus a batch of private data."""

    def begin_round(self, scorer: StudentScorer, path_sets: Sequence[PathSet]) -> None:
        """Called once per round before the first optimiser step; most losses need nothing.

        A loss that compares against the model as it starts the round (`dpo`'s frozen
        reference) measures it here, so the trainer loop stays loss-agnostic.
        """
        del scorer, path_sets

    def private_sft(self, scorer: StudentScorer, private: Sequence[PrivateExample]) -> Tensor:
        """L_sft(D_k): the usual next-token loss on the agent's private data."""
        if not private:
            return torch.zeros(())
        return scorer.token_nll([p.prompt for p in private], [p.completion for p in private])


LOSSES: dict[str, type[DistillationLoss]] = {}


def register_loss(cls: type[DistillationLoss]) -> type[DistillationLoss]:
    """Class decorator: make a loss available by its `name`."""
    if cls.name in LOSSES:
        raise ValueError(f"loss {cls.name!r} is already registered")
    LOSSES[cls.name] = cls
    return cls


def make_loss(name: str, hyper: LadaHyperParams | None = None) -> DistillationLoss:
    """The registered loss called `name`; ValueError lists the valid names otherwise."""
    if name not in LOSSES:
        raise ValueError(f"loss: unknown loss {name!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[name](hyper or LadaHyperParams())


def _usable(path_sets: Sequence[PathSet]) -> list[PathSet]:
    """Samples with something correct to learn from (the others carry no signal)."""
    return [s for s in path_sets if s.has_correct_path]


@register_loss
class SftLoss(DistillationLoss):
    """Standard CoT distillation: next-token loss on the best correct LLM path per sample.

    L = L_sft(D_k) + lambda * L_sft(y*); the private term is kept so that `sft` and
    `contrastive` differ only in how they learn from allocated samples (*choice*).
    """

    name = "sft"

    def compute_loss(
        self, scorer: StudentScorer, path_sets: Sequence[PathSet], private: Sequence[PrivateExample]
    ) -> LossOutput:
        private_term = self.private_sft(scorer, private)
        usable = _usable(path_sets)
        distill = (
            scorer.token_nll([s.prompt for s in usable], [s.best_correct_path() for s in usable])
            if usable
            else torch.zeros(())
        )
        total = private_term + self.hyper.contrastive_lambda * distill
        parts = {"sft_private": _scalar(private_term), "sft_paths": _scalar(distill)}
        return LossOutput(total, parts | {"total": _scalar(total)})


@register_loss
class LocalLoss(DistillationLoss):
    """The local-training baseline: L = L_sft(D_k) alone, the allocated samples ignored.

    Same rounds, steps and private batches as a distillation loss, so a run with it
    separates what distillation adds from what training on the private data does by itself
    (docs/zoo.md attempt 8: at lr 1e-4 local training alone cost 1-7 home points).
    """

    name = "local"

    def compute_loss(
        self, scorer: StudentScorer, path_sets: Sequence[PathSet], private: Sequence[PrivateExample]
    ) -> LossOutput:
        del path_sets
        private_term = self.private_sft(scorer, private)
        value = _scalar(private_term)
        return LossOutput(private_term, {"sft_private": value, "total": value})


@register_loss
class ContrastiveLoss(DistillationLoss):
    """Domain-adaptive contrastive alignment of joint path probabilities (method.md s.3).

    L = L_sft(D_k) + lambda * sum_i w_i (gamma L_anchor(i) + L_nce(i) + beta L_align(i))
    / sum_i w_i.
    """

    name = "contrastive"

    def compute_loss(
        self, scorer: StudentScorer, path_sets: Sequence[PathSet], private: Sequence[PrivateExample]
    ) -> LossOutput:
        private_term = self.private_sft(scorer, private)
        usable = _usable(path_sets)
        nce, align, anchor = self._per_sample(scorer, usable)
        weights = torch.tensor([s.weight for s in usable], dtype=nce.dtype)
        per_sample = self.hyper.anchor_gamma * anchor + nce + self.hyper.align_beta * align
        distill = weighted_mean(per_sample, weights)
        total = private_term + self.hyper.contrastive_lambda * distill
        parts = {
            "sft_private": _scalar(private_term),
            "nce": _scalar(weighted_mean(nce, weights)),
            "align": _scalar(weighted_mean(align, weights)),
            "anchor": _scalar(weighted_mean(anchor, weights)),
            "distill": _scalar(distill),
        }
        return LossOutput(total, parts | {"total": _scalar(total)})

    def _per_sample(
        self, scorer: StudentScorer, usable: Sequence[PathSet]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Score every path of every sample in one call, then split per sample."""
        if not usable:
            return torch.zeros(0), torch.zeros(0), torch.zeros(0)
        prompts, completions = _flatten(usable)
        student = scorer.normalized_logprobs(prompts, completions)
        nces, aligns, anchors = [], [], []
        offset = 0
        for s in usable:
            n_llm, n_own = len(s.llm_paths), len(s.own_negatives)
            llm_part = student[offset : offset + n_llm]
            own_part = student[offset + n_llm : offset + n_llm + n_own]
            offset += n_llm + n_own
            teacher = torch.tensor(s.teacher_nlp, dtype=student.dtype)
            correct = torch.tensor(s.correct, dtype=torch.bool)
            nce, align, anchor = contrastive_sample_loss(
                llm_part, own_part, teacher, correct, self.hyper
            )
            nces.append(nce)
            aligns.append(align)
            anchors.append(anchor)
        return torch.stack(nces), torch.stack(aligns), torch.stack(anchors)


def _scalar(value: Tensor) -> float:
    """A loss part as a plain float for logs (no gradient)."""
    return float(value.detach())


def _flatten(path_sets: Sequence[PathSet]) -> tuple[list[str], list[str]]:
    """(prompt, completion) pairs: each sample's LLM paths, then its own negatives."""
    prompts: list[str] = []
    completions: list[str] = []
    for s in path_sets:
        texts = [*s.llm_paths, *s.own_negatives]
        prompts.extend([s.prompt] * len(texts))
        completions.extend(texts)
    return prompts, completions


def dpo_pair_loss(
    policy_pos: Tensor, ref_pos: Tensor, policy_neg: Tensor, ref_neg: Tensor, beta: float
) -> Tensor:
    """-mean over every pair (y+, y-) of log sigmoid(beta [(lp - ref)(y+) - (lp - ref)(y-)])."""
    chosen = policy_pos - ref_pos
    rejected = policy_neg - ref_neg
    margins = beta * (chosen[:, None] - rejected[None, :])
    return -torch.nn.functional.logsigmoid(margins).mean()


def _has_pair(path_set: PathSet) -> bool:
    """A correct LLM path and something incorrect (an LLM path or an own negative) to pair."""
    return path_set.has_correct_path and (not all(path_set.correct) or bool(path_set.own_negatives))


@register_loss
class DpoLoss(DistillationLoss):
    """The paper's DPO-like loss on whole-path likelihoods (method.md section 5).

    L = L_sft(D_k) + lambda * sum_i w_i L_dpo(i) / sum_i w_i, with L_dpo(i) the mean over
    every pair (y+ a correct LLM path, y- an incorrect LLM path or an own negative) and the
    reference the SLM as it starts the round. A sample lacking either kind of path has no
    pair and is skipped; with no pair in the batch only the private term trains.
    """

    name = "dpo"

    def __init__(self, hyper: LadaHyperParams) -> None:
        super().__init__(hyper)
        self.reference: dict[tuple[str, str], float] = {}  # (prompt, path) -> lp_ref

    def begin_round(self, scorer: StudentScorer, path_sets: Sequence[PathSet]) -> None:
        """Freeze the reference: lp of every path of the round before any optimiser step."""
        self.reference = {}
        self._remember(scorer, [s for s in path_sets if _has_pair(s)])

    def compute_loss(
        self, scorer: StudentScorer, path_sets: Sequence[PathSet], private: Sequence[PrivateExample]
    ) -> LossOutput:
        private_term = self.private_sft(scorer, private)
        paired = [s for s in path_sets if _has_pair(s)]
        self._remember(scorer, paired)  # a path first seen here: the model as it is now
        losses, margins = self._per_sample(scorer, paired)
        weights = torch.tensor([s.weight for s in paired], dtype=losses.dtype, device=losses.device)
        distill = weighted_mean(losses, weights)
        total = private_term + self.hyper.contrastive_lambda * distill
        parts = {
            "sft_private": _scalar(private_term),
            "dpo": _scalar(distill),
            "reward_margin": _scalar(weighted_mean(margins, weights)),
        }
        return LossOutput(total, parts | {"total": _scalar(total)})

    def _remember(self, scorer: StudentScorer, path_sets: Sequence[PathSet]) -> None:
        """Reference lp (no gradient) for every path not measured yet this round."""
        pairs = list(zip(*_flatten(path_sets), strict=True))
        missing = list(dict.fromkeys(p for p in pairs if p not in self.reference))
        if not missing:
            return
        with torch.no_grad():
            values = scorer.logprobs([p for p, _ in missing], [c for _, c in missing])
        self.reference.update(zip(missing, values.detach().cpu().tolist(), strict=True))

    def _per_sample(
        self, scorer: StudentScorer, paired: Sequence[PathSet]
    ) -> tuple[Tensor, Tensor]:
        """(L_dpo(i), mean beta-scaled reward margin) per sample, from one scoring call."""
        if not paired:
            return torch.zeros(0), torch.zeros(0)
        prompts, completions = _flatten(paired)
        policy = scorer.logprobs(prompts, completions)
        reference = torch.tensor(
            [self.reference[p] for p in zip(prompts, completions, strict=True)],
            dtype=policy.dtype,
            device=policy.device,
        )
        losses, margins = [], []
        offset = 0
        for s in paired:
            n_llm, n_all = len(s.llm_paths), len(s.llm_paths) + len(s.own_negatives)
            positive = torch.zeros(n_all, dtype=torch.bool, device=policy.device)
            positive[:n_llm] = torch.tensor(s.correct, dtype=torch.bool)
            lp, ref = policy[offset : offset + n_all], reference[offset : offset + n_all]
            offset += n_all
            beta = self.hyper.dpo_beta
            pos, neg = positive, ~positive
            losses.append(dpo_pair_loss(lp[pos], ref[pos], lp[neg], ref[neg], beta))
            gain = (lp - ref).detach()
            margins.append(beta * (gain[pos].mean() - gain[neg].mean()))
        return torch.stack(losses), torch.stack(margins)
