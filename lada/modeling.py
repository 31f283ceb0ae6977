"""Shared model loading, path scoring and batched generation (eval, agents, LLM service).

Tokenization rule for scoring (the vLLM backend must use the same, see `encode_pair`):
    prompt_ids     = [BOS if the tokenizer adds one] + tokenize(prompt, no special tokens)
    completion_ids = tokenize(completion, no special tokens)
    sequence       = prompt_ids + completion_ids
Prompt and completion are tokenized separately and concatenated; the log-prob of a path
is the sum over completion_ids of log p(token | everything before it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.utils import logging as hf_logging

from lada.sampling import Sampling

STOP_TEXT = "\nQ:"  # a new question starts: the answer is over (for models without EOS habits)
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


class ModelDirError(FileNotFoundError):
    """A model directory is missing a file needed to load it; the message names it."""


@dataclass
class PathLogProbs:
    """Log-probs of one completion under one model: per token, joint and per-token mean."""

    token_logprobs: list[float] = field(default_factory=list)
    joint: float = 0.0
    normalized: float = 0.0
    token_count: int = 0


def resolve_model_path(path: str | Path) -> Path:
    """A directory path, or `zoo:<profile>/<name>` (e.g. `zoo:demo/llm`) from the built zoo."""
    text = str(path)
    if not text.startswith("zoo:"):
        return Path(text).expanduser()
    from lada.zoo import resolve_zoo_model  # lazy: zoo imports this module

    return resolve_zoo_model(text[4:])


def check_model_dir(path: str | Path) -> Path:
    """Raise ModelDirError naming the first missing piece of a HF model directory."""
    root = resolve_model_path(path)
    if not root.is_dir():
        raise ModelDirError(f"model directory not found: {root}")
    if not (root / "config.json").is_file():
        raise ModelDirError(f"{root}: missing config.json")
    if not any((root / name).is_file() for name in _WEIGHT_FILES):
        raise ModelDirError(f"{root}: missing weights (one of {', '.join(_WEIGHT_FILES)})")
    if not any((root / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelDirError(
            f"{root}: missing tokenizer file (tokenizer.json, or "
            f"tokenizer.model / vocab.json+merges.txt / vocab.txt)"
        )
    if (
        (root / "vocab.json").is_file()
        and not (root / "tokenizer.json").is_file()
        and not (root / "merges.txt").is_file()
    ):
        raise ModelDirError(f"{root}: missing merges.txt (next to vocab.json)")
    return root


def load_tokenizer(path: str | Path) -> Any:
    """Tokenizer of a model directory, with a pad token (EOS when it has none)."""
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, Any]:
    """(model in eval mode, tokenizer) from any local HF causal-LM directory.

    Without transformers' per-model "Loading weights" bar: agents and services load several
    small models, and the bars buried the demo's console.
    """
    root = check_model_dir(path)
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(root), dtype=dtype).to(device)
    model.eval()
    return model, load_tokenizer(root)


def adds_bos(tokenizer: Any) -> bool:
    """Whether this tokenizer's own convention puts BOS in front of a text."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt token ids under THE rule: optional BOS, then the prompt, no other specials."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if adds_bos(tokenizer) else []) + list(ids)


def encode_pair(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids): tokenized separately, to be concatenated."""
    return encode_prompt(tokenizer, prompt), list(
        tokenizer(completion, add_special_tokens=False)["input_ids"]
    )


def _pad_right(rows: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def completion_logprobs(
    model: PreTrainedModel, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> list[torch.Tensor]:
    """Differentiable per-token log-probs of each completion (for training losses too)."""
    rows = [p + c for p, c in pairs]
    ids, mask = _pad_right(rows, pad_id)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for i, (prompt, completion) in enumerate(pairs):
        start, end = len(prompt), len(prompt) + len(completion)
        targets = ids[i, start:end].to(device)
        out.append(logp[i, start - 1 : end - 1].gather(-1, targets[:, None]).squeeze(-1))
    return out


@torch.no_grad()
def score_completions(
    model: PreTrainedModel,
    tokenizer: Any,
    prompts: list[str],
    completions: list[str],
    batch_size: int = 16,
) -> list[PathLogProbs]:
    """Log-probs of each completion given its prompt (one forward pass per batch)."""
    if len(prompts) != len(completions):
        raise ValueError("prompts and completions must have the same length")
    pairs = [encode_pair(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    if any(not p for p, _ in pairs):
        raise ValueError("empty prompt: nothing to condition the first token on")
    order = sorted(range(len(pairs)), key=lambda i: -sum(map(len, pairs[i])))
    results: list[PathLogProbs] = [PathLogProbs() for _ in pairs]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        scored = completion_logprobs(model, [pairs[i] for i in chunk], tokenizer.pad_token_id)
        for i, values in zip(chunk, scored, strict=True):
            tokens = values.tolist()
            joint = float(sum(tokens))
            results[i] = PathLogProbs(
                tokens, joint, joint / len(tokens) if tokens else 0.0, len(tokens)
            )
    return results


def _cut(text: str) -> str:
    return text.split(STOP_TEXT, 1)[0]


def row_seed(seed: int, prompt_ids: Sequence[int], copy: int) -> int:
    """The seed of one sampled continuation: a function of (seed, prompt, copy) only."""
    digest = hashlib.sha256(f"{seed}|{copy}|{','.join(map(str, prompt_ids))}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class RowSeededSampler(LogitsProcessor):
    """Gumbel-max sampling with one generator per batch row, run under greedy decoding.

    A row's tokens depend only on its own seed, never on which prompts share its batch, so
    the LLM's path cache, simulation mode and the cluster all see the same paths.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        self.warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(temperature)]
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        vocab = scores.shape[-1]
        uniform = torch.stack(
            [torch.rand(vocab, generator=g, dtype=torch.float64) for g in self.generators]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)


def _pad_left(rows: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for j, row in enumerate(rows):
        ids[j, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[j, width - len(row) :] = 1
    return ids, mask


def _strip_padding(row: list[int], eos: int | None, pad: int | None) -> list[int]:
    """Generated ids up to and including the first EOS (what follows is padding)."""
    if eos is not None and eos in row:
        return row[: row.index(eos) + 1]
    if pad is not None and pad != eos:
        while row and row[-1] == pad:
            row = row[:-1]
    return row


@torch.no_grad()
def generate_ids(
    model: PreTrainedModel,
    tokenizer: Any,
    prompt_ids: Sequence[list[int]],
    sampling: Sampling,
    batch_size: int = 32,
) -> list[list[list[int]]]:
    """Per prompt, `n` generated id lists (EOS kept, padding removed); `batch_size`
    prompts (times their copies) per batch, left padded.

    Greedy decodes each prompt once and repeats it; sampling seeds every (prompt, copy)
    on its own (`row_seed`), so the result does not depend on batching or call order.
    """
    copies = 1 if sampling.greedy else sampling.n
    rows = [(i, k) for i in range(len(prompt_ids)) for k in range(copies)]
    rows.sort(key=lambda row: len(prompt_ids[row[0]]))
    device = next(model.parameters()).device
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    out: list[list[list[int]]] = [[[] for _ in range(copies)] for _ in prompt_ids]
    rows_per_batch = batch_size * copies
    for start in range(0, len(rows), rows_per_batch):
        chunk = rows[start : start + rows_per_batch]
        ids, mask = _pad_left([prompt_ids[i] for i, _ in chunk], pad)
        processors = LogitsProcessorList()
        if not sampling.greedy:
            seeds = [row_seed(sampling.seed, prompt_ids[i], k) for i, k in chunk]
            processors.append(RowSeededSampler(seeds, sampling.temperature, sampling.top_p))
        generated = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=sampling.max_tokens,
            do_sample=False,
            logits_processor=processors,
            pad_token_id=pad,
            eos_token_id=eos,
        )[:, ids.shape[1] :]
        for (i, k), row in zip(chunk, generated.tolist(), strict=True):
            out[i][k] = _strip_padding(row, eos, pad)
    return [[list(paths[0]) for _ in range(sampling.n)] if copies == 1 else paths for paths in out]


def generate(
    model: PreTrainedModel,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    n: int = 1,
    seed: int = 0,
    batch_size: int = 32,
) -> list[list[str]]:
    """`n` completions per prompt; text after the prompt only, cut at STOP_TEXT."""
    sampling = Sampling(n, 0.0 if greedy else temperature, top_p, max_new_tokens, seed)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    generated = generate_ids(model, tokenizer, encoded, sampling, batch_size)
    return [
        [_cut(tokenizer.decode(ids, skip_special_tokens=True)) for ids in paths]
        for paths in generated
    ]
