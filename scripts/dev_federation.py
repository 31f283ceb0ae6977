"""Score a simulated federation on a development set, never the test set (docs/zoo.md).

The demo's test set has 50 problems per domain (one problem is 2 points), too few to tell a
trainer or loss apart; this runs the demo's federation in-process (`lada.simulation`) with
one change and scores every agent before and after on a fresh synthetic draw minus every
question of the run's public, private and test sets (about 300 problems per domain).

    python scripts/dev_federation.py --out /tmp/dev --set loss=contrastive
    python scripts/dev_federation.py --out /tmp/dev --set policy=random
    python scripts/dev_federation.py --out /tmp/dev --set lada.correctness_reward_weight=4
    python scripts/dev_federation.py --out /tmp/dev --set agents.capacity=64 \
        --trainer private_per_step=0

`--set` takes dotted cluster-config keys (`agents.<field>` sets it on every agent);
`--trainer` sets an agent `TrainerSettings` field through its `LADA_AGENT_TRAINER__`
variable, or `learning_rate` / `epochs`, which the agent config owns, by patching it.
`--absorb-lr` sets the LLM service's absorb learning rate; the LLM's serving version after
the run is scored on the same dev set (the base model's scores computed once).
Results: one JSON per variant under `--out`, and the starting models' scores, computed once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from slm_agent.settings import CONFIG_OWNED_TRAINER_FIELDS as CONFIG_OWNED


def typed(value: str) -> Any:
    """YAML scalars, and floats such as 1e-12 that YAML 1.1 reads as strings."""
    loaded = yaml.safe_load(value)
    if isinstance(loaded, str):
        try:
            return float(loaded)
        except ValueError:
            return loaded
    return loaded


def apply_sets(config: Any, sets: dict[str, str]) -> Any:
    for key, raw in sets.items():
        value = typed(raw)
        head, _, field = key.partition(".")
        if head == "agents" and field:
            config.agents = [dataclasses.replace(a, **{field: value}) for a in config.agents]
        elif head == "lada" and field:
            config.lada = dataclasses.replace(config.lada, **{field: value})
        else:
            config = dataclasses.replace(config, **{key: value})
    return config


def patch_trainer(trainer: dict[str, str]) -> None:
    """Env for trainer fields the agent settings read; a patch for those its config owns."""
    import lada.simulation as simulation

    owned = {k: typed(v) for k, v in trainer.items() if k in CONFIG_OWNED}
    for key, value in trainer.items():
        if key not in CONFIG_OWNED:
            os.environ[f"LADA_AGENT_TRAINER__{key.upper()}"] = value
    if not owned:
        return
    original = simulation.agent_for_cluster

    def patched(*args: Any, **kwargs: Any) -> Any:
        config = original(*args, **kwargs)
        for key, value in owned.items():
            setattr(config, key, value)
        return config

    simulation.agent_for_cluster = patched


def patch_absorb_lr(rate: float) -> None:
    """The simulation builds the LLM service's extras with their defaults; change one."""
    import functools

    import lada.simulation as simulation

    simulation.LLMServiceExtras = functools.partial(  # type: ignore[misc]
        simulation.LLMServiceExtras, absorb_learning_rate=rate
    )


def llm_scores(base: Path, state_dir: Path, spec: str) -> dict[str, float]:
    """Greedy accuracy per domain of the LLM version the run ended serving (base if none)."""
    from peft import PeftModel

    from lada.modeling import load_causal_lm
    from lada.probe import greedy_correct
    from lada.tasks import load_dataset

    problems = load_dataset(spec)
    model, tok = load_causal_lm(base)
    versions = json.loads((state_dir / "versions.json").read_text()) if state_dir.exists() else {}
    serving = next(
        (v for v in versions.get("versions", []) if v["version"] == versions.get("serving")), None
    )
    if serving and serving["adapter_dir"]:
        model = PeftModel.from_pretrained(model, serving["adapter_dir"]).merge_and_unload()
    correct = greedy_correct(model, tok, problems)
    domains = sorted({p.domain for p in problems})
    return {
        d: sum(ok for p, ok in zip(problems, correct, strict=True) if p.domain == d)
        / sum(p.domain == d for p in problems)
        for d in domains
    }


def dev_spec(workdir: Path, seed: int, per_domain: int) -> str:
    """A fresh draw minus every question of the run's public, private and test sets."""
    from lada.cluster import write_jsonl
    from lada.tasks import load_dataset

    seen = {
        p.question
        for path in (workdir / "data").rglob("*.jsonl")
        for p in load_dataset(f"jsonl:{path}")
    }
    fresh = load_dataset(f"synthetic:domains=all+units,n={per_domain * 5},seed={seed}")
    return write_jsonl([p for p in fresh if p.question not in seen], workdir / "dev.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="deploy/local.yaml")
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", default="")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--trainer", action="append", default=[])
    parser.add_argument("--absorb-lr", type=float, default=0.0)
    parser.add_argument("--dev-seed", type=int, default=4242)
    parser.add_argument("--dev-per-domain", type=int, default=300)
    args = parser.parse_args()

    import torch

    from lada.cluster import redis_for_cluster, resolve_models
    from lada.config import ClusterConfig, load_config, parse_overrides
    from lada.report import evaluate_agents
    from lada.simulation import simulate

    config = load_config(ClusterConfig, args.config, section="cluster")
    torch.set_num_threads(max(1, config.torch_threads))
    config = apply_sets(config, parse_overrides(args.sets))
    patch_trainer(parse_overrides(args.trainer, flag="--trainer"))
    if args.absorb_lr:
        patch_absorb_lr(args.absorb_lr)
    absorb = [f"absorb_lr={args.absorb_lr:g}"] if args.absorb_lr else []
    name = args.name or "+".join(args.sets + args.trainer + absorb) or "default"
    out = Path(args.out)
    workdir = out / name.replace("/", "_")
    workdir.mkdir(parents=True, exist_ok=True)
    models = resolve_models(config)

    started = time.monotonic()
    with redis_for_cluster(workdir) as handle:
        run = simulate(config, workdir, handle, models)
    spec = dev_spec(workdir, args.dev_seed, args.dev_per_domain)
    before_file = out / f"before-{args.dev_seed}.json"
    if not before_file.exists():
        before = evaluate_agents(config.agents, workdir, models, spec, trained=False)
        before_file.write_text(json.dumps(before, indent=1))
    before = json.loads(before_file.read_text())
    after = evaluate_agents(config.agents, workdir, models, spec, trained=True)
    llm_before_file = out / f"llm-before-{args.dev_seed}.json"
    if not llm_before_file.exists():
        scores = llm_scores(models[config.llm_model], out / "no-such-run", spec)
        llm_before_file.write_text(json.dumps(scores, indent=1))
    llm_after = llm_scores(models[config.llm_model], workdir / "llm", spec)
    result = {
        "variant": name,
        "wall_seconds": round(time.monotonic() - started, 1),
        "sim_wall_seconds": run["wall_seconds"],
        "llm_accuracy_by_domain": run["llm_accuracy_by_domain"],
        "agents_rounds": run["agents_rounds"],
        "before": before,
        "after": after,
        "llm_dev_before": json.loads(llm_before_file.read_text()),
        "llm_dev_after": llm_after,
    }
    (out / f"{workdir.name}.json").write_text(json.dumps(result, indent=1))
    print(f"LLM on the dev set: {json.loads(llm_before_file.read_text())} -> {llm_after}")
    for agent, scores in after.items():
        print(
            f"{agent}: home {before[agent]['own']:.3f} -> {scores['own']:.3f}, "
            f"all {before[agent]['all']:.3f} -> {scores['all']:.3f}"
        )


if __name__ == "__main__":
    main()
