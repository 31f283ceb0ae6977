"""Fine-tune a LoRA adapter (peft) on contributed reasoning paths: the SLM -> LLM direction.

The loss is the next-token loss of each path after its prompt, under THE tokenization rule
(lada.modeling.encode_pair), so what is trained is exactly what ScorePaths measures.
Every version is base + one adapter, served by a single LoRARequest; `absorb_mode`
(lada.config.LLMServiceExtras) says how a new version's adapter is trained:

- rebase (default): a fresh adapter on the base model, trained on every contribution
  absorbed along the serving chain (each version records them, llm_service/absorbed.py)
  plus the new ones, replaying the base version's own paths. Why: chained absorbs compound
  forgetting. One absorb from base cost the demo's public domains 3-5 points, but its three
  chained absorbs (one per round) cost 14-18 after v3, as each version replayed the paths
  of an already-degraded parent and drifted further.
- continue: the parent's adapter (same rank) trained further on the new contributions
  only, replaying the parent's own paths.

Contributions alone make a small LLM forget what it knew (measured in docs/zoo.md: -31 to
-80 points on the public domains); so each absorb also replays an LLM version's own sound
greedy paths on other public samples (`replay_ratio` of them per contribution). Replaying
greedy paths holds only the tokens the LLM already ranks first; `anchor_weight` adds, on
the replayed paths, the KL divergence from the base model's whole next-token distribution
(the adapter switched off) to the adapted one's, as in learning without forgetting.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lada.modeling import (
    completion_log_distributions,
    completion_targets,
    encode_pair,
    load_causal_lm,
    token_kl,
)
from lada.tasks import Problem, format_prompt, is_sound
from llm_service.backends.base import LORA_TARGET_MODULES


@dataclass(frozen=True)
class TrainingOptions:
    """How to train one adapter (already validated; defaults live in LLMServiceExtras)."""

    epochs: int
    learning_rate: float
    lora_rank: int
    batch_size: int
    seed: int = 0
    anchor_weight: float = 0.0  # KL(base || adapted) on replayed paths; 0: NLL alone
    min_steps: int = 0  # more epochs until at least this many optimiser steps; 0: none


@dataclass(frozen=True)
class TrainedAdapter:
    """Where the adapter was saved and how training ended."""

    adapter_dir: Path
    lora_rank: int
    final_loss: float
    first_loss: float
    steps: int


REPLAY_OVERDRAW = 2  # candidates per replayed path: some of the LLM's own paths are unsound

Example = tuple[str, str]  # (prompt, path)


def replay_candidates(
    pool: Sequence[Problem], exclude: set[str], count: int, seed: int
) -> list[Problem]:
    """`REPLAY_OVERDRAW * count` public problems outside `exclude`, in a seeded order."""
    if count <= 0:
        return []
    others = [p for p in pool if p.id not in exclude]
    random.Random(seed).shuffle(others)
    return others[: REPLAY_OVERDRAW * count]


def sound_replay(
    candidates: Sequence[Problem], write: Callable[[Sequence[Problem]], list[str]], count: int
) -> list[Example]:
    """Up to `count` (prompt, path) pairs of the LLM's own paths (from `write`) that are sound."""
    texts = write(candidates) if candidates else []
    pairs = [
        (format_prompt(p.question), t)
        for p, t in zip(candidates, texts, strict=True)
        if is_sound(t, p.answer)
    ]
    return pairs[:count]


def epochs_for(options: TrainingOptions, pairs: int) -> int:
    """`options.epochs`, raised until the run takes `options.min_steps` steps: a budget in
    epochs alone gives a 17-path absorb 85 steps and a 200-path one 1,000."""
    per_epoch = max(1, math.ceil(pairs / options.batch_size))
    return max(options.epochs, math.ceil(options.min_steps / per_epoch))


class AbsorbDiverged(RuntimeError):
    """Training produced a non-finite loss; the adapter is discarded."""


def train_adapter(
    base_model: Path,
    parent_adapter: Path | None,
    examples: Sequence[Example],
    options: TrainingOptions,
    out_dir: Path,
    replay: Sequence[Example] = (),
) -> TrainedAdapter:
    """Train on (prompt, path) pairs, the contributed `examples` and the LLM's own `replay`,
    and save the adapter to `out_dir`."""
    torch.manual_seed(options.seed)
    model, tokenizer = _trainable_model(base_model, parent_adapter, options.lora_rank)
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    pairs: list[_Pair] = []
    for index, (prompt, path) in enumerate([*examples, *replay]):
        p, c = encode_pair(tokenizer, prompt, path)
        if c:  # a path ends: the zoo trained EOS after it
            pairs.append(_Pair(p, c + end, anchored=index >= len(examples)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(options.seed)
    epoch_losses: list[float] = []
    steps = 0
    model.train()
    for _ in range(epochs_for(options, len(pairs))):
        order = torch.randperm(len(pairs), generator=generator).tolist()
        losses = []
        for start in range(0, len(order), options.batch_size):
            batch = [pairs[i] for i in order[start : start + options.batch_size]]
            loss = _batch_loss(model, batch, tokenizer.pad_token_id, options.anchor_weight)
            if not math.isfinite(loss.item()):
                raise AbsorbDiverged(f"absorb diverged: loss {loss.item()} at step {steps}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            steps += 1
        epoch_losses.append(sum(losses) / max(1, len(losses)))
    model.save_pretrained(str(out_dir))
    rank = int(model.peft_config["default"].r)
    return TrainedAdapter(out_dir, rank, epoch_losses[-1], epoch_losses[0], steps)


def _trainable_model(
    base_model: Path, parent_adapter: Path | None, rank: int
) -> tuple[torch.nn.Module, Any]:
    from peft import LoraConfig, PeftModel, get_peft_model

    model, tokenizer = load_causal_lm(base_model)
    if parent_adapter is not None:
        peft_model = PeftModel.from_pretrained(model, str(parent_adapter), is_trainable=True)
    else:
        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.0,
            target_modules=list(LORA_TARGET_MODULES),
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, config)
    return peft_model, tokenizer


@dataclass(frozen=True)
class _Pair:
    prompt: list[int]
    completion: list[int]
    anchored: bool  # a replayed path: held to the base model's distributions too


def _batch_loss(
    model: torch.nn.Module, batch: list[_Pair], pad_id: int, anchor_weight: float
) -> torch.Tensor:
    """Mean NLL per completion token, plus `anchor_weight` x the mean per-token
    KL(base || adapted) over the batch's replayed paths."""
    rows = [(b.prompt, b.completion) for b in batch]
    dists = completion_log_distributions(model, rows, pad_id)
    nll = -torch.cat(completion_targets(dists, rows))
    anchored = [i for i, b in enumerate(batch) if b.anchored]
    if anchor_weight <= 0 or not anchored:
        return nll.mean()
    with torch.no_grad(), model.disable_adapter():
        base = completion_log_distributions(model, [rows[i] for i in anchored], pad_id)
    adapted = torch.cat([dists[i] for i in anchored])
    return nll.mean() + anchor_weight * token_kl(torch.cat(base), adapted)
