"""The absorb anchor: KL(base || adapted) on replayed paths, the adapter switched off for
the base's distributions (llm_service/absorb.py). Trained on the micro zoo's LLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lada.config import ConfigError
from lada.modeling import completion_log_distributions, encode_pair
from lada.tasks import format_prompt, format_target, load_dataset
from llm_service.absorb import TrainingOptions, _batch_loss, _Pair, _trainable_model, train_adapter
from llm_service.settings import LLMServiceExtras

PROBLEMS = load_dataset("synthetic:domains=all,n=12,seed=5")
CONTRIBUTED = [(format_prompt(p.question), format_target(p.reference)) for p in PROBLEMS[:4]]
REPLAYED = [(format_prompt(p.question), format_target(p.reference)) for p in PROBLEMS[4:]]


def _options(anchor_weight: float) -> TrainingOptions:
    return TrainingOptions(
        epochs=3, learning_rate=5e-3, lora_rank=4, batch_size=4, anchor_weight=anchor_weight
    )


def _replay_kl(model: torch.nn.Module, tokenizer, examples) -> float:
    """Mean per-token KL(base || adapted) over `examples`' paths."""
    rows = [encode_pair(tokenizer, p, c) for p, c in examples]
    with torch.no_grad():
        adapted = torch.cat(completion_log_distributions(model, rows, tokenizer.pad_token_id))
        with model.disable_adapter():
            base = torch.cat(completion_log_distributions(model, rows, tokenizer.pad_token_id))
    return float((base.exp() * (base - adapted)).sum(-1).mean())


def test_a_fresh_adapter_adds_no_anchor_loss(micro_zoo) -> None:
    """LoRA starts as the identity, so the adapted model is the base and the KL is 0."""
    model, tokenizer = _trainable_model(Path(micro_zoo.llm), None, rank=4)
    batch = [_Pair(*encode_pair(tokenizer, p, c), anchored=True) for p, c in CONTRIBUTED + REPLAYED]
    with torch.no_grad():
        plain = _batch_loss(model, batch, tokenizer.pad_token_id, anchor_weight=0.0)
        anchored = _batch_loss(model, batch, tokenizer.pad_token_id, anchor_weight=5.0)
    assert float(anchored) == pytest.approx(float(plain), abs=1e-6)


def test_an_anchored_absorb_stays_closer_to_the_base_on_replayed_paths(
    micro_zoo, tmp_path: Path
) -> None:
    """Same seed, data and steps: weight 5 leaves under half the drift of weight 0."""
    from peft import PeftModel

    from lada.modeling import load_causal_lm

    drift = {}
    for weight in (0.0, 5.0):
        trained = train_adapter(
            Path(micro_zoo.llm),
            None,
            CONTRIBUTED,
            _options(weight),
            tmp_path / f"anchor-{weight}",
            REPLAYED,
        )
        base, tokenizer = load_causal_lm(Path(micro_zoo.llm))
        model = PeftModel.from_pretrained(base, str(trained.adapter_dir))
        drift[weight] = _replay_kl(model, tokenizer, REPLAYED)
    assert drift[0.0] > 0
    assert drift[5.0] < 0.5 * drift[0.0]


def test_replayed_paths_train_like_contributions_without_the_anchor(
    micro_zoo, tmp_path: Path
) -> None:
    """Weight 0 is the NLL over every path, wherever the caller put the replay."""
    split = train_adapter(
        Path(micro_zoo.llm), None, CONTRIBUTED, _options(0.0), tmp_path / "a", REPLAYED
    )
    joined = train_adapter(
        Path(micro_zoo.llm), None, CONTRIBUTED + REPLAYED, _options(0.0), tmp_path / "b"
    )
    assert (split.steps, split.final_loss) == (joined.steps, pytest.approx(joined.final_loss))


@pytest.mark.parametrize("raw", ["-0.5", "nan", "inf"])
def test_an_anchor_weight_below_zero_or_not_finite_is_rejected(raw: str) -> None:
    extras = LLMServiceExtras.from_env({"LADA_LLM_ABSORB_ANCHOR_WEIGHT": raw})
    with pytest.raises(ConfigError, match="absorb_anchor_weight: .* finite number >= 0"):
        extras.check()
