"""Time an agent's round of training on real LLM paths, for A/B runs of trainer changes.

    PYTHONPATH=. python scripts/train_round_timing.py --slm slm-purchases --repeat 3

The demo LLM samples 4 paths per public sample (temperature 0.8, as the round driver asks
the LLM service) and the SLM 2 own paths, for 45 samples of the experiment pool (one agent's
round in deploy/experiment-cpu.yaml); then the SLM trains `--repeat` rounds on them, each
from the same starting weights, with one torch thread (a sweep runs one per run). It prints
one JSON line: seconds per round and per optimiser step, the rows scored, and the loss parts
and a weight checksum, so two code trees run on the same paths can be compared for speed
and for sameness. The paths are kept in --paths (a pickle) so both trees train on the same.
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import random
import time
from pathlib import Path

import torch

from lada.config import TrainerSettings
from lada.tasks import format_prompt, is_correct, load_dataset
from slm_agent.losses import PathSet, make_loss
from slm_agent.trainer import LocalTrainer

POOL_SPEC = "synthetic:domains=all+units,n=4000,seed=5"  # deploy/experiment-cpu.yaml


def make_path_sets(zoo: Path, slm: str, samples: int, seed: int) -> list[PathSet]:
    """Real path sets: the demo LLM's sampled paths, scored by it, and the SLM's negatives."""
    problems = load_dataset(POOL_SPEC)
    chosen = random.Random(seed).sample(problems, samples)
    questions = [p.question for p in chosen]
    llm = LocalTrainer.from_path(zoo / "llm", make_loss("sft"), [], TrainerSettings())
    student = LocalTrainer.from_path(zoo / slm, make_loss("sft"), [], TrainerSettings())
    llm_paths = llm.sample_paths(questions, 4, seed)
    own_paths = student.sample_paths(questions, 2, seed + 1)
    sets = []
    for problem, paths, own in zip(chosen, llm_paths, own_paths, strict=True):
        prompt = format_prompt(problem.question)
        sets.append(
            PathSet(
                prompt,
                paths,
                llm.score([prompt] * len(paths), paths),
                [is_correct(p, problem.answer) for p in paths],
                own_negatives=[p for p in own if not is_correct(p, problem.answer)],
            )
        )
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", type=Path, default=Path("zoo/demo"))
    parser.add_argument("--slm", default="slm-purchases")
    parser.add_argument("--loss", default="contrastive")
    parser.add_argument("--samples", type=int, default=45)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--paths", type=Path, default=Path("/tmp/lada-train-round-paths.pkl"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.paths.exists():
        sets = pickle.loads(args.paths.read_bytes())
    else:
        sets = make_path_sets(args.zoo, args.slm, args.samples, seed=0)
        args.paths.write_bytes(pickle.dumps(sets))
    private = load_dataset(POOL_SPEC)[:300]
    trainer = LocalTrainer.from_path(args.zoo / args.slm, make_loss(args.loss), private)
    start = copy.deepcopy(trainer.model.state_dict())
    seconds = []
    for _ in range(args.repeat):
        trainer.model.load_state_dict(start)
        began = time.perf_counter()
        report = trainer.train_round(sets, 1)
        seconds.append(time.perf_counter() - began)
    rows = sum(len(s.llm_paths) + len(s.own_negatives) for s in sets)
    distinct = len({(s.prompt, t) for s in sets for t in [*s.llm_paths, *s.own_negatives]})
    checksum = float(sum(p.detach().double().sum() for p in trainer.model.parameters()))
    print(
        json.dumps(
            {
                "slm": args.slm,
                "loss": args.loss,
                "round_s": [round(s, 3) for s in seconds],
                "step_ms": round(1000 * min(seconds) / report.steps, 1),
                "steps": report.steps,
                "path_rows": rows,
                "distinct_path_rows": distinct,
                "parts": {k: round(v, 6) for k, v in report.mean_parts.items()},
                "weight_checksum": checksum,
            }
        )
    )


if __name__ == "__main__":
    main()
