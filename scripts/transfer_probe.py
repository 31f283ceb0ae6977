"""Issue 14's open lever: does more foreign-domain exposure in an SLM's pretraining make
200 distilled LLM paths transfer to unseen problems of that domain?

Continues one demo-zoo SLM with a pretraining stage whose corpus holds `own_share` of its
home domain (the rest spread over the other domains, as the zoo's own stages), once at the
zoo's own share (the control: as much more training, no more exposure) and once at a lower
one; then runs `lada.probe.sweep_trainer` (one round of 200 foreign paths, dev sets only,
never the test set) on each. Writes one JSON line per (variant, trainer config) to --out.

    PYTHONPATH=. python scripts/transfer_probe.py --slm slm-purchases --steps 1000 \
        --shares 0.95,0.8 --out /tmp/transfer.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

import lada.probe
from lada.modeling import load_causal_lm
from lada.probe import FOREIGN, ProbeSettings, dev_set, sweep_trainer
from lada.zoo import Stage, _stage_spec, build_zoo, profile_specs, train_lm, training_corpus

CONFIGS: list[dict[str, Any]] = [
    {"loss": "sft"},  # the agent's default trainer (lr 1e-5, constant)
    {"loss": "sft", "learning_rate": 1e-4, "lr_schedule": "linear"},
]


def continued(slm: str, share: float, steps: int, lr: float, out: Path) -> Path:
    """The committed `slm` plus one stage at `share` of its home domain, saved under `out`."""
    manifest = build_zoo("demo", None, progress=False)
    spec = next(s for s in profile_specs("demo")[1] if s.name == slm)
    stage = _stage_spec(spec, Stage(steps, lr, spec.domains, share, 8000, 31))
    home = spec.domains[0]
    held = {p.id for p in dev_set(manifest, slm, (home, FOREIGN[home]), 120)}
    corpus = [p for p in training_corpus(stage) if p.id not in held]
    model, tok = load_causal_lm(manifest.slms[slm])
    torch.manual_seed(stage.seed)
    started = time.perf_counter()
    train_lm(model, tok, corpus, stage, lambda _loss: None)
    target = out / f"{slm}-own{share}"
    model.save_pretrained(target)
    tok.save_pretrained(target)
    print(f"{target}: {steps} steps in {time.perf_counter() - started:.0f} s", flush=True)
    return target


def probe(slm: str, variant: Path) -> list[dict[str, Any]]:
    """sweep_trainer on `variant` in place of the zoo's `slm`."""
    real = lada.probe.build_zoo

    def with_variant(*args: Any, **kw: Any) -> Any:
        manifest = real(*args, **kw)
        info = manifest.models[slm]
        manifest.models[slm] = dataclasses.replace(info, path=str(variant))
        return manifest

    lada.probe.build_zoo = with_variant
    try:
        return sweep_trainer(ProbeSettings(profile="demo", loss="sft"), CONFIGS, slm=slm)
    finally:
        lada.probe.build_zoo = real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slm", default="slm-purchases")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--shares", default="0.95,0.8")
    parser.add_argument("--out", type=Path, default=Path("/tmp/transfer.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the zoo trains: tiny models gain little from a second
    models = args.out.parent / "transfer-models"
    for share in (float(s) for s in args.shares.split(",")):
        variant = continued(args.slm, share, args.steps, args.lr, models)
        for row in probe(args.slm, variant):
            with args.out.open("a") as fh:
                fh.write(json.dumps({"slm": args.slm, "own_share": share, **row}) + "\n")


if __name__ == "__main__":
    main()
