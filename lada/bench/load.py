"""`lada bench load`: many simulated agents (no models) against one real allocator process.

Each simulated agent registers, follows rounds by heartbeat, takes its allocation and
streams synthetic statistics; the run reports p50/p99 latency per RPC, errors, and checks
that every statistic sent is in Redis exactly once.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml

from lada.bench import write_result
from lada.healthcheck import check
from lada.redis_conn import connect, shutdown_embedded, start_embedded
from lada.state import StateStore
from lada.tasks import load_dataset, pool_fingerprint
from lada.v1 import allocator_pb2

POOL = "synthetic:domains=all,n=4000,seed=21"


@dataclass
class LoadResult:
    agents: int
    rounds: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sent: dict[tuple[str, int], int] = field(default_factory=dict)
    wall_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, rpc: str, call: Any) -> Any:
        started = time.perf_counter()
        try:
            return call()
        except grpc.RpcError as exc:
            with self.lock:
                self.errors[f"{rpc}:{exc.code().name}"] += 1
            raise
        finally:
            with self.lock:
                self.latencies[rpc].append(time.perf_counter() - started)

    def summary(self) -> dict[str, Any]:
        per_rpc = {
            rpc: {
                "calls": len(values),
                "p50_ms": round(float(np.percentile(values, 50)) * 1000, 2),
                "p99_ms": round(float(np.percentile(values, 99)) * 1000, 2),
            }
            for rpc, values in sorted(self.latencies.items())
        }
        return {
            "agents": self.agents,
            "rounds": self.rounds,
            "wall_seconds": round(self.wall_seconds, 1),
            "rpcs": per_rpc,
            "errors": dict(self.errors),
            "stats_sent": sum(self.sent.values()),
        }


def synthetic_stats(sample_ids: list[str], rng: random.Random) -> list[allocator_pb2.SampleStats]:
    """Plausible numbers: four LLM paths, some correct, SLM a bit less confident."""
    out = []
    for sample_id in sample_ids:
        paths = []
        for _ in range(4):
            llm = -rng.uniform(0.1, 1.5)
            before = llm - rng.uniform(0.0, 2.0)
            paths.append(
                allocator_pb2.PathStats(
                    llm_normalized_logprob=llm,
                    correct=rng.random() < 0.7,
                    slm_normalized_logprob_before=before,
                    slm_normalized_logprob_after=min(before + rng.uniform(-0.1, 0.5), -0.01),
                )
            )
        out.append(
            allocator_pb2.SampleStats(
                sample_id=sample_id,
                paths=paths,
                correct_before=rng.random() < 0.3,
                correct_after=rng.random() < 0.5,
            )
        )
    return out


def simulated_agent(
    address: str, index: int, fingerprint: str, result: LoadResult, deadline: float
) -> None:
    from allocator.client import AgentClient

    rng = random.Random(index)
    with AgentClient(address) as client:
        result.timed("RegisterAgent", lambda: client.register(f"load-{index}", 16, fingerprint))
        for round_number in range(1, result.rounds + 1):
            while time.monotonic() < deadline:
                beat = result.timed("Heartbeat", client.heartbeat)
                if beat.current_round >= round_number and beat.phase in (2, 3):
                    break
                time.sleep(0.2)
            allocation = result.timed(
                "GetAllocation", lambda r=round_number: client.get_allocation(r)
            )
            ids = [s.sample_id for s in allocation.samples]
            stats = synthetic_stats(ids, rng)
            result.timed("ReportStats", lambda r=round_number, s=stats: client.report_stats(r, s))
            with result.lock:
                result.sent[(client.agent_id, round_number)] = len(ids)


def verify_exactly_once(store: StateStore, result: LoadResult) -> dict[str, int]:
    """Compare what each agent sent per round with what Redis holds."""
    missing = extra = 0
    for (agent_id, round_number), count in result.sent.items():
        held = len(store.get_stats(round_number, agent_id))
        missing += max(0, count - held)
        extra += max(0, held - count)
    return {"missing": missing, "extra": extra}


def start_allocator(
    workdir: Path, redis_url: str, run_id: str, agents: int, rounds: int
) -> tuple[subprocess.Popen[bytes], str]:
    from lada.cluster import free_port

    port = free_port()
    config = workdir / "allocator.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "allocator": {
                    "run_id": run_id,
                    "public_pool": POOL,
                    "policy": "lada",
                    "rounds": rounds,
                    "min_agents": agents,
                    "round_deadline_s": 120.0,
                    "open_enrollment": True,  # simulated agents each bring their own secret
                    "redis_url": redis_url,
                    "lada": {"num_clusters": 16},
                    "server": {"metrics_port": -1, "max_workers": 64, "log_level": "WARNING"},
                }
            }
        )
    )
    log = open(workdir / "allocator.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lada.cli",
            "allocator",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    address = f"127.0.0.1:{port}"
    for _ in range(600):
        if check(address, timeout=1.0):
            return proc, address
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"allocator did not start: {(workdir / 'allocator.log').read_text()}")


def run_load(agents: int, rounds: int, redis_url: str = "") -> tuple[LoadResult, dict[str, int]]:
    """Run the load and return the latency result plus the exactly-once check."""
    fingerprint = pool_fingerprint(load_dataset(POOL))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(os.environ.get("LADA_LOAD_WORKDIR") or tmp)
        handle = connect(redis_url) if redis_url else start_embedded(workdir / "load.rdb")
        run_id = f"load-{os.getpid()}-{int(time.time())}"
        proc, address = start_allocator(workdir, handle.url, run_id, agents, rounds)
        result = LoadResult(agents, rounds)
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=agents) as pool:
                futures = [
                    pool.submit(
                        simulated_agent, address, i, fingerprint, result, started + 60 * rounds
                    )
                    for i in range(agents)
                ]
                failures = [f.exception() for f in futures if f.exception() is not None]
            if failures:
                raise RuntimeError(
                    f"{len(failures)} simulated agents failed; first: "
                    f"{failures[0]!r}; errors by RPC: {dict(result.errors)}"
                )
            result.wall_seconds = time.monotonic() - started
            store = StateStore(handle.client, run_id)
            check_result = verify_exactly_once(store, result)
            store.wipe()
        finally:
            proc.terminate()
            proc.wait(30)
            if not redis_url:
                shutdown_embedded(handle)
    return result, check_result


def render(summary: dict[str, Any], exactly_once: dict[str, int]) -> str:
    lines = [
        f"# Load: {summary['agents']} simulated agents x {summary['rounds']} rounds",
        "",
        f"wall time {summary['wall_seconds']} s, statistics sent {summary['stats_sent']}, "
        f"missing in Redis {exactly_once['missing']}, extra {exactly_once['extra']}, "
        f"errors {summary['errors'] or 'none'}",
        "",
        "| RPC | calls | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for rpc, row in summary["rpcs"].items():
        lines.append(f"| {rpc} | {row['calls']} | {row['p50_ms']} | {row['p99_ms']} |")
    return "\n".join(lines) + "\n"


def run(out_dir: Path, quick: bool = False) -> None:
    agents, rounds = (20, 2) if quick else (200, 10)
    result, exactly_once = run_load(agents, rounds, os.environ.get("REDIS_URL", ""))
    summary = result.summary()
    write_result(
        out_dir, "load", {**summary, "exactly_once": exactly_once}, render(summary, exactly_once)
    )
    print(render(summary, exactly_once))
