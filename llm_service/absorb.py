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
greedy paths on other public samples (`replay_ratio` of them per contribution).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lada.modeling import completion_logprobs, encode_pair, load_causal_lm
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


class AbsorbDiverged(RuntimeError):
    """Training produced a non-finite loss; the adapter is discarded."""


def train_adapter(
    base_model: Path,
    parent_adapter: Path | None,
    examples: Sequence[tuple[str, str]],
    options: TrainingOptions,
    out_dir: Path,
) -> TrainedAdapter:
    """Train on (prompt, path) pairs and save the adapter to `out_dir`."""
    torch.manual_seed(options.seed)
    model, tokenizer = _trainable_model(base_model, parent_adapter, options.lora_rank)
    pairs = [encode_pair(tokenizer, p, c) for p, c in examples]
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    pairs = [(p, c + end) for p, c in pairs if c]  # a path ends: the zoo trained EOS after it
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(options.seed)
    epoch_losses: list[float] = []
    steps = 0
    model.train()
    for _ in range(options.epochs):
        order = torch.randperm(len(pairs), generator=generator).tolist()
        losses = []
        for start in range(0, len(order), options.batch_size):
            batch = [pairs[i] for i in order[start : start + options.batch_size]]
            loss = _path_nll(model, batch, tokenizer.pad_token_id)
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


def _path_nll(
    model: torch.nn.Module, batch: list[tuple[list[int], list[int]]], pad_id: int
) -> torch.Tensor:
    """Mean negative log-likelihood per completion token over the batch."""
    values = completion_logprobs(model, batch, pad_id)
    total = torch.cat(values)
    return -total.mean()
