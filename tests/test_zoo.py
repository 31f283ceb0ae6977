"""Model zoo: micro build, HF loading, caching, determinism, clear errors on broken dirs."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from lada.modeling import (
    ModelDirError,
    batched_completion_logprobs,
    completion_logprobs,
    encode_pair,
    generate,
    load_causal_lm,
    score_completions,
)
from lada.tasks import format_prompt, format_target, load_dataset
from lada.zoo import ZooManifest, build_tokenizer, build_zoo, profile_specs, train_lm


def test_micro_zoo_is_heterogeneous(micro_zoo: ZooManifest) -> None:
    infos = micro_zoo.models
    assert micro_zoo.llm.is_dir() and len(micro_zoo.slms) >= 3
    archs = {i.arch for i in infos.values()}
    assert len(archs) >= 2
    llm_tok = infos["llm"].tokenizer
    assert any(i.tokenizer != llm_tok for n, i in infos.items() if n != "llm")
    for info in infos.values():
        config = json.loads((Path(info.path) / "config.json").read_text())
        heads = config.get("num_attention_heads") or config["n_head"]
        hidden = config.get("hidden_size") or config["n_embd"]
        assert hidden // heads in (32, 64)  # vLLM CPU attention rejects other head sizes
        assert info.params > 0
        if info.role == "slm":
            assert info.params <= infos["llm"].params * 1.5 and len(info.domains) == 1


def test_zoo_models_load_generate_and_score(micro_zoo: ZooManifest) -> None:
    problem = load_dataset("synthetic:n=2,seed=3")[0]
    prompt, target = format_prompt(problem.question), format_target(problem.reference)
    for path in [micro_zoo.llm, *micro_zoo.slms.values()]:
        model, tok = load_causal_lm(path)
        [[text]] = generate(model, tok, [prompt], max_new_tokens=8)
        assert isinstance(text, str)
        [scored] = score_completions(model, tok, [prompt], [target])
        assert scored.token_count == len(encode_pair(tok, prompt, target)[1]) > 0
        assert math.isfinite(scored.joint) and scored.joint < 0
        assert scored.normalized == pytest.approx(scored.joint / scored.token_count)


def test_paths_sharing_a_prompt_score_as_they_do_one_at_a_time(micro_zoo: ZooManifest) -> None:
    """Several paths per prompt run the prompt once (its keys and values repeated), and
    prompts of different lengths are left padded: the log-probs must not notice, on every
    architecture of the zoo, for one-token paths and for prompts asked only once."""
    problems = load_dataset("synthetic:domains=all,n=3,seed=4")
    for path in [micro_zoo.llm, *micro_zoo.slms.values()]:
        model, tok = load_causal_lm(path)
        pairs = [
            encode_pair(tok, format_prompt(p.question), text)
            for p in problems
            for text in (format_target(p.reference), "7", format_target(p.reference)[:20])
        ]
        pairs.append(encode_pair(tok, "Q: one path only.", " 12 #### 12"))
        with torch.no_grad():
            together = batched_completion_logprobs(model, pairs, tok.pad_token_id, 4)
            alone = [completion_logprobs(model, [pair], tok.pad_token_id)[0] for pair in pairs]
        assert [len(t) for t in together] == [len(c) for _, c in pairs]
        assert any(len(c) == 1 for _, c in pairs)  # "7": a path of one token
        for got, want in zip(together, alone, strict=True):
            assert got.numpy() == pytest.approx(want.numpy(), abs=1e-4)


def test_rebuild_hits_cache_and_manifest_roundtrips(micro_zoo: ZooManifest) -> None:
    assert micro_zoo.path is not None
    start = time.perf_counter()
    again = build_zoo("micro", root=micro_zoo.path.parent, progress=False)
    assert time.perf_counter() - start < 10
    assert again.llm == micro_zoo.llm and again.slms == micro_zoo.slms
    loaded = ZooManifest.load(micro_zoo.path)
    assert loaded.to_json()["models"] == again.to_json()["models"]


def test_training_is_deterministic() -> None:
    toks, specs = profile_specs("micro")
    spec = dataclasses.replace(specs[1], train_steps=3, batch_size=4, corpus_n=50)
    states = []
    for _ in range(2):
        tok = build_tokenizer(dataclasses.replace(toks[0], corpus_n=100))
        torch.manual_seed(spec.seed)
        from lada.zoo import _MODEL_CLASSES, _config, training_corpus

        model = _MODEL_CLASSES[spec.arch](_config(spec, tok))
        train_lm(model, tok, training_corpus(spec), spec, lambda _loss: None)
        states.append((tok.get_vocab(), model.state_dict()))
    assert states[0][0] == states[1][0]
    for key, value in states[0][1].items():
        assert torch.equal(value, states[1][1][key]), key


@pytest.mark.parametrize("missing", ["config.json", "tokenizer.json", "model.safetensors"])
def test_missing_file_is_named(micro_zoo: ZooManifest, tmp_path: Path, missing: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(micro_zoo.llm, broken)
    (broken / missing).unlink()
    needle = "weights" if missing == "model.safetensors" else missing
    with pytest.raises(ModelDirError, match=needle):
        load_causal_lm(broken)
    with pytest.raises(ModelDirError, match="not found"):
        load_causal_lm(tmp_path / "nope")


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="valid: micro, demo"):
        build_zoo("huge")


def test_zoo_names_resolve(micro_zoo: ZooManifest, monkeypatch: pytest.MonkeyPatch) -> None:
    assert micro_zoo.path is not None
    monkeypatch.setenv("LADA_HOME", str(micro_zoo.path.parent.parent))
    model, _tok = load_causal_lm("zoo:micro/slm-rates")
    assert model.config.model_type == "gpt2"
    with pytest.raises(FileNotFoundError, match="available"):
        load_causal_lm("zoo:micro/nope")


def test_committed_weights_replace_training(
    micro_zoo: ZooManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lada.zoo import COMMITTED_ENV, export_zoo

    exported = export_zoo(micro_zoo, tmp_path / "committed")
    meta = json.loads((exported / "manifest.json").read_text())
    assert set(meta["models"]) == set(micro_zoo.models)
    monkeypatch.setenv(COMMITTED_ENV, str(tmp_path / "committed"))
    used = build_zoo("micro", root=tmp_path / "fresh", progress=False)
    for name, info in used.models.items():
        assert info.train_seconds == 0.0  # copied, not trained
        same = Path(info.path) / "model.safetensors"
        assert same.read_bytes() == (Path(micro_zoo.models[name].path) / same.name).read_bytes()
    weights = exported / "llm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # edited: sha256 mismatch
    rebuilt = build_zoo("micro", root=tmp_path / "fresh2", progress=False)
    assert rebuilt.models["llm"].train_seconds > 0
    assert rebuilt.models["slm-rates"].train_seconds == 0.0


def test_stages_continue_the_cached_main_run(tmp_path: Path) -> None:
    from lada.zoo import Stage, _build_model, model_key

    toks, specs = profile_specs("micro")
    tok_spec = dataclasses.replace(toks[0], corpus_n=100)
    tok = build_tokenizer(tok_spec)
    main = dataclasses.replace(specs[1], train_steps=3, batch_size=4, corpus_n=50)
    staged = dataclasses.replace(main, stages=(Stage(2, 1e-4, ("rates",), 0.5, 40, 7),))
    assert model_key(main, tok_spec) != model_key(staged, tok_spec)
    ticks: list[float] = []
    models = tmp_path / "models"
    models.mkdir()
    once = models / "once"
    _build_model(staged, tok, tok_spec, once, ticks.append)
    assert len(ticks) == 5 and (models / f"{main.name}-{model_key(main, tok_spec)}").is_dir()
    again = models / "again"  # the main run comes from the cache: same weights
    _build_model(staged, tok, tok_spec, again, ticks.append)
    assert (once / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()


def test_parallel_build_trains_the_same_weights(micro_zoo: ZooManifest, tmp_path: Path) -> None:
    parallel = build_zoo("micro", root=tmp_path / "parallel", progress=False, jobs=2)
    assert set(parallel.models) == set(micro_zoo.models)
    for name, info in parallel.models.items():
        assert info.train_seconds > 0, name
        assert info.key == micro_zoo.models[name].key, name
        weights = Path(info.path) / "model.safetensors"
        reference = Path(micro_zoo.models[name].path) / "model.safetensors"
        assert weights.read_bytes() == reference.read_bytes(), name


def test_parallel_build_refuses_zero_jobs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jobs: must be at least 1"):
        build_zoo("micro", root=tmp_path, progress=False, jobs=0)
