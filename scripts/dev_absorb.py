"""Absorb (LLM direction) settings scored on a development set, never the test set.

One absorb of the client-only SLM's sound paths, as `lada models probe` runs it, with the
LLM scored before and after on a fresh draw (seed 9) minus the test set, the probe's pool
and the LLM's own training corpus (docs/zoo.md):

    python scripts/dev_absorb.py --out /tmp/absorb --epochs 4 --replay 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=0, help="0: the LLM service's default")
    parser.add_argument("--lr", type=float, default=0.0, help="0: the LLM service's default")
    parser.add_argument("--replay", type=float, default=-1.0, help="<0: the service's default")
    parser.add_argument("--anchor", type=float, default=-1.0, help="<0: the service's default")
    parser.add_argument("--route", default="", help="all or gate; empty: the service's default")
    parser.add_argument(
        "--replay-trains", choices=("yes", "no"), default="", help="empty: the service's default"
    )
    parser.add_argument("--min-steps", type=int, default=-1, help="<0: the service's default")
    parser.add_argument("--samples", type=int, default=200, help="contributed paths absorbed")
    parser.add_argument("--per-domain", type=int, default=150)
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from lada.modeling import load_causal_lm
    from lada.probe import PROBE_POOL_SPEC, ProbeSettings, absorb_probe, dev_set, greedy_correct
    from lada.tasks import ALL_DOMAINS, CLIENT_DOMAINS, DOMAINS, load_dataset
    from lada.zoo import ZOO_EVAL_SPEC, build_zoo

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    settings = ProbeSettings(
        absorb_epochs=args.epochs,
        absorb_learning_rate=args.lr,
        absorb_replay_ratio=args.replay,
        absorb_anchor_weight=args.anchor,
        absorb_route=args.route,
        absorb_replay_trains={"yes": True, "no": False}.get(args.replay_trains),
        absorb_samples=args.samples,
        absorb_min_steps=args.min_steps,
    )
    manifest = build_zoo(settings.profile, None, progress=False)
    test_ids = {p.id for p in load_dataset(ZOO_EVAL_SPEC)}
    pool = [p for p in load_dataset(PROBE_POOL_SPEC) if p.id not in test_ids]
    pool_ids = {p.id for p in pool}
    dev = [
        p for p in dev_set(manifest, "llm", ALL_DOMAINS, args.per_domain) if p.id not in pool_ids
    ]
    by_domain = {d: [p for p in pool if p.domain == d] for d in ALL_DOMAINS}
    client = next(
        n for n, m in manifest.models.items() if m.domains and m.domains[0] in CLIENT_DOMAINS
    )
    offered = by_domain[CLIENT_DOMAINS[0]][: int(settings.absorb_samples * 1.5)]
    replay_pool = [p for d in DOMAINS for p in by_domain[d][-settings.absorb_samples :]]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    before_file = out / "llm-before.json"
    if not before_file.exists():
        model, tok = load_causal_lm(manifest.llm)
        before_file.write_text(
            json.dumps(dict(zip([p.id for p in dev], greedy_correct(model, tok, dev), strict=True)))
        )
    before = json.loads(before_file.read_text())
    result = absorb_probe(manifest, client, offered, replay_pool, dev, before, settings)
    name = f"ep{args.epochs}-lr{args.lr}-replay{args.replay}-anchor{args.anchor}-{args.route}"
    name += f"-trains{args.replay_trains}-n{args.samples}-min{args.min_steps}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    for domain, cells in result["llm"].items():
        routed = result["routed_to_adapter"][domain]
        change = f"{cells['before']['all']} -> {cells['after']['all']}"
        print(f"{name} {domain}: {change} (routed {routed})")


if __name__ == "__main__":
    main()
