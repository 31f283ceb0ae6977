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
from collections.abc import Iterator, Sequence
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
from transformers.cache_utils import DynamicCache
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


def completion_log_distributions(
    model: PreTrainedModel, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> list[torch.Tensor]:
    """Differentiable next-token log-distributions (tokens x vocabulary) at each completion
    token of each pair: what a distillation to another model's distributions compares."""
    rows = [p + c for p, c in pairs]
    ids, mask = _pad_right(rows, pad_id)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    return [logp[i, len(p) - 1 : len(p) + len(c) - 1] for i, (p, c) in enumerate(pairs)]


def completion_logprobs(
    model: PreTrainedModel, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> list[torch.Tensor]:
    """Differentiable per-token log-probs of each completion (for training losses too)."""
    return completion_targets(completion_log_distributions(model, pairs, pad_id), pairs)


def token_kl(reference: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(reference || current), both (tokens x vocabulary) log-probs:
    the anchor both absorb and the agent's trust region hold a model to."""
    return (reference.exp() * (reference - current)).sum(-1).mean()


def completion_targets(
    distributions: Sequence[torch.Tensor], pairs: Sequence[tuple[list[int], list[int]]]
) -> list[torch.Tensor]:
    """Each completion token's log-prob, picked from `completion_log_distributions`."""
    return [
        d.gather(-1, torch.tensor(c, dtype=torch.long, device=d.device)[:, None]).squeeze(-1)
        for d, (_, c) in zip(distributions, pairs, strict=True)
    ]


def shared_prompt_logprobs(
    model: PreTrainedModel,
    prompts: Sequence[list[int]],
    completions: Sequence[Sequence[list[int]]],
    pad_id: int,
) -> list[torch.Tensor]:
    """`completion_logprobs` of several non-empty completions per prompt, each prompt run
    once: its keys and values are repeated for its completions, which then run alone.

    Prompts are left padded, so each one's last token (whose logits score a completion's
    first token) sits in the last column, and completions continue at its real length.
    """
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = _pad_left(prompts, pad_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    prompt_run = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp_min(0),
        use_cache=True,
    )
    first = torch.log_softmax(prompt_run.logits[:, -1].float(), dim=-1)
    owner = torch.tensor([p for p, rows in enumerate(completions) for _ in rows], device=device)
    rows = [c for group in completions for c in group]
    cache = DynamicCache()
    for index, layer in enumerate(prompt_run.past_key_values.layers):
        cache.update(layer.keys.index_select(0, owner), layer.values.index_select(0, owner), index)
    # a completion's tokens but its last feed the run; a one-token completion feeds a pad
    feed_ids, feed_mask = _pad_right([c[:-1] or [pad_id] for c in rows], pad_id)
    feed_mask[torch.tensor([len(c) == 1 for c in rows])] = 0
    feed_ids, feed_mask = feed_ids.to(device), feed_mask.to(device)
    positions = prompt_mask.sum(-1)[owner, None] + torch.arange(feed_ids.shape[1], device=device)
    logits = model(
        input_ids=feed_ids,
        attention_mask=torch.cat([prompt_mask.index_select(0, owner), feed_mask], dim=-1),
        position_ids=positions,
        past_key_values=cache,
    ).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for r, completion in enumerate(rows):
        targets = torch.tensor(completion, device=device)
        rest = logp[r, : len(completion) - 1].gather(-1, targets[1:, None]).squeeze(-1)
        out.append(torch.cat([first[owner[r], targets[:1]], rest]))
    return out


def batched_completion_logprobs(
    model: PreTrainedModel,
    pairs: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int,
) -> list[torch.Tensor]:
    """`completion_logprobs` of many pairs, each distinct pair scored once and each prompt
    run once; an empty completion gives an empty tensor.

    A contrastive step scores several paths per prompt, and a confident teacher's sampled
    paths repeat: a duplicate shares its row's tensor (its gradient counts once per
    occurrence, as before), and a prompt with several paths runs once for all of them
    (`shared_prompt_logprobs`). Rows of different prompts go in batches of similar length,
    which keeps padding near 1.04x the real tokens instead of 1.6x in arrival order
    (docs/bench/training.md).
    """
    distinct, rows = _distinct_pairs(pairs)
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for index, (prompt, _) in enumerate(distinct):
        by_prompt.setdefault(tuple(prompt), []).append(index)
    scored: dict[int, torch.Tensor] = {}  # distinct index -> its log-probs
    alone = [group[0] for group in by_prompt.values() if len(group) == 1]
    alone.sort(key=lambda i: -sum(map(len, distinct[i])))
    for start in range(0, len(alone), batch_size):
        chunk = alone[start : start + batch_size]
        values = completion_logprobs(model, [distinct[i] for i in chunk], pad_id)
        scored.update(zip(chunk, values, strict=True))
    groups = [group for group in by_prompt.values() if len(group) > 1]
    groups.sort(key=lambda group: -len(distinct[group[0]][0]))
    for chunk in _whole_groups(groups, batch_size):
        values = shared_prompt_logprobs(
            model,
            [distinct[group[0]][0] for group in chunk],
            [[distinct[i][1] for i in group] for group in chunk],
            pad_id,
        )
        scored.update(zip((i for group in chunk for i in group), values, strict=True))
    return [scored[row] if row >= 0 else torch.zeros(0) for row in rows]


def _distinct_pairs(
    pairs: Sequence[tuple[list[int], list[int]]],
) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """The distinct pairs with a completion, and per pair its index among them (-1: none)."""
    row_of: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    distinct: list[tuple[list[int], list[int]]] = []
    rows: list[int] = []
    for prompt, completion in pairs:
        if not completion:
            rows.append(-1)
            continue
        key = (tuple(prompt), tuple(completion))
        if key not in row_of:
            row_of[key] = len(distinct)
            distinct.append((prompt, completion))
        rows.append(row_of[key])
    return distinct, rows


def _whole_groups(groups: Sequence[list[int]], rows: int) -> Iterator[list[list[int]]]:
    """Consecutive groups, as many per chunk as fit in `rows` rows (at least one)."""
    chunk: list[list[int]] = []
    size = 0
    for group in groups:
        if chunk and size + len(group) > rows:
            yield chunk
            chunk, size = [], 0
        chunk.append(group)
        size += len(group)
    if chunk:
        yield chunk


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
    results: list[PathLogProbs] = []
    for values in batched_completion_logprobs(model, pairs, tokenizer.pad_token_id, batch_size):
        tokens = values.tolist()
        joint = float(sum(tokens))
        results.append(
            PathLogProbs(tokens, joint, joint / len(tokens) if tokens else 0.0, len(tokens))
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
