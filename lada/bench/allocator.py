"""`lada bench allocator`: (1) time to compute one round's `lada` allocations for 1,000 agents
over a 100,000-sample pool (goal < 1 s on 2 cores); (2) ReportStats ingest rate over real
gRPC into real Redis, allocator in its own process (goal >= 50,000 sample statistics/s)."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from allocator.client import AgentClient, OperatorClient
from allocator.policies import AgentView, AllocationRequest, LearnerState, PoolIndex, make_policy
from lada.bench import write_result
from lada.config import LadaHyperParams
from lada.netports import free_port
from lada.redis_conn import connect
from lada.state import StateStore
from lada.tasks import load_dataset, pool_fingerprint
from lada.v1 import allocator_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---- (1) allocation compute ---------------------------------------------------------------------
def synthetic_request(
    agents: int, pool_size: int, known_per_agent: int, capacity: int, seed: int = 0
) -> AllocationRequest:
    """A mid-run round: every agent has rewards on every arm and gaps for earlier samples."""
    params = LadaHyperParams()
    rng = np.random.default_rng(seed)
    clusters = params.num_clusters
    pool = PoolIndex(
        [f"s{i}" for i in range(pool_size)], rng.integers(0, clusters, pool_size), clusters
    )
    views = []
    for k in range(agents):
        learner = LearnerState(
            rng.normal(0.2, 0.5, clusters), rng.integers(1, 40, clusters).astype(float), 0.2, 0.8
        )
        known = rng.choice(pool_size, known_per_agent, replace=False)
        views.append(
            AgentView(
                f"agent-{k}",
                capacity,
                learner,
                known,
                rng.normal(1.0, 0.5, known_per_agent),
                rng.random(known_per_agent) < 0.3,
            )
        )
    unlearnable = rng.random(pool_size) < 0.05
    return AllocationRequest(3, pool, views, unlearnable, params, seed)


def time_allocation(request: AllocationRequest, repeats: int) -> dict[str, Any]:
    policy = make_policy("lada")
    policy.allocate(request)  # warm caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        chosen = policy.allocate(request)
        times.append(time.perf_counter() - started)
    sizes = [len(v) for v in chosen.values()]
    return {
        "agents": len(request.agents),
        "pool_size": len(request.pool),
        "clusters": request.pool.num_clusters,
        "capacity": request.agents[0].capacity,
        "known_gaps_per_agent": len(request.agents[0].known_idx),
        "seconds_median": statistics.median(times),
        "seconds_min": min(times),
        "seconds_max": max(times),
        "repeats": repeats,
        "allocated_per_agent": [min(sizes), max(sizes)],
    }


# ---- (2) ReportStats ingest -------------------------------------------------------------------
def _stats_for(samples: list[allocator_pb2.AllocatedSample]) -> list[allocator_pb2.SampleStats]:
    return [
        allocator_pb2.SampleStats(
            sample_id=s.sample_id,
            paths=[
                allocator_pb2.PathStats(
                    llm_normalized_logprob=-0.5 - 0.1 * j,
                    correct=j < 2,
                    slm_normalized_logprob_before=-1.5 - 0.1 * j,
                    slm_normalized_logprob_after=-1.2 - 0.1 * j,
                )
                for j in range(4)
            ],
            correct_before=False,
            correct_after=True,
        )
        for s in samples
    ]


def _wait_serving(address: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"allocator exited with {proc.returncode}")
        try:
            with grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"allocator at {address} not serving after {timeout}s")


def time_ingest(pool_size: int, agents: int, per_agent: int, batch: int) -> dict[str, Any]:
    """Start `lada allocator serve`, allocate `per_agent` samples to each agent, then time each
    agent's whole ReportStats stream (validation, one atomic Redis write)."""
    handle = connect(None)
    run_id = "bench-" + uuid.uuid4().hex[:8]
    spec = f"synthetic:domains=all,n={pool_size},seed=11"
    fingerprint = pool_fingerprint(load_dataset(spec))
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "allocator.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "allocator": {
                        "run_id": run_id,
                        "redis_url": handle.url,
                        "public_pool": spec,
                        "policy": "random",
                        "rounds": 1,
                        "min_agents": agents,
                        "round_deadline_s": 3600.0,
                        "open_enrollment": True,  # simulated agents bring their own secrets
                        "server": {"metrics_port": -1, "log_level": "WARNING"},
                    }
                }
            )
        )
        address = f"127.0.0.1:{port}"
        with open(Path(tmp) / "allocator.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lada.cli", "allocator", "serve", "--config", str(config)]
                + ["--port", str(port)],
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait_serving(address, proc)
                return _report_all(address, fingerprint, agents, per_agent, batch, proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
                StateStore(handle.client, run_id).wipe()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to separate cost from contention."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _report_all(
    address: str, fingerprint: str, agents: int, per_agent: int, batch: int, server_pid: int
) -> dict[str, Any]:
    clients = []
    for k in range(agents):
        client = AgentClient(address, timeout_s=300)
        client.register(f"bench-{k}", per_agent, fingerprint)
        clients.append(client)
    with OperatorClient(address) as operator:
        deadline = time.monotonic() + 300
        while operator.status(0)["phase"] not in ("ALLOCATED", "TRAINING"):
            if time.monotonic() > deadline:
                raise TimeoutError("round 1 never allocated")
            time.sleep(0.2)
    payloads = [_stats_for(list(c.get_allocation(1).samples)) for c in clients]
    seconds = []
    load_before = os.getloadavg()[0]
    server_cpu, client_cpu = _cpu_seconds(server_pid), time.process_time()
    for client, stats in zip(clients, payloads, strict=True):
        started = time.perf_counter()
        reply = client.report_stats(1, stats, batch_size=batch)
        seconds.append(time.perf_counter() - started)
        assert reply.accepted == len(stats), reply
    server_cpu = _cpu_seconds(server_pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    total = sum(len(p) for p in payloads)
    return {
        "server_cpu_seconds": server_cpu,
        "client_cpu_seconds": client_cpu,
        "stats_per_server_cpu_second": total / max(server_cpu, 1e-9),
        "load_average_1m": [load_before, os.getloadavg()[0]],
        "agents": agents,
        "samples_per_stream": per_agent,
        "paths_per_sample": 4,
        "batch_size": batch,
        "sample_stats": total,
        "seconds": sum(seconds),
        "per_stream_seconds": seconds,
        "stats_per_second": total / sum(seconds),
    }


# ---- entry point --------------------------------------------------------------------------------
def run(out_dir: Path, quick: bool = False) -> None:
    agents, pool_size = (100, 10_000) if quick else (1000, 100_000)
    allocation = time_allocation(
        synthetic_request(agents, pool_size, known_per_agent=192, capacity=64),
        repeats=3 if quick else 5,
    )
    ingest = (
        time_ingest(pool_size=4000, agents=2, per_agent=2000, batch=1000)
        if quick
        else time_ingest(pool_size=40_000, agents=4, per_agent=10_000, batch=5000)
    )
    result = {"quick": quick, "allocation": allocation, "report_ingest": ingest}
    write_result(out_dir, "allocator", result, _markdown(allocation, ingest, quick))
    print(_markdown(allocation, ingest, quick))


def _markdown(allocation: dict[str, Any], ingest: dict[str, Any], quick: bool) -> str:
    return "\n".join(
        [
            "# Allocator benchmark" + (" (quick)" if quick else ""),
            "",
            "| measure | setting | result | goal |",
            "|---|---|---|---|",
            f"| one round of `lada` allocations | {allocation['agents']} agents, "
            f"{allocation['pool_size']:,} samples, {allocation['clusters']} clusters, "
            f"capacity {allocation['capacity']}, {allocation['known_gaps_per_agent']} known "
            f"gaps/agent | {allocation['seconds_median']:.3f} s median "
            f"(min {allocation['seconds_min']:.3f}, max {allocation['seconds_max']:.3f}, "
            f"{allocation['repeats']} runs) | < 1 s |",
            f"| ReportStats ingest, real gRPC + Redis | {ingest['agents']} streams x "
            f"{ingest['samples_per_stream']:,} samples x {ingest['paths_per_sample']} paths, "
            f"batches of {ingest['batch_size']} | {ingest['stats_per_second']:,.0f} sample "
            f"stats/s wall clock ({ingest['stats_per_server_cpu_second']:,.0f} per allocator "
            f"CPU-second; 1-min load average {ingest['load_average_1m'][0]:.1f} on "
            f"{os.cpu_count()} cores while measuring) | >= 50,000/s |",
            "",
        ]
    )
