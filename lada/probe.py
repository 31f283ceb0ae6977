"""Learnability probe (`lada models probe`): does the zoo give LaDa something to win or lose?

Measures, on the held-out test set (greedy decoding, never in any training corpus):

1. per model and domain (and number of steps) accuracy: the LLM should be strong on the
   public domains and blind on the client-only one, each SLM competent at home only;
2. distillation of `distill_samples` foreign-domain public samples (LLM paths, at least one
   correct) into each SLM with the agent's default trainer (`slm_agent.rounds.run_round`,
   contrastive loss, private home batch): change on 1-2-step vs 5-6-step foreign problems
   and on home;
3. the premise of the method (docs/method.md section 1.4): one round on public samples of
   every public domain, then the realised reward per quintile of the learnability gap;
4. the LLM direction: the client-only SLM's sound paths on public client-only samples,
   absorbed into the LLM (LoRA, the LLM service's absorb defaults), LLM before/after.

Public samples come from `pool_spec` minus the test set. Everything is seeded; threads
default to 1 (tiny models, shared machines).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lada.config import (
    ABSORB_ROUTE_GATE,
    DISTILL_ROUTE_GATE,
    LadaHyperParams,
    LLMServiceExtras,
    TrainerSettings,
)
from lada.evaluation import default_max_new_tokens
from lada.learnability import learnability_gaps, sample_rewards
from lada.modeling import generate, load_causal_lm, score_completions
from lada.tasks import (
    ALL_DOMAINS,
    CLIENT_DOMAINS,
    DOMAINS,
    Problem,
    format_prompt,
    is_correct,
    is_sound,
    load_dataset,
)
from lada.zoo import ZOO_EVAL_SPEC, ZooManifest, build_zoo

PROBE_POOL_SPEC = "synthetic:domains=all+units,n=4000,seed=11"
FOREIGN = {  # which foreign domain each SLM is taught in the distillation probe
    "purchases": "rates",
    "rates": "percentages",
    "percentages": "comparisons",
    "comparisons": "purchases",
    "units": "purchases",
}
BUCKETS = {"1-2": (1, 2), "3-4": (3, 4), "5-6": (5, 6)}
MARK_BEGIN = "<!-- probe:begin -->"
MARK_END = "<!-- probe:end -->"


@dataclass
class ProbeSettings:
    """What the probe runs on and how big each experiment is."""

    profile: str = "demo"
    root: Path | None = None
    test_spec: str = ZOO_EVAL_SPEC
    pool_spec: str = PROBE_POOL_SPEC
    distill_samples: int = 200
    gap_samples_per_domain: int = 50
    absorb_samples: int = 200
    private_size: int = 300
    paths_per_sample: int = LadaHyperParams.paths_per_sample
    temperature: float = LadaHyperParams.path_temperature
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    loss: str = "contrastive"
    seed: int = 0
    slms: tuple[str, ...] = ()  # distillation and gap probes for these SLMs (empty: all)
    absorb_learning_rate: float = 0.0  # 0: the LLM service's default (LLMServiceExtras)
    absorb_epochs: int = 0  # 0: the LLM service's default
    absorb_min_steps: int = -1  # a floor on the absorb's steps; <0: the LLM service's default
    absorb_replay_ratio: float = -1.0  # own paths replayed per contributed one; <0: the default
    absorb_anchor_weight: float = -1.0  # KL to base on replayed paths; <0: the default
    absorb_route: str = ""  # which prompts the adapter answers (all, gate); "": the default
    absorb_replay_trains: bool | None = None  # the adapter trains on the replay; None: default
    cache_dir: Path | None = None  # greedy results and LLM paths, keyed by model key


Log = Callable[[str], None]


def _buckets(rows: Sequence[tuple[Problem, bool]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"all": _mean([ok for _, ok in rows])}
    for name, (lo, hi) in BUCKETS.items():
        out[name] = _mean([ok for p, ok in rows if lo <= p.difficulty <= hi])
    return out


def _mean(values: Sequence[Any]) -> float | None:
    return float(np.mean(values)) if len(values) else None


GEN_BATCH = 200  # prompts per generate call: tiny models on a CPU are overhead-bound


def greedy_texts(model: Any, tok: Any, problems: Sequence[Problem]) -> list[str]:
    """Greedy completion per problem."""
    if not problems:
        return []
    model.eval()
    budget = default_max_new_tokens(tok, problems)
    prompts = [format_prompt(p.question) for p in problems]
    return [t[0] for t in generate(model, tok, prompts, budget, batch_size=GEN_BATCH)]


def greedy_correct(model: Any, tok: Any, problems: Sequence[Problem]) -> list[bool]:
    """Greedy answer correctness per problem."""
    texts = greedy_texts(model, tok, problems)
    return [is_correct(t, p.answer) for t, p in zip(texts, problems, strict=True)]


def accuracy_table(
    correct: dict[str, dict[str, bool]], test: Sequence[Problem]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """model -> domain -> bucket -> accuracy."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, by_id in correct.items():
        out[name] = {
            d: _buckets([(p, by_id[p.id]) for p in test if p.domain == d]) for d in ALL_DOMAINS
        }
    return out


def llm_paths(
    model: Any, tok: Any, problems: Sequence[Problem], m: int, temperature: float, seed: int
) -> dict[str, list[Any]]:
    """M sampled LLM paths per problem with nlp_L and correctness (as the LLM service)."""
    from slm_agent.rounds import LLMPath

    prompts = [format_prompt(p.question) for p in problems]
    budget = default_max_new_tokens(tok, problems)
    if m == 1 and temperature == 0:
        texts = [[t] for t in greedy_texts(model, tok, problems)]
    else:
        texts = generate(
            model,
            tok,
            prompts,
            budget,
            greedy=False,
            temperature=temperature,
            n=m,
            seed=seed,
            batch_size=max(1, GEN_BATCH // m),
        )
    flat_p = [pr for pr, row in zip(prompts, texts, strict=True) for _ in row]
    flat_t = [t if t.strip() else " " for row in texts for t in row]
    scores = score_completions(model, tok, flat_p, flat_t)
    out: dict[str, list[Any]] = {}
    offset = 0
    for p, row in zip(problems, texts, strict=True):
        out[p.id] = [
            LLMPath(t, scores[offset + j].normalized, is_correct(t, p.answer))
            for j, t in enumerate(row)
        ]
        offset += len(row)
    return out


def _trainer(path: Path, private: Sequence[Problem], settings: ProbeSettings) -> Any:
    from slm_agent.losses import make_loss
    from slm_agent.trainer import LocalTrainer

    return LocalTrainer.from_path(path, make_loss(settings.loss), private, settings.trainer)


def _round(trainer: Any, samples: Sequence[Problem], paths: dict[str, list[Any]]) -> Any:
    from slm_agent.rounds import AllocatedSample, run_round

    pool = {p.id: p for p in samples}
    return run_round(trainer, 1, [AllocatedSample(p.id) for p in samples], pool, paths)


def distill_probe(
    slm: str,
    path: Path,
    home: str,
    foreign: str,
    private: Sequence[Problem],
    samples: Sequence[Problem],
    paths: dict[str, list[Any]],
    test: Sequence[Problem],
    before: dict[str, bool],
    settings: ProbeSettings,
) -> dict[str, Any]:
    """One round on `samples` (foreign), then test accuracy on foreign and home."""
    trainer = _trainer(path, private, settings)
    outcome = _round(trainer, samples, paths)
    chosen = [p for p in test if p.domain in (home, foreign)]
    after = dict(zip([p.id for p in chosen], trainer.greedy_correct(chosen), strict=True))
    result: dict[str, Any] = {
        "slm": slm,
        "home_domain": home,
        "foreign_domain": foreign,
        "samples": len(samples),
        "correct_llm_paths": sum(x.correct for p in samples for x in paths[p.id]),
        "train_steps": outcome.train.steps,
        "train_seconds": round(outcome.train.seconds, 1),
        "allocated_accuracy": [outcome.accuracy_before, outcome.accuracy_after],
    }
    for label, domain in (("foreign", foreign), ("home", home)):
        rows = [p for p in chosen if p.domain == domain]
        result[label] = {
            "before": _buckets([(p, before[p.id]) for p in rows]),
            "after": _buckets([(p, after[p.id]) for p in rows]),
        }
    return result


def gap_probe(
    slm: str,
    path: Path,
    private: Sequence[Problem],
    samples: Sequence[Problem],
    paths: dict[str, list[Any]],
    settings: ProbeSettings,
) -> dict[str, Any]:
    """One round on public samples of every domain; realised reward per gap quintile."""
    trainer = _trainer(path, private, settings)
    outcome = _round(trainer, samples, paths)
    if len(samples) < 5:
        return {"slm": slm, "samples": len(samples), "train_steps": 0, "quintiles": []}
    m = max(len(s.paths) for s in outcome.stats)

    def grid(get: Callable[[Any], float], fill: float) -> np.ndarray:
        return np.array(
            [[get(x) for x in s.paths] + [fill] * (m - len(s.paths)) for s in outcome.stats]
        )

    llm = grid(lambda x: x.llm_normalized_logprob, np.nan)
    before = grid(lambda x: x.slm_normalized_logprob_before, np.nan)
    after = grid(lambda x: x.slm_normalized_logprob_after, np.nan)
    correct = grid(lambda x: float(x.correct), 0.0).astype(bool)
    cb = np.array([s.correct_before for s in outcome.stats])
    ca = np.array([s.correct_after for s in outcome.stats])
    gaps = learnability_gaps(llm, before, correct)
    rewards = sample_rewards(llm, before, after, correct, cb, ca)
    order = np.argsort(gaps, kind="stable")
    quintiles = []
    for k, idx in enumerate(np.array_split(order, 5)):
        doms = np.array([samples[i].domain for i in idx])
        quintiles.append(
            {
                "quintile": k + 1,
                "n": len(idx),
                "gap": [float(gaps[idx].min()), float(gaps[idx].max())],
                "reward": float(rewards[idx].mean()),
                "nlp_progress": float((rewards[idx] - (ca[idx].astype(float) - cb[idx])).mean()),
                "correct_before": float(cb[idx].mean()),
                "correct_after": float(ca[idx].mean()),
                "domains": {d: int((doms == d).sum()) for d in sorted(set(doms))},
            }
        )
    middle = float(np.mean([q["reward"] for q in quintiles[1:4]]))
    flips = [q["correct_after"] - q["correct_before"] for q in quintiles]
    flip_middle = float(np.mean(flips[1:4]))
    return {
        "slm": slm,
        "samples": len(samples),
        "train_steps": outcome.train.steps,
        "quintiles": quintiles,
        "middle_mean": middle,
        "premise_holds": middle > quintiles[0]["reward"] and middle > quintiles[4]["reward"],
        "flip_middle_mean": flip_middle,
        "premise_holds_greedy": flip_middle > flips[0] and flip_middle > flips[4],
    }


def absorb_probe(
    manifest: ZooManifest,
    client_slm: str,
    samples: Sequence[Problem],
    replay_pool: Sequence[Problem],
    test: Sequence[Problem],
    llm_before: dict[str, bool],
    settings: ProbeSettings,
) -> dict[str, Any]:
    """The client-only SLM's sound greedy paths on public samples, absorbed by the LLM with
    the LLM's own sound paths on `replay_pool` replayed beside them (as the LLM service)."""
    from peft import PeftModel

    from llm_service.absorb import TrainingOptions, replay_candidates, sound_replay, train_adapter
    from llm_service.gate import replay_to_train

    model, tok = load_causal_lm(manifest.slms[client_slm])
    texts = greedy_texts(model, tok, samples)
    sound = [
        (format_prompt(p.question), t)
        for p, t in zip(samples, texts, strict=True)
        if is_sound(t, p.answer)
    ][: settings.absorb_samples]
    extras = LLMServiceExtras()
    ratio = settings.absorb_replay_ratio
    count = round((ratio if ratio >= 0 else extras.absorb_replay_ratio) * len(sound))
    base, ltok = load_causal_lm(manifest.llm)
    candidates = replay_candidates(replay_pool, {p.id for p in samples}, count, settings.seed)
    replay = sound_replay(candidates, lambda ps: greedy_texts(base, ltok, ps), count)
    options = TrainingOptions(
        epochs=settings.absorb_epochs or extras.absorb_epochs,
        min_steps=(
            settings.absorb_min_steps if settings.absorb_min_steps >= 0 else extras.absorb_min_steps
        ),
        learning_rate=settings.absorb_learning_rate or extras.absorb_learning_rate,
        lora_rank=extras.absorb_lora_rank,
        batch_size=extras.absorb_batch_size,
        seed=settings.seed,
        anchor_weight=(
            settings.absorb_anchor_weight
            if settings.absorb_anchor_weight >= 0
            else extras.absorb_anchor_weight
        ),
    )
    route = settings.absorb_route or extras.absorb_route
    trains = settings.absorb_replay_trains
    replay_trains = replace(
        extras,
        absorb_route=route,
        absorb_replay_trains=extras.absorb_replay_trains if trains is None else trains,
    ).replay_trains_adapter
    gate = _absorb_gate(route, sound, replay)
    trained_replay = replay_to_train(gate, replay, replay_trains)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        trained = train_adapter(
            manifest.llm, None, sound, options, Path(tmp) / "adapter", trained_replay
        )
        seconds = time.perf_counter() - started
        merged = PeftModel.from_pretrained(base, str(trained.adapter_dir)).merge_and_unload()
    routed = _adapter_routes(gate, test)
    to_adapter = [p for p, hit in zip(test, routed, strict=True) if hit]
    after = dict(llm_before) | dict(
        zip([p.id for p in to_adapter], greedy_correct(merged, ltok, to_adapter), strict=True)
    )
    return {
        "slm": client_slm,
        "offered": len(samples),
        "sound_paths": len(sound),
        "replayed": len(replay),
        "replay_trained": len(trained_replay),
        "absorb": asdict(options)
        | {
            "steps": trained.steps,
            "seconds": round(seconds, 1),
            "route": route,
            "replay_trains": replay_trains,
        },
        "routed_to_adapter": {
            d: _mean([hit for p, hit in zip(test, routed, strict=True) if p.domain == d])
            for d in ALL_DOMAINS
        },
        "llm": {
            d: {
                "before": _buckets([(p, llm_before[p.id]) for p in test if p.domain == d]),
                "after": _buckets([(p, after[p.id]) for p in test if p.domain == d]),
            }
            for d in ALL_DOMAINS
        },
    }


def _absorb_gate(
    route: str, absorbed: Sequence[tuple[str, str]], replay: Sequence[tuple[str, str]]
) -> Any:
    """The gate the LLM service fits for this absorb (None under `all`)."""
    from lada.gate import AdapterGate

    if route != ABSORB_ROUTE_GATE:
        return None
    return AdapterGate([p for p, _ in absorbed], [p for p, _ in replay])


def _adapter_routes(gate: Any, test: Sequence[Problem]) -> list[bool]:
    """Which test problems the adapter answers, as the service routes them (the base
    model's greedy answers stand for the rest: greedy decoding is deterministic)."""
    if gate is None:
        return [True] * len(test)
    return gate.routes([format_prompt(p.question) for p in test])


def _with_correct_path(
    problems: Sequence[Problem], paths: dict[str, list[Any]], n: int
) -> list[Problem]:
    return [p for p in problems if any(x.correct for x in paths[p.id])][:n]


def run_probe(settings: ProbeSettings, log: Log = print) -> dict[str, Any]:
    """Every measurement; returns a JSON-ready dict (see `render_markdown`)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    manifest = build_zoo(settings.profile, settings.root, progress=False)
    test = load_dataset(settings.test_spec)
    test_ids = {p.id for p in test}
    pool = [p for p in load_dataset(settings.pool_spec) if p.id not in test_ids]
    by_domain = {d: [p for p in pool if p.domain == d] for d in ALL_DOMAINS}
    homes = {name: manifest.models[name].domains[0] for name in manifest.slms}
    result: dict[str, Any] = {
        "settings": _settings_json(settings),
        "zoo": manifest.key,
        "homes": homes,
    }

    log(f"accuracy table: {len(test)} test problems x {1 + len(manifest.slms)} models")
    correct: dict[str, dict[str, bool]] = {}
    for name in manifest.models:
        t0 = time.perf_counter()
        correct[name] = cached_correct(settings, manifest, name, test)
        log(f"  {name}: {time.perf_counter() - t0:.0f} s")
    result["accuracy"] = accuracy_table(correct, test)
    result["params"] = {n: manifest.models[n].params for n in manifest.models}

    n_distill = int(settings.distill_samples * 1.15) + 10
    n_gap = int(settings.gap_samples_per_domain * 1.3) + 5
    foreigns = [FOREIGN.get(homes[n], DOMAINS[0]) for n in manifest.slms if _selected(settings, n)]
    distill_pool = {d: by_domain[d][:n_distill] for d in DOMAINS if d in foreigns}
    gap_pool = {d: by_domain[d][n_distill : n_distill + n_gap] for d in DOMAINS}
    log("LLM paths on public samples (greedy for distillation, sampled for the gaps)")
    paths = cached_paths(settings, manifest, [p for v in distill_pool.values() for p in v], 1, 0.0)
    sampled = cached_paths(
        settings,
        manifest,
        [p for v in gap_pool.values() for p in v],
        settings.paths_per_sample,
        settings.temperature,
    )
    paths.update(sampled)
    result["llm_path_accuracy"] = {
        "greedy": {
            d: float(np.mean([x.correct for p in v for x in paths[p.id]]))
            for d, v in distill_pool.items()
        },
        "sampled": {
            d: float(np.mean([x.correct for p in v for x in paths[p.id]]))
            for d, v in gap_pool.items()
        },
    }

    result["distill"], result["gaps"] = [], []
    for name, path in manifest.slms.items():
        if not _selected(settings, name):
            continue
        home = homes[name]
        private = by_domain[home][-settings.private_size :]
        foreign = FOREIGN.get(home, DOMAINS[0])
        samples = _with_correct_path(distill_pool[foreign], paths, settings.distill_samples)
        t0 = time.perf_counter()
        result["distill"].append(
            distill_probe(
                name, path, home, foreign, private, samples, paths, test, correct[name], settings
            )
        )
        log(f"distill: {name} <- {len(samples)} {foreign} ({time.perf_counter() - t0:.0f} s)")
        mixed = [
            p
            for d in DOMAINS
            for p in _with_correct_path(gap_pool[d], paths, settings.gap_samples_per_domain)
        ]
        t0 = time.perf_counter()
        result["gaps"].append(gap_probe(name, path, private, mixed, paths, settings))
        log(f"gap quintiles: {name} on {len(mixed)} samples ({time.perf_counter() - t0:.0f} s)")

    client = [n for n, d in homes.items() if d in CLIENT_DOMAINS]
    if client:
        domain = homes[client[0]]
        offered = by_domain[domain][: int(settings.absorb_samples * 1.5)]
        log(f"absorb: {client[0]}'s sound paths on {len(offered)} public {domain} samples")
        replay_pool = [p for d in DOMAINS for p in by_domain[d][-settings.absorb_samples :]]
        result["absorb"] = absorb_probe(
            manifest, client[0], offered, replay_pool, test, correct["llm"], settings
        )
    result["targets"] = check_targets(result)
    result["machine"] = machine()
    result["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _selected(settings: ProbeSettings, name: str) -> bool:
    return not settings.slms or name in settings.slms


def _cache_file(settings: ProbeSettings, kind: str, parts: Sequence[Any]) -> Path | None:
    if settings.cache_dir is None:
        return None
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(json.dumps(list(parts), default=str).encode()).hexdigest()[:16]
    return settings.cache_dir / f"{kind}-{digest}.json"


def cached_correct(
    settings: ProbeSettings, manifest: ZooManifest, name: str, problems: Sequence[Problem]
) -> dict[str, bool]:
    """Greedy correctness of zoo model `name` per problem ID (cached by model key)."""
    ids = [p.id for p in problems]
    file = _cache_file(settings, "correct", [manifest.models[name].key, ids])
    if file is not None and file.is_file():
        return json.loads(file.read_text())
    model, tok = load_causal_lm(manifest.models[name].path)
    out = dict(zip(ids, greedy_correct(model, tok, problems), strict=True))
    if file is not None:
        file.write_text(json.dumps(out))
    return out


def cached_paths(
    settings: ProbeSettings,
    manifest: ZooManifest,
    problems: Sequence[Problem],
    m: int,
    temperature: float,
) -> dict[str, list[Any]]:
    """The LLM's paths per problem ID (cached by model key, problems and sampling)."""
    from slm_agent.rounds import LLMPath

    key = manifest.models["llm"].key
    parts = [key, [p.id for p in problems], m, temperature, settings.seed]
    file = _cache_file(settings, "paths", parts)
    if file is not None and file.is_file():
        raw = json.loads(file.read_text())
        return {k: [LLMPath(**x) for x in v] for k, v in raw.items()}
    model, tok = load_causal_lm(manifest.llm)
    out = llm_paths(model, tok, problems, m, temperature, settings.seed)
    if file is not None:
        file.write_text(json.dumps({k: [asdict(x) for x in v] for k, v in out.items()}))
    return out


def _settings_json(settings: ProbeSettings) -> dict[str, Any]:
    data = asdict(settings)
    data["root"] = str(settings.root) if settings.root else None
    data["cache_dir"] = str(settings.cache_dir) if settings.cache_dir else None
    return data


def machine() -> str:
    """CPU model, cores and torch threads, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def check_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 14 with the measured value and whether it holds."""
    acc = r["accuracy"]
    out: list[dict[str, Any]] = []

    def add(name: str, value: str, ok: bool) -> None:
        out.append({"target": name, "measured": value, "holds": bool(ok)})

    for d in DOMAINS:
        a = acc["llm"][d]["all"] or 0.0
        add(f"LLM >= 90% on {d}", _pct(a), a >= 0.9)
    for d in CLIENT_DOMAINS:
        a = acc["llm"][d]["all"] or 0.0
        add(f"LLM <= 20% on {d} (client-only)", _pct(a), a <= 0.2)
    for name, table in acc.items():
        if name == "llm":
            continue
        home = r["homes"][name]
        h = table[home]["all"] or 0.0
        add(f"{name} >= 60% at home", _pct(h), h >= 0.6)
        worst = max((table[d]["all"] or 0.0) for d in ALL_DOMAINS if d != home)
        add(f"{name} <= 25% on each foreign domain", f"max {_pct(worst)}", worst <= 0.25)
    for d in r.get("distill", []):
        f, h = d["foreign"], d["home"]
        easy = (f["after"]["1-2"] or 0) - (f["before"]["1-2"] or 0)
        hard = (f["after"]["5-6"] or 0) - (f["before"]["5-6"] or 0)
        home = (h["after"]["all"] or 0) - (h["before"]["all"] or 0)
        tag = f"{d['slm']} <- {d['foreign_domain']} ({d['samples']} paths)"
        add(f"{tag}: +>=20 pts on 1-2 steps", f"{100 * easy:+.1f}", easy >= 0.2)
        add(f"{tag}: <=+10 pts on 5-6 steps", f"{100 * hard:+.1f}", hard <= 0.1)
        add(f"{tag}: home -<=5 pts", f"{100 * home:+.1f}", home >= -0.05)
    for g in r.get("gaps", []):
        if not g["quintiles"]:
            continue
        q = [x["reward"] for x in g["quintiles"]]
        add(
            f"{g['slm']}: middle gap quintiles earn more than lowest and highest",
            f"Q1 {q[0]:.3f}, Q2-4 {g['middle_mean']:.3f}, Q5 {q[4]:.3f}",
            g["premise_holds"],
        )
        add(
            f"{g['slm']}: same, greedy-accuracy term only",
            f"Q2-4 {100 * g.get('flip_middle_mean', 0.0):+.1f} pts",
            g.get("premise_holds_greedy", False),
        )
    a = r.get("absorb")
    if a:
        dom = CLIENT_DOMAINS[0]
        slm_home = acc[a["slm"]][dom]["all"] or 0.0
        add(f"{a['slm']} >= 60% on {dom}", _pct(slm_home), slm_home >= 0.6)
        llm = a["llm"]
        gain = (llm[dom]["after"]["all"] or 0) - (llm[dom]["before"]["all"] or 0)
        add(
            f"Absorb of {a['sound_paths']} sound paths: LLM +>=20 pts on {dom}",
            f"{100 * gain:+.1f}",
            gain >= 0.2 and a["sound_paths"] <= 200,
        )
        worst = min((llm[d]["after"]["all"] or 0) - (llm[d]["before"]["all"] or 0) for d in DOMAINS)
        add(
            "Absorb: LLM -<=3 pts on each public domain",
            f"worst {100 * worst:+.1f}",
            worst >= -0.03,
        )
    return out


def _trainer_words(t: dict[str, Any], loss: str) -> str:
    """The trainer a probe ran, in words (`default` when it is the agent's default)."""
    which = "default trainer" if t == asdict(TrainerSettings()) else "trainer"
    words = (
        f"{which} (`{loss}` loss, lr {t['learning_rate']}, {t['epochs']} epochs, "
        f"{t['samples_per_step']} samples + {t['private_per_step']} private per step"
    )
    if t.get("distill_route") == DISTILL_ROUTE_GATE:
        words += (
            f"; distill_route `gate`: an expert learns the allocation at lr "
            f"{t['expert_learning_rate']}, {t['expert_epochs']} epochs, "
            f"{t['expert_lr_schedule']} schedule, and answers the prompts its gate sends it"
        )
    return words + ")"


def render_markdown(r: dict[str, Any]) -> str:
    """The probe's tables (what goes between the probe markers in docs/zoo.md)."""
    s = r["settings"]
    lines = [
        f"Measured {r['date']} on {r['machine']} by `lada models probe` "
        f"({r['seconds']:.0f} s; test set `{s['test_spec']}`, public samples from "
        f"`{s['pool_spec']}` minus the test set; zoo `{r['zoo']}`).",
        "",
        "**Accuracy** (greedy, 200 test problems per domain; steps 1-2 / 3-4 / 5-6 in brackets)",
        "",
        "| model | params | " + " | ".join(ALL_DOMAINS) + " |",
        "|---|---:|" + "---|" * len(ALL_DOMAINS),
    ]
    for name, table in r["accuracy"].items():
        cells = [
            f"{_pct(t['all'])} ({_pct(t['1-2'])} / {_pct(t['3-4'])} / {_pct(t['5-6'])})"
            for t in (table[d] for d in ALL_DOMAINS)
        ]
        lines.append(f"| `{name}` | {r['params'][name]:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "LLM path accuracy on the public samples: greedy (distillation) "
        + ", ".join(f"{d} {_pct(v)}" for d, v in r["llm_path_accuracy"]["greedy"].items())
        + f"; sampled (gaps, M={s['paths_per_sample']}, T={s['temperature']}) "
        + ", ".join(f"{d} {_pct(v)}" for d, v in r["llm_path_accuracy"]["sampled"].items()),
        "",
        f"**Distillation** of {s['distill_samples']} correct greedy LLM paths of foreign public "
        f"samples in one round of the {_trainer_words(s['trainer'], s['loss'])}; "
        "test accuracy before -> after",
        "",
        "| SLM <- foreign | steps | foreign 1-2 | foreign 3-4 | foreign 5-6 | foreign all | "
        "home all |",
        "|---|---:|---|---|---|---|---|",
    ]
    for d in r["distill"]:
        f, h = d["foreign"], d["home"]
        cells = [f"{_pct(f['before'][b])} -> {_pct(f['after'][b])}" for b in (*BUCKETS, "all")]
        home = f"{_pct(h['before']['all'])} -> {_pct(h['after']['all'])}"
        lines.append(
            f"| `{d['slm']}` <- {d['foreign_domain']} ({d['samples']}) | {d['train_steps']} | "
            + " | ".join(cells)
            + f" | {home} |"
        )
    lines += [
        "",
        "**Realised reward per learnability-gap quintile** (method.md 1.4: nlp progress of y* + "
        "greedy flip; one default round on public samples of the four public domains; Q1 = "
        "smallest gap)",
        "",
        "| SLM | Q1 | Q2 | Q3 | Q4 | Q5 | Q2-4 mean | middle > both ends |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    gaps = [g for g in r["gaps"] if g["quintiles"]]
    for g in gaps:
        q = [f"{x['reward']:+.3f}" for x in g["quintiles"]]
        ok = "yes" if g["premise_holds"] else "no"
        lines.append(f"| `{g['slm']}` | " + " | ".join(q) + f" | {g['middle_mean']:+.3f} | {ok} |")
    lines += [
        "",
        "The greedy term alone (change of greedy accuracy on the allocated samples, points):",
        "",
        "| SLM | Q1 | Q2 | Q3 | Q4 | Q5 | Q2-4 mean | middle > both ends |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for g in gaps:
        q = [f"{100 * (x['correct_after'] - x['correct_before']):+.1f}" for x in g["quintiles"]]
        ok = "yes" if g.get("premise_holds_greedy") else "no"
        mid = 100 * g.get("flip_middle_mean", 0.0)
        lines.append(f"| `{g['slm']}` | " + " | ".join(q) + f" | {mid:+.1f} | {ok} |")
    lines += ["", "Gap range and home share per quintile:", ""]
    for g in (g for g in r["gaps"] if g["quintiles"]):
        parts = [
            f"Q{x['quintile']} [{x['gap'][0]:.2f}, {x['gap'][1]:.2f}] "
            f"acc {_pct(x['correct_before'])}->{_pct(x['correct_after'])}"
            for x in g["quintiles"]
        ]
        lines.append(f"- `{g['slm']}`: " + "; ".join(parts))
    a = r.get("absorb")
    if a:
        lines += [
            "",
            f"**Absorb** (LLM direction): `{a['slm']}` wrote {a['sound_paths']} sound greedy "
            f"paths on {a['offered']} public samples; LoRA rank {a['absorb']['lora_rank']}, "
            f"lr {a['absorb']['learning_rate']}, {a['absorb']['epochs']} epochs "
            f"({a['absorb']['steps']} steps, {a['absorb']['seconds']:.0f} s; "
            f"{a['replayed']} of its own paths replayed, "
            f"{a.get('replay_trained', a['replayed'])} of them trained), route "
            f"`{a['absorb'].get('route', 'all')}` (the share of each domain's test prompts the "
            "adapter answers; the base model answers the rest). LLM test accuracy before -> after:",
            "",
            "| domain | before | after | answered by the adapter |",
            "|---|---:|---:|---:|",
        ]
        routed = a.get("routed_to_adapter", {})
        for d, v in a["llm"].items():
            lines.append(
                f"| {d} | {_pct(v['before']['all'])} | {_pct(v['after']['all'])} "
                f"| {_pct(routed.get(d, 1.0))} |"
            )
    lines += ["", "**Targets**", "", "| target | measured | holds |", "|---|---|---|"]
    for t in r["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['holds'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def write_docs(markdown: str, doc: Path) -> None:
    """Replace the text between the probe markers of `doc` (append them if absent)."""
    text = doc.read_text() if doc.exists() else ""
    block = f"{MARK_BEGIN}\n{markdown}{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, _, rest = text.partition(MARK_BEGIN)
        _, _, tail = rest.partition(MARK_END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Learnability probe\n\n" + block + "\n"
    doc.write_text(text)


def save(result: dict[str, Any], out: Path) -> None:
    """The full result as JSON."""
    out.write_text(json.dumps(result, indent=2))


def dev_set(
    manifest: ZooManifest, name: str, domains: Sequence[str], per_domain: int
) -> list[Problem]:
    """Problems for tuning (never the test set): a fresh seed minus the test set and minus
    every problem of the model's own training corpus."""
    from lada.zoo import profile_specs, training_corpus

    spec = next(s for s in profile_specs(manifest.profile)[1] if s.name == name)
    seen = {p.id for p in training_corpus(spec)} | {p.id for p in load_dataset(manifest.eval_spec)}
    fresh = load_dataset(
        f"synthetic:domains={'+'.join(domains)},n={per_domain * 3 * len(domains)},seed=9"
    )
    out: list[Problem] = []
    for d in domains:
        out += [p for p in fresh if p.domain == d and p.id not in seen][:per_domain]
    return out


def sweep_trainer(
    settings: ProbeSettings,
    configs: Sequence[dict[str, Any]],
    slm: str = "slm-purchases",
    allocation: int = 24,
    dev_per_domain: int = 120,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Per-round trainer settings on a dev set: one round of `distill_samples` foreign
    samples (change on foreign 1-2 / 5-6 steps and home), and one round of a default-size
    allocation (`allocation` mixed public samples: accuracy on what it was given)."""
    import dataclasses

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    manifest = build_zoo(settings.profile, settings.root, progress=False)
    home = manifest.models[slm].domains[0]
    foreign = FOREIGN[home]
    test_ids = {p.id for p in load_dataset(settings.test_spec)}
    pool = [p for p in load_dataset(settings.pool_spec) if p.id not in test_ids]
    dev = dev_set(manifest, slm, (home, foreign), dev_per_domain)
    dev_ids = {p.id for p in dev}
    pool = [p for p in pool if p.id not in dev_ids]
    by_domain = {d: [p for p in pool if p.domain == d] for d in ALL_DOMAINS}
    private = by_domain[home][-settings.private_size :]
    llm, ltok = load_causal_lm(manifest.llm)
    foreign_pool = by_domain[foreign][: int(settings.distill_samples * 1.3) + 10]
    mixed_pool = [p for d in DOMAINS for p in by_domain[d][-40:]]
    paths = llm_paths(llm, ltok, foreign_pool + mixed_pool, 1, 0.0, 0)  # greedy, as the probe
    samples = _with_correct_path(foreign_pool, paths, settings.distill_samples)
    mixed = _with_correct_path(mixed_pool[::-1], paths, allocation)
    model, tok = load_causal_lm(manifest.slms[slm])
    base = dict(zip([p.id for p in dev], greedy_correct(model, tok, dev), strict=True))
    rows = []
    for config in configs:
        fields = {k: v for k, v in config.items() if k != "loss"}
        trainer_settings = dataclasses.replace(settings.trainer, **fields)
        run = dataclasses.replace(
            settings, trainer=trainer_settings, loss=config.get("loss", settings.loss)
        )
        trainer = _trainer(manifest.slms[slm], private, run)
        outcome = _round(trainer, samples, paths)
        after = dict(zip([p.id for p in dev], trainer.greedy_correct(dev), strict=True))
        small = _round(_trainer(manifest.slms[slm], private, run), mixed, paths)
        row: dict[str, Any] = {
            "config": config,
            "steps": outcome.train.steps,
            "seconds": round(outcome.train.seconds, 1),
            "allocation_steps": small.train.steps,
            "allocation_accuracy": [small.accuracy_before, small.accuracy_after],
            "allocation_nlp": [small.correct_path_nlp_before, small.correct_path_nlp_after],
        }
        for label, d in (("foreign", foreign), ("home", home)):
            items = [p for p in dev if p.domain == d]
            row[label] = {
                "before": _buckets([(p, base[p.id]) for p in items]),
                "after": _buckets([(p, after[p.id]) for p in items]),
            }
        log(json.dumps(row))
        rows.append(row)
    return rows
