"""`lada bench load`: simulated agents (no models) against one real allocator process.

The generator is multi-process asyncio: `workers` spawned processes each run their share of
the agents as grpc.aio coroutines, one channel (its own TCP connection) per agent. Every
simulated agent does on the wire what slm_agent.agent does: RegisterAgent with its own
enrollment secret, Heartbeat every `heartbeat_interval_s` (phase-shifted at random), follow
WatchRounds, GetAllocation when its round is ALLOCATED, "train" for a random while, then
stream its statistics (ReportStats, 32 samples per message). Latency is measured per RPC in
the clients; each worker also reports its own CPU use (user+sys over wall, and the busiest
second), so a saturated generator is visible instead of showing up as server latency. At the
end every statistic sent is compared with what Redis holds (through StateStore), exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import psutil
import yaml

from allocator.client import WATCHED_PHASES, phase_values
from lada.bench import write_result
from lada.config import HEARTBEAT_INTERVAL_S, MAX_MESSAGE_BYTES, AllocatorConfig, load_config
from lada.healthcheck import check
from lada.redis_conn import connect, reply_parser, shutdown_embedded, start_embedded
from lada.state import StateStore
from lada.tasks import load_dataset, pool_fingerprint
from lada.v1 import allocator_pb2, allocator_pb2_grpc, common_pb2

POOL = "synthetic:domains=all,n=4000,seed=21"
STATS_PER_MESSAGE = 32  # as slm_agent.clients sends them
TRANSIENT = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}
RETRIES = 3
ROUND_REFUSALS = {"FAILED_PRECONDITION", "NOT_FOUND"}  # slm_agent skips the round on these
BUSY_FLAG = 0.8  # a worker busier than this may be the bottleneck itself
WORK_PHASES = {common_pb2.ROUND_PHASE_ALLOCATED, common_pb2.ROUND_PHASE_TRAINING}
T = TypeVar("T")


@dataclass(frozen=True)
class LoadPlan:
    """One load scenario; the defaults are a real agent's (5 s heartbeat)."""

    agents: int
    rounds: int
    workers: int = 4
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    train_s: float = 2.0  # each agent "trains" uniform(0, train_s) between fetch and report
    # None: fetch uniform(0, the event's fetch_window_ms) after ALLOCATED, as slm_agent does;
    # 0: every agent at once, as soon as ALLOCATED arrives; > 0: uniform(0, fetch_spread_s).
    fetch_spread_s: float | None = None
    ramp_s: float = -1.0  # registrations spread over this long; < 0: agents / 200 seconds
    capacity: int = 16
    allocator_processes: int = 1  # replicas on one port (server.share_port), one Redis
    driver_process: bool = False  # True: the replicas serve RPCs only, one more drives rounds
    # True: WatchRounds goes to one more RPC process on its own port, so no unary call waits
    # behind a round event being written to every watcher (docs/bench/load.md)
    watch_process: bool = False
    round_deadline_s: float = 120.0
    rpc_timeout_s: float = 30.0

    @property
    def ramp(self) -> float:
        return self.ramp_s if self.ramp_s >= 0 else self.agents / 200.0

    @property
    def run_limit_s(self) -> float:
        """A bound on the whole run, so a stuck allocator fails the bench instead of hanging."""
        return 120.0 + self.ramp + self.rounds * (30.0 + self.train_s + self.agents / 50.0)


@dataclass
class WorkerSpec:
    address: str
    run_id: str
    fingerprint: str
    indices: list[int]
    plan: LoadPlan
    watch_address: str = ""  # empty: WatchRounds on `address`


@dataclass
class WorkerResult:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    sent: dict[tuple[str, int], tuple[int, str]] = field(default_factory=dict)
    duplicates: int = 0
    agent_ids: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped_rounds: int = 0  # rounds the allocator refused to an agent (LATE, LOST)
    cpu: dict[str, float] = field(default_factory=dict)


def _fetch_spread_s(plan: LoadPlan, event: allocator_pb2.RoundEvent) -> float:
    if plan.fetch_spread_s is None:
        return event.fetch_window_ms / 1000.0
    return plan.fetch_spread_s


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


def stats_digest(stats: dict[str, bytes]) -> str:
    """Order-free digest of one (agent, round)'s statistics as stored: sample_id -> bytes."""
    digest = hashlib.sha256()
    for sample_id in sorted(stats):
        digest.update(sample_id.encode() + b"\0" + stats[sample_id] + b"\0")
    return digest.hexdigest()


# ---- one worker process --------------------------------------------------------------------
class _Recorder:
    """Per-RPC latencies and errors of one worker, measured around each client call."""

    def __init__(self, result: WorkerResult) -> None:
        self.result = result

    async def call(self, rpc: str, make: Callable[[], Awaitable[T]]) -> T:
        """One RPC, retried on transient codes as slm_agent.ports.with_retries does."""
        for attempt in range(RETRIES + 1):
            started = time.perf_counter()
            try:
                reply = await make()
            except grpc.aio.AioRpcError as exc:
                self.result.errors[f"{rpc}:{exc.code().name}"] += 1
                if exc.code().name not in TRANSIENT or attempt == RETRIES:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
                continue
            self.result.latencies[rpc].append(time.perf_counter() - started)
            return reply
        raise AssertionError("unreachable")


async def _heartbeats(
    stub: allocator_pb2_grpc.AllocatorStub,
    agent_id: str,
    metadata: tuple[tuple[str, str], ...],
    plan: LoadPlan,
    rec: _Recorder,
    rng: random.Random,
) -> None:
    """Heartbeat at the plan's interval, phase-shifted so agents do not beat in lockstep."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(rng.uniform(0, plan.heartbeat_interval_s))
    request = allocator_pb2.HeartbeatRequest(agent_id=agent_id)
    while True:
        started = loop.time()
        with contextlib.suppress(grpc.aio.AioRpcError):  # counted; a real agent beats on
            await rec.call(
                "Heartbeat",
                lambda: stub.Heartbeat(request, metadata=metadata, timeout=plan.rpc_timeout_s),
            )
        await asyncio.sleep(max(0.0, plan.heartbeat_interval_s - (loop.time() - started)))


async def _work_round(
    stub: allocator_pb2_grpc.AllocatorStub,
    agent_id: str,
    metadata: tuple[tuple[str, str], ...],
    round_number: int,
    plan: LoadPlan,
    rec: _Recorder,
    rng: random.Random,
) -> None:
    """Fetch the allocation, train (sleep), stream the statistics; record what was sent.

    A round the allocator refuses (the agent was marked LATE or LOST, the round is gone) is
    skipped and the agent goes on to the next, as slm_agent does; the refusal stays counted.
    """
    try:
        timeout = plan.rpc_timeout_s
        request = allocator_pb2.GetAllocationRequest(agent_id=agent_id, round=round_number)
        allocation = await rec.call(
            "GetAllocation", lambda: stub.GetAllocation(request, metadata=metadata, timeout=timeout)
        )
        stats = synthetic_stats([s.sample_id for s in allocation.samples], rng)
        await asyncio.sleep(rng.uniform(0, plan.train_s))
        messages = [
            allocator_pb2.ReportStatsRequest(
                agent_id=agent_id, round=round_number, stats=stats[i : i + STATS_PER_MESSAGE]
            )
            for i in range(0, max(len(stats), 1), STATS_PER_MESSAGE)
        ]
        reply = await rec.call(
            "ReportStats",
            lambda: stub.ReportStats(iter(messages), metadata=metadata, timeout=timeout),
        )
        rec.result.duplicates += reply.duplicates
        payload = {s.sample_id: s.SerializeToString() for s in stats}
        rec.result.sent[(agent_id, round_number)] = (len(payload), stats_digest(payload))
    except grpc.aio.AioRpcError as exc:
        if exc.code().name not in ROUND_REFUSALS:
            raise
        rec.result.skipped_rounds += 1


async def _agent(index: int, spec: WorkerSpec, rec: _Recorder) -> None:
    """One simulated agent from registration to the end of the run."""
    plan = spec.plan
    rng = random.Random(index)
    await asyncio.sleep(rng.uniform(0, plan.ramp))
    options = [
        ("grpc.use_local_subchannel_pool", 1),  # its own connection, as a separate agent has
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    async with contextlib.AsyncExitStack() as channels:
        channel = await channels.enter_async_context(
            grpc.aio.insecure_channel(spec.address, options=options)
        )
        stub = allocator_pb2_grpc.AllocatorStub(channel)
        watcher = stub
        if spec.watch_address:
            watch_channel = await channels.enter_async_context(
                grpc.aio.insecure_channel(spec.watch_address, options=options)
            )
            watcher = allocator_pb2_grpc.AllocatorStub(watch_channel)
        register = allocator_pb2.RegisterAgentRequest(
            name=f"load-{index:05d}",
            model_description="simulated",
            capacity=plan.capacity,
            pool_fingerprint=spec.fingerprint,
            enrollment_secret=f"load-secret-{spec.run_id}-{index:05d}",
        )
        registered = await rec.call(
            "RegisterAgent", lambda: stub.RegisterAgent(register, timeout=plan.rpc_timeout_s)
        )
        agent_id = registered.agent_id
        rec.result.agent_ids.append(agent_id)
        metadata = (("authorization", f"Bearer {registered.token}"),)
        beating = asyncio.create_task(_heartbeats(stub, agent_id, metadata, plan, rec, rng))
        try:
            await _follow_rounds(
                stub, watcher, agent_id, metadata, registered.first_round, spec, rec, rng
            )
        finally:
            beating.cancel()


async def _follow_rounds(
    stub: allocator_pb2_grpc.AllocatorStub,
    watcher: allocator_pb2_grpc.AllocatorStub,
    agent_id: str,
    metadata: tuple[tuple[str, str], ...],
    first_round: int,
    spec: WorkerSpec,
    rec: _Recorder,
    rng: random.Random,
) -> None:
    """Consume WatchRounds, working each round once; resubscribe when the stream breaks."""
    plan = spec.plan
    done: set[int] = set()
    for _attempt in range(RETRIES + 1):
        from_round = max([first_round, *(r + 1 for r in done)])
        watch = watcher.WatchRounds(
            allocator_pb2.WatchRoundsRequest(
                agent_id=agent_id, from_round=from_round, phases=phase_values(WATCHED_PHASES)
            ),
            metadata=metadata,
            timeout=plan.run_limit_s,
        )
        events: asyncio.Queue[allocator_pb2.RoundEvent | None] = asyncio.Queue()
        reader = asyncio.create_task(_read_events(watch, events, rec))
        try:
            while (event := await events.get()) is not None:
                fresh = event.round >= first_round and event.round not in done
                if event.phase in WORK_PHASES and fresh:
                    done.add(event.round)
                    await asyncio.sleep(rng.uniform(0, _fetch_spread_s(plan, event)))
                    await _work_round(stub, agent_id, metadata, event.round, plan, rec, rng)
                if event.run_finished:
                    return
            await reader  # the stream ended early: raise its error, if any
            return
        except grpc.aio.AioRpcError as exc:
            rec.result.errors[f"WatchRounds:{exc.code().name}"] += 1
            if exc.code().name not in TRANSIENT and exc.code().name != "CANCELLED":
                raise
            await asyncio.sleep(1.0)
        finally:
            reader.cancel()
            watch.cancel()
    raise RuntimeError(f"{agent_id}: round stream lost {RETRIES + 1} times")


async def _read_events(
    watch: Any, events: asyncio.Queue[allocator_pb2.RoundEvent | None], rec: _Recorder
) -> None:
    """Take events off the stream as they arrive (the agent may be busy working a round), so
    the lag measured is the allocator's: receipt time minus the event's timestamp."""
    try:
        async for event in watch:
            lag = time.time() - event.timestamp_unix_ms / 1000.0
            rec.result.latencies["WatchRounds (event lag)"].append(max(lag, 0.0))
            await events.put(event)
    finally:
        await events.put(None)


async def _sample_cpu(samples: list[float], period_s: float = 1.0) -> None:
    """This process's busy fraction (all threads, user+sys) over each period."""
    last_cpu, last_wall = _cpu_seconds(), time.perf_counter()
    while True:
        await asyncio.sleep(period_s)
        cpu, wall = _cpu_seconds(), time.perf_counter()
        samples.append((cpu - last_cpu) / (wall - last_wall))
        last_cpu, last_wall = cpu, wall


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _worker(spec: WorkerSpec) -> WorkerResult:
    result = WorkerResult()
    rec = _Recorder(result)
    samples: list[float] = []
    sampler = asyncio.create_task(_sample_cpu(samples))
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    agents = [asyncio.create_task(_agent(i, spec, rec)) for i in spec.indices]
    finished, stuck = await asyncio.wait(agents, timeout=spec.plan.run_limit_s)
    for task in stuck:
        task.cancel()
    await asyncio.gather(*stuck, return_exceptions=True)
    sampler.cancel()
    wall = time.perf_counter() - wall0
    result.failures = [repr(t.exception()) for t in finished if t.exception() is not None]
    result.failures += [f"still running after {spec.plan.run_limit_s:.0f} s"] * len(stuck)
    result.cpu = {
        "cpu_s": round(_cpu_seconds() - cpu0, 2),
        "wall_s": round(wall, 2),
        "busy_mean": round((_cpu_seconds() - cpu0) / wall, 3),
        "busy_max_1s": round(max(samples, default=0.0), 3),
    }
    return result


def worker_main(spec: WorkerSpec) -> WorkerResult:
    """Entry point of one generator process."""
    return asyncio.run(_worker(spec))


# ---- the allocator process -------------------------------------------------------------------
def start_allocator(
    workdir: Path, redis_url: str, run_id: str, plan: LoadPlan
) -> tuple[list[subprocess.Popen[bytes]], str, str]:
    """`plan.allocator_processes` x `lada allocator serve` on one port, open enrollment,
    waiting for every agent; (processes, address, WatchRounds address or "" for none).

    The processes are in order: the RPC replicas, the WatchRounds process, the round driver.

    With `server_mode: threaded` WatchRounds holds a server thread per subscriber, so the pool
    gets one thread per agent plus headroom for the unary calls (aio needs no pool).
    `LADA_ALLOCATOR_SERVER_MODE` in the environment chooses the mode for an A/B.
    """
    from lada.netports import free_port

    port = free_port()
    config = workdir / "allocator.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "allocator": {
                    "run_id": run_id,
                    "public_pool": POOL,
                    "policy": "lada",
                    "rounds": plan.rounds,
                    "min_agents": plan.agents,
                    "round_deadline_s": plan.round_deadline_s,
                    "open_enrollment": True,  # simulated agents each bring their own secret
                    "redis_url": redis_url,
                    "lada": {"num_clusters": 16},
                    "settings": {"heartbeat_interval_s": plan.heartbeat_interval_s},
                    "server": {
                        "metrics_port": -1,
                        "max_workers": plan.agents + 64,
                        "log_level": "WARNING",
                        "share_port": plan.allocator_processes > 1,
                    },
                }
            }
        )
    )
    role = ["--role", "rpc"] if plan.driver_process else []
    procs = [
        _allocator_process(workdir, config, [*role, "--port", str(port)], i)
        for i in range(plan.allocator_processes)
    ]
    address, watch_address = f"127.0.0.1:{port}", ""
    if plan.watch_process:  # serves the unary RPCs too; the agents only watch there
        watch_port = free_port()
        watch_address = f"127.0.0.1:{watch_port}"
        watch_args = ["--role", "rpc", "--port", str(watch_port)]
        procs.append(_allocator_process(workdir, config, watch_args, len(procs)))
    if plan.driver_process:
        driver_args = ["--role", "driver", "--port", str(free_port())]
        procs.append(_allocator_process(workdir, config, driver_args, len(procs)))
    for _ in range(600):
        serving = all(check(a, timeout=1.0) for a in (address, watch_address) if a)
        if all(p.poll() is None for p in procs) and serving:
            time.sleep(1.0 if len(procs) > 1 else 0.0)  # every replica bound, not just one
            return procs, address, watch_address
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    for proc in procs:
        proc.kill()
    logs = "\n".join(f.read_text() for f in sorted(workdir.glob("allocator-*.log")))
    raise RuntimeError(f"allocator did not start: {logs}")


def _allocator_process(
    workdir: Path, config: Path, args: list[str], index: int
) -> subprocess.Popen[bytes]:
    log = open(workdir / f"allocator-{index}.log", "wb")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(
        [sys.executable, "-m", "lada.cli", "allocator", "serve", "--config", str(config), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _processes_cpu_s(procs: list[psutil.Process]) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


def allocator_server_mode(workdir: Path) -> str:
    """The server mode the allocator processes run with: their config file, then
    `LADA_ALLOCATOR_SERVER_MODE` as they read it (so an A/B names what it measured)."""
    config = load_config(AllocatorConfig, str(workdir / "allocator.yaml"), section="allocator")
    return config.server_mode


def _redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def verify_exactly_once(
    store: StateStore, agent_ids: list[str], rounds: int, sent: dict[tuple[str, int], Any]
) -> dict[str, int]:
    """Every (agent, round) in Redis against what the agent sent: missing, extra, altered.

    Every round of every agent is read, so statistics nobody sent count as extra too.
    """
    missing = extra = altered = 0
    for agent_id in agent_ids:
        for r in range(1, rounds + 1):
            held = store.get_stats(r, agent_id)
            count, digest = sent.get((agent_id, r), (0, ""))
            missing += max(0, count - len(held))
            extra += max(0, len(held) - count)
            if count and len(held) == count and stats_digest(held) != digest:
                altered += 1
    return {"missing": missing, "extra": extra, "altered": altered}


def _percentiles(values: list[float]) -> dict[str, float]:
    data = np.asarray(values) * 1000.0
    return {
        "calls": int(data.size),
        "p50_ms": round(float(np.percentile(data, 50)), 2),
        "p99_ms": round(float(np.percentile(data, 99)), 2),
        "max_ms": round(float(data.max()), 2),
    }


def run_load(plan: LoadPlan, redis_url: str = "") -> dict[str, Any]:
    """Run one scenario and return its summary (latencies, errors, CPU, exactly-once)."""
    fingerprint = pool_fingerprint(load_dataset(POOL))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(os.environ.get("LADA_LOAD_WORKDIR") or tmp)
        handle = connect(redis_url) if redis_url else start_embedded(workdir / "load.rdb")
        run_id = f"load-{os.getpid()}-{int(time.time())}"
        procs, address, watch_address = start_allocator(workdir, handle.url, run_id, plan)
        server_mode = allocator_server_mode(workdir)
        workers = max(1, min(plan.workers, plan.agents))
        specs = [
            WorkerSpec(
                address,
                run_id,
                fingerprint,
                list(range(w, plan.agents, workers)),
                plan,
                watch_address,
            )
            for w in range(workers)
        ]
        try:
            allocator_ps = [psutil.Process(p.pid) for p in procs]
            load_before = os.getloadavg()
            machine0 = psutil.cpu_times()
            # the RPC processes come first, then the watch and driver processes (if any)
            rpc_ps = allocator_ps[: plan.allocator_processes]
            watch_ps = allocator_ps[len(rpc_ps) : len(rpc_ps) + plan.watch_process]
            watch0 = _processes_cpu_s(watch_ps)
            alloc0, redis0 = _processes_cpu_s(allocator_ps), _redis_cpu(handle.client)
            rpc0 = _processes_cpu_s(rpc_ps)
            started = time.perf_counter()
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                results = pool.map(worker_main, specs)
            wall = time.perf_counter() - started
            alloc1, redis1 = _processes_cpu_s(allocator_ps), _redis_cpu(handle.client)
            rpc1 = _processes_cpu_s(rpc_ps)
            watch1 = _processes_cpu_s(watch_ps)
            machine1 = psutil.cpu_times()
            load_after = os.getloadavg()
            sent = {k: v for r in results for k, v in r.sent.items()}
            agent_ids = [a for r in results for a in r.agent_ids]
            store = StateStore(handle.client, run_id)
            exactly_once = verify_exactly_once(store, agent_ids, plan.rounds, sent)
            store.wipe()
        finally:
            _stop(procs)
            if not redis_url:
                shutdown_embedded(handle)
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    for r in results:
        for rpc, values in r.latencies.items():
            latencies[rpc].extend(values)
        errors.update(r.errors)
    unary = sum(len(v) for k, v in latencies.items() if not k.startswith("WatchRounds"))
    alloc_cpu = alloc1 - alloc0
    rpc_cpu = rpc1 - rpc0
    machine_busy = _busy(machine0, machine1)
    worker_cpu = [r.cpu for r in results]
    return {
        "plan": asdict(plan),
        "allocator": {
            "server_mode": server_mode,
            "processes": plan.allocator_processes,
            "driver": "in its own process" if plan.driver_process else "in the RPC process",
            "watch_rounds": "in its own process" if plan.watch_process else "in the RPC process",
            "redis_parser": reply_parser(),  # the allocator runs on this interpreter
        },
        "wall_seconds": round(wall, 1),
        "throughput_rpc_per_s": round(unary / wall, 1),
        "rpcs": {rpc: _percentiles(v) for rpc, v in sorted(latencies.items())},
        "errors": dict(sorted(errors.items())),
        "failed_agents": [f for r in results for f in r.failures][:10],
        "agent_rounds_skipped": sum(r.skipped_rounds for r in results),
        "agents_registered": len(agent_ids),
        "agent_rounds_reported": len(sent),
        "stats_sent": sum(count for count, _ in sent.values()),
        "duplicates_reported_by_server": sum(r.duplicates for r in results),
        "exactly_once": exactly_once,
        "cpu": {
            "generator_workers": worker_cpu,
            "generator_saturated": any(c["busy_mean"] > BUSY_FLAG for c in worker_cpu),
            "allocator_busy": round(alloc_cpu / wall, 3),
            # CPU-seconds of the allocator processes over unary RPCs: robust on a shared
            # machine where latencies are not; the split shows what the RPC processes cost
            "allocator_cpu_s": round(alloc_cpu, 2),
            "allocator_rpc_processes_cpu_s": round(rpc_cpu, 2),
            "allocator_watch_process_cpu_s": round(watch1 - watch0, 2),
            "allocator_cpu_per_unary_rpc_ms": round(1000.0 * alloc_cpu / unary, 3)
            if unary
            else 0.0,
            "rpc_processes_cpu_per_unary_rpc_ms": (
                round(1000.0 * rpc_cpu / unary, 3) if unary else 0.0
            ),
            "redis_busy": round((redis1 - redis0) / wall, 3),
            "machine_busy": round(machine_busy, 3),
            "cores": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
        },
    }


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _busy(before: Any, after: Any) -> float:
    """Share of the machine's CPU time (all cores) that was not idle between two samples."""
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    total = sum(after) - sum(before)
    return 1.0 - idle / total if total else 0.0


# ---- reports -------------------------------------------------------------------------------
TARGETS = {  # (agents, rpc) -> p99 ms, from issue 16
    (200, "GetAllocation"): 20.0,
    (200, "Heartbeat"): 10.0,
    (1000, "GetAllocation"): 50.0,
}


def targets_met(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets that apply to this scenario, each with its measured value."""
    agents = summary["plan"]["agents"]
    out = []
    for (n, rpc), limit in TARGETS.items():
        if n == agents and rpc in summary["rpcs"]:
            p99 = summary["rpcs"][rpc]["p99_ms"]
            out.append({"what": f"{rpc} p99 <= {limit:g} ms", "value": p99, "met": p99 <= limit})
    if agents >= 1000:
        clean = not summary["errors"] and not any(summary["exactly_once"].values())
        out.append({"what": "zero errors, zero lost/duplicated stats", "value": "", "met": clean})
    return out


def _fetch_wording(spread_s: float | None) -> str:
    if spread_s is None:
        return "at a random moment within the ALLOCATED event's fetch window (as slm_agent)"
    if spread_s == 0:
        return "as soon as ALLOCATED arrives (all agents at once, no fetch window)"
    return f"uniform(0, {spread_s:g}) s after ALLOCATED"


def _fetch_title(spread_s: float | None) -> str:
    if spread_s is None:
        return "fetch within the window"
    return "fetch at once" if spread_s == 0 else f"fetch spread over {spread_s:g} s"


def _processes_title(plan: dict[str, Any]) -> str:
    processes = plan.get("allocator_processes", 1)
    title = f", {processes} allocator processes on one port" if processes > 1 else ""
    title += ", WatchRounds in its own process" if plan.get("watch_process") else ""
    return title + (", the round driver in its own process" if plan.get("driver_process") else "")


def _allocator_line(summary: dict[str, Any]) -> str:
    """How the allocator ran (server mode, where the round driver was) and its CPU per RPC."""
    allocator, cpu = summary.get("allocator", {}), summary["cpu"]
    processes = allocator.get("processes", 1)
    line = (
        f"- allocator: server mode {allocator.get('server_mode', '?')}, "
        f"{processes} RPC process{'es' if processes > 1 else ''}, WatchRounds "
        f"{allocator.get('watch_rounds', 'in the RPC process')}, the round driver "
        f"{allocator.get('driver', '?')}, redis-py's {allocator.get('redis_parser', '?')} "
        "reply parser"
    )
    if "allocator_cpu_per_unary_rpc_ms" in cpu:
        line += (
            f"; allocator CPU per unary RPC {cpu['allocator_cpu_per_unary_rpc_ms']:.2f} ms "
            f"({cpu['allocator_cpu_s']:.2f} s in all, RPC processes "
            f"{cpu['rpc_processes_cpu_per_unary_rpc_ms']:.2f} ms per RPC"
            + (
                f", WatchRounds process {cpu['allocator_watch_process_cpu_s']:.2f} s"
                if cpu.get("allocator_watch_process_cpu_s")
                else ""
            )
            + ")"
        )
    return line


def render(summary: dict[str, Any]) -> str:
    plan, cpu = summary["plan"], summary["cpu"]
    eo = summary["exactly_once"]
    workers = ", ".join(
        f"{c['busy_mean']:.0%} (busiest second {c['busy_max_1s']:.0%})"
        for c in cpu["generator_workers"]
    )
    lines = [
        f"## {plan['agents']} agents x {plan['rounds']} rounds, heartbeat every "
        f"{plan['heartbeat_interval_s']:g} s, "
        + _fetch_title(plan["fetch_spread_s"])
        + _processes_title(plan),
        "",
        f"- {len(cpu['generator_workers'])} generator processes; allocation fetched "
        + _fetch_wording(plan["fetch_spread_s"])
        + f"; training sleep uniform(0, {plan['train_s']:g}) s; registrations spread over "
        f"{plan['ramp_s'] if plan['ramp_s'] >= 0 else plan['agents'] / 200:g} s",
        _allocator_line(summary),
        f"- wall {summary['wall_seconds']} s, {summary['throughput_rpc_per_s']} unary RPCs/s",
        f"- statistics sent {summary['stats_sent']} in {summary['agent_rounds_reported']} "
        f"reports: missing in Redis {eo['missing']}, extra {eo['extra']}, altered "
        f"{eo['altered']}; duplicates counted by the allocator "
        f"{summary['duplicates_reported_by_server']}",
        f"- errors: {summary['errors'] or 'none'}"
        + (f"; failed agents: {summary['failed_agents']}" if summary["failed_agents"] else "")
        + (
            f"; agent-rounds refused and skipped: {summary['agent_rounds_skipped']}"
            if summary.get("agent_rounds_skipped")
            else ""
        ),
        f"- CPU (share of one core): generator workers {workers}; allocator "
        + (
            "processes together "
            if plan.get("allocator_processes", 1) > 1
            or plan.get("driver_process")
            or plan.get("watch_process")
            else ""
        )
        + f"{cpu['allocator_busy']:.0%}; Redis {cpu['redis_busy']:.0%}; whole machine "
        f"{cpu['machine_busy']:.0%} of {cpu['cores']} cores busy; load average "
        f"{cpu['loadavg_before'][0]} before, {cpu['loadavg_after'][0]} after"
        + ("; **a generator worker was over 80% busy**" if cpu["generator_saturated"] else ""),
        "",
        "| RPC | calls | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for rpc, row in summary["rpcs"].items():
        lines.append(
            f"| {rpc} | {row['calls']} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} |"
        )
    checks = targets_met(summary)
    if checks:
        lines += ["", "| target | measured | met |", "|---|---:|---|"]
        lines += [
            f"| {c['what']} | {c['value']} | {'yes' if c['met'] else '**no**'} |" for c in checks
        ]
    return "\n".join(lines) + "\n"


INTRO = """# Load: simulated agents against the allocator (one process or replicas on one port)

`lada bench load` (lada/bench/load.py). The allocator runs as its own `lada allocator serve`
process on a real Redis; the agents are simulated by a multi-process asyncio generator
(grpc.aio), one channel and TCP connection per agent. Each agent does what slm_agent does on
the wire: RegisterAgent with its own enrollment secret (open enrollment), Heartbeat every
interval (phase-shifted at random), WatchRounds for the ALLOCATED and CLOSED events (the
phases slm_agent asks for), GetAllocation when its round is ALLOCATED,
a random "training" sleep, then ReportStats as a client stream of 32 samples per message.
Latencies are measured in the clients around each call; "WatchRounds (event lag)" is the
receipt time of each round event minus the event's timestamp. CPU is user+sys over wall
time (1.0 = one core busy): per generator process (with its busiest second), the allocator
process(es), Redis (INFO cpu) and the whole machine. At the end every (agent, round) in
Redis is compared with what the agent sent (StateStore.get_stats): missing, extra, altered.
Real agents fetch their allocation at a random moment within the ALLOCATED event's
`fetch_window_ms` (`fetch_window_ms_per_agent`, 8 ms per participant); "fetch at once" rows
switch that off to show the burst it avoids. `--agents/--rounds/--workers/
--heartbeat-interval/--train-s/--fetch-spread-s/--allocator-processes/--driver-process/
--watch-process` run one custom scenario (`--watch-process`: the agents follow WatchRounds on
one more RPC process with its own port, so no unary call waits behind a fan-out); `--quick`
is the CI form (tests/test_load.py).

"""


def scenarios(quick: bool) -> list[LoadPlan]:
    """The short form (CI) and the full form (docs/bench/load.md)."""
    if quick:
        return [LoadPlan(agents=8, rounds=2, workers=2, heartbeat_interval_s=1.0, train_s=0.2)]
    return [
        LoadPlan(agents=200, rounds=10),
        LoadPlan(agents=200, rounds=10, fetch_spread_s=0.0),
        LoadPlan(agents=200, rounds=10, allocator_processes=2),
        LoadPlan(agents=1000, rounds=10),
        LoadPlan(agents=1000, rounds=10, allocator_processes=2),
    ]


def run(out_dir: Path, quick: bool = False, plans: list[LoadPlan] | None = None) -> None:
    """Run the scenarios and write load.json + load.md under out_dir."""
    redis_url = os.environ.get("REDIS_URL", "")
    summaries = []
    for plan in plans or scenarios(quick):
        summary = run_load(plan, redis_url)
        summaries.append(summary)
        print(render(summary), flush=True)
    body = INTRO + "\n".join(render(s) for s in summaries)
    write_result(out_dir, "load", {"scenarios": summaries}, body)


def plan_from_options(quick: bool, **options: Any) -> list[LoadPlan] | None:
    """`lada bench load --agents N ...`: one custom scenario; None keeps the standard ones."""
    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        return None
    base = scenarios(quick)[0] if quick else LoadPlan(agents=200, rounds=10)
    return [replace(base, **given)]
