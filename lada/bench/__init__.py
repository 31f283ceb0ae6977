"""`lada bench`: benchmarks whose results go to docs (machine and date included)."""

from __future__ import annotations

import importlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

BENCHES = ("allocator", "llm", "load", "agent")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on; every result file carries it."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def write_result(out_dir: Path, name: str, result: dict[str, Any], markdown: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), **result}
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2))
    header = f"<!-- measured {payload['machine']['date']} on {payload['machine']['host']} -->\n"
    (out_dir / f"{name}.md").write_text(header + markdown)


def run_bench(
    what: str, out_dir: Path, quick: bool = False, load_options: dict[str, Any] | None = None
) -> int:
    """Run one benchmark (or all); each lives in lada.bench.<name> with run(out_dir, quick).

    `load_options` (agents, rounds, ...) turn the load bench into one custom scenario.
    """
    names = BENCHES if what == "all" else (what,)
    for name in names:
        module = importlib.import_module(f"lada.bench.{name}")
        if name == "load":
            plans = module.plan_from_options(quick, **(load_options or {}))
            module.run(out_dir, quick=quick, plans=plans)
        else:
            module.run(out_dir, quick=quick)
    return 0
