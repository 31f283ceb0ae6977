"""`lada bench llm`: generation and scoring throughput of the LLM service.

Matrix: backend (vllm, transformers) x transport (in-process LLMCore, gRPC via a real
`lada llm serve` process) x concurrent clients (1, 16), on the demo zoo LLM when built,
else the micro one. The path cache is off so every request really generates.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lada.bench import write_result
from lada.config import LLMServiceConfig
from lada.netports import free_port
from lada.tasks import Problem, format_target, load_dataset

POOL = "synthetic:domains=all,n=240,seed=7"
PATHS = 4
CLIENTS = (1, 16)
BACKENDS = ("vllm", "transformers")
REPEATS = 3  # full runs: every run shown, the best in "tokens/s"


@dataclass(frozen=True)
class Workload:
    """What every configuration runs: per sample, n paths; and 4 completions to score."""

    problems: list[Problem]
    max_tokens: int

    def completions(self, problem: Problem) -> list[str]:
        target = format_target(problem.reference)
        return [target[: len(target) * k // 4] or target for k in (1, 2, 3, 4)]


@dataclass
class Measurement:
    backend: str
    transport: str
    clients: int
    op: str
    tokens: int
    seconds: float
    # every repeat's tokens/s, and CPU seconds over all repeats per process role (bench:
    # the calling process, which holds the engine's API side in-process; server: the `lada
    # llm serve` process; engine: vLLM's engine-core processes)
    rates: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_tokens: int = 0

    @property
    def median_rate(self) -> float:
        return float(statistics.median(self.rates)) if self.rates else self.tokens_per_s

    @property
    def cpu_ms_per_token(self) -> float:
        """CPU outside the engine (the API side and, over gRPC, both ends of the call) per
        token; the engine's own CPU is left out: vLLM's CPU workers spin while they wait."""
        outside = self.cpu_s.get("bench", 0.0) + self.cpu_s.get("server", 0.0)
        return 1000 * outside / self.cpu_tokens if self.cpu_tokens else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class Target:
    """One way of calling the LLM: returns tokens produced/scored per call."""

    def generate(self, problem: Problem, seed: int, max_tokens: int) -> int:
        raise NotImplementedError

    def score(self, problem: Problem, completions: list[str]) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release the engine or the server process."""


class InProcessTarget(Target):
    """LLMCore called directly (no gRPC)."""

    def __init__(self, model: Path, backend: str, state_dir: Path) -> None:
        from llm_service.main import build_core
        from llm_service.settings import LLMServiceExtras

        config = LLMServiceConfig(model=str(model), backend=backend, public_pool=POOL)
        extras = LLMServiceExtras(state_dir=str(state_dir), cache_entries=0)
        self.core = build_core(config, extras)

    def generate(self, problem: Problem, seed: int, max_tokens: int) -> int:
        from llm_service.types import Sampling

        sampling = Sampling(n=PATHS, temperature=0.8, max_tokens=max_tokens, seed=seed)
        result = self.core.generate([problem.id], [], sampling)
        return sum(p.token_count for p in result.results[0].paths)

    def score(self, problem: Problem, completions: list[str]) -> int:
        scores = self.core.score("", completions, sample_id=problem.id).scores
        return sum(s.token_count for s in scores)

    def close(self) -> None:
        self.core.close()


class GrpcTarget(Target):
    """A `lada llm serve` process; one LLMClient per calling thread."""

    def __init__(self, model: Path, backend: str, state_dir: Path, log_path: Path) -> None:
        from lada.healthcheck import check

        self.port = free_port()
        self._local = threading.local()
        self._clients: list[Any] = []
        env = {
            **os.environ,
            "LADA_LLM_CACHE_ENTRIES": "0",
            "LADA_LLM_STATE_DIR": str(state_dir),
            "PYTHONUNBUFFERED": "1",
        }
        args = ["llm", "serve", "--port", str(self.port), "--metrics-port", "-1"]
        args += ["--backend", backend, "--model", str(model), "--public-pool", POOL]
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lada.cli", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 600
        while not check(f"127.0.0.1:{self.port}", timeout=2.0):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"llm serve did not start; see {log_path}")
            time.sleep(0.5)

    def _client(self) -> Any:
        from llm_service.client import LLMClient

        if not hasattr(self._local, "client"):
            self._local.client = LLMClient(f"127.0.0.1:{self.port}", timeout_s=900)
            self._clients.append(self._local.client)
        return self._local.client

    def generate(self, problem: Problem, seed: int, max_tokens: int) -> int:
        result = self._client().generate(
            [problem.id], n=PATHS, temperature=0.8, max_tokens=max_tokens, seed=seed
        )
        return sum(p.token_count for p in result.results[0].paths)

    def score(self, problem: Problem, completions: list[str]) -> int:
        scores = self._client().score(completions, sample_id=problem.id).scores
        return sum(s.token_count for s in scores)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def _timed(clients: int, jobs: list[Callable[[], int]]) -> tuple[int, float]:
    """Run jobs on `clients` threads; total tokens and wall seconds."""
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(lambda job: job(), jobs))
    return tokens, time.perf_counter() - started


def _cpu_by_role() -> dict[str, float]:
    """CPU seconds (user+sys) so far of this process and its descendants, by role: where
    the gRPC layer's cost shows up, whatever else the shared machine is running."""
    me = psutil.Process()
    out = {"bench": 0.0, "server": 0.0, "engine": 0.0}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            command = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        role = "bench" if proc.pid == me.pid else "server" if "llm serve" in command else "engine"
        out[role] += times.user + times.system
    return out


def _jobs(target: Target, work: Workload, op: str, seed_base: int) -> list[Callable[[], int]]:
    """One call per sample: generate n paths, or score its 4 completions."""
    if op == "generate":
        return [
            (lambda p=p, s=seed_base + i: target.generate(p, seed=s, max_tokens=work.max_tokens))
            for i, p in enumerate(work.problems)
        ]
    return [(lambda p=p: target.score(p, work.completions(p))) for p in work.problems]


def measure(
    target: Target, backend: str, transport: str, work: Workload, repeats: int
) -> list[Measurement]:
    """Warm up, then generation and scoring with 1 and 16 concurrent clients.

    Each configuration runs `repeats` times with the same seeds and keeps the fastest run:
    the machine is shared, and the best run is the least disturbed one.
    """
    target.generate(work.problems[0], seed=999, max_tokens=8)
    out = []
    for clients in CLIENTS:
        for op in ("generate", "score"):
            jobs = _jobs(target, work, op, seed_base=1000 * clients)
            before = _cpu_by_role()
            runs = [_timed(clients, jobs) for _ in range(repeats)]
            after = _cpu_by_role()
            tokens, seconds = min(runs, key=lambda run: run[1] / max(1, run[0]))
            measured = Measurement(
                backend,
                transport,
                clients,
                op,
                tokens,
                seconds,
                rates=[round(t / s, 1) for t, s in runs],
                cpu_s={k: round(after[k] - before[k], 2) for k in after},
                cpu_tokens=sum(t for t, _ in runs),
            )
            out.append(measured)
            print(
                f"{backend:12} {transport:10} clients={clients:2} {op:8} "
                f"{tokens / seconds:9.1f} tok/s (runs {measured.rates}; CPU s {measured.cpu_s})",
                flush=True,
            )
    return out


def bench_model() -> tuple[Path, str]:
    """The demo zoo LLM if built, else the micro one (built now, < 1 min)."""
    from lada.zoo import build_zoo, resolve_zoo_model

    override = os.environ.get("LADA_BENCH_LLM_MODEL")
    if override:
        return Path(override), "override"
    try:
        return resolve_zoo_model("demo/llm"), "demo"
    except FileNotFoundError:
        return Path(build_zoo("micro", progress=False).llm), "micro"


def run(out_dir: Path, quick: bool) -> None:
    """Measure every configuration and write llm.json + llm.md under out_dir."""
    model, profile = bench_model()
    count, max_tokens, repeats = (16, 48, 1) if quick else (64, 128, REPEATS)
    work = Workload(load_dataset(POOL)[:count], max_tokens)
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="lada-bench-llm-") as tmp:
        root = Path(tmp)
        for backend in BACKENDS:
            target: Target = InProcessTarget(model, backend, root / f"{backend}-inproc")
            try:
                results += measure(target, backend, "in-process", work, repeats)
            finally:
                target.close()
            target = GrpcTarget(model, backend, root / f"{backend}-grpc", root / f"{backend}.log")
            try:
                results += measure(target, backend, "grpc", work, repeats)
            finally:
                target.close()
    summary = _summary(results)
    payload = {
        "model": str(model),
        "zoo_profile": profile,
        "samples": count,
        "paths_per_sample": PATHS,
        "max_tokens": max_tokens,
        "repeats": repeats,
        "quick": quick,
        "measurements": [
            {
                **m.__dict__,
                "tokens_per_s": m.tokens_per_s,
                "median_tokens_per_s": m.median_rate,
                "cpu_ms_per_token": m.cpu_ms_per_token,
            }
            for m in results
        ],
        "summary": summary,
    }
    write_result(out_dir, "llm", payload, _markdown(results, summary, profile, count, max_tokens))


def _rate(results: list[Measurement], **where: Any) -> float:
    for m in results:
        if all(getattr(m, k) == v for k, v in where.items()):
            return m.tokens_per_s
    return 0.0


def _cpu_per_token(results: list[Measurement], **where: Any) -> float:
    for m in results:
        if all(getattr(m, k) == v for k, v in where.items()):
            return m.cpu_ms_per_token
    return 0.0


def _summary(results: list[Measurement]) -> dict[str, float]:
    """The two goals: vLLM/transformers (16 clients, generate); gRPC/in-process ratios."""
    out: dict[str, float] = {}
    for transport in ("in-process", "grpc"):
        vllm = _rate(results, backend="vllm", transport=transport, clients=16, op="generate")
        hf = _rate(results, backend="transformers", transport=transport, clients=16, op="generate")
        out[f"vllm_over_transformers_generate_16_{transport}"] = vllm / hf if hf else 0.0
    for backend in BACKENDS:
        for clients in CLIENTS:
            for op in ("generate", "score"):
                local = _rate(
                    results, backend=backend, transport="in-process", clients=clients, op=op
                )
                remote = _rate(results, backend=backend, transport="grpc", clients=clients, op=op)
                out[f"grpc_over_inprocess_{backend}_{op}_{clients}"] = (
                    remote / local if local else 0.0
                )
                where = {"backend": backend, "clients": clients, "op": op}
                cpu_local = _cpu_per_token(results, transport="in-process", **where)
                cpu_remote = _cpu_per_token(results, transport="grpc", **where)
                # the transport's extra CPU per token as a share of the in-process wall
                # time per token: what it costs when the machine's cores are all busy
                out[f"grpc_cpu_share_{backend}_{op}_{clients}"] = (
                    (cpu_remote - cpu_local) * local / 1000 if local else 0.0
                )
    return out


def _markdown(
    results: list[Measurement], summary: dict[str, float], profile: str, count: int, tokens: int
) -> str:
    lines = [
        f"LLM throughput ({profile} zoo LLM; {count} samples x {PATHS} paths, "
        f"max_tokens {tokens}; path cache off; best of the repeats)",
        "",
        "| backend | transport | clients | op | tokens | seconds | tokens/s | every run tok/s "
        "| CPU s bench / server / engine | CPU ms/token outside the engine |",
        "|---|---|---:|---|---:|---:|---:|---|---|---:|",
    ]
    for m in results:
        cpu = " / ".join(f"{m.cpu_s.get(k, 0.0):.2f}" for k in ("bench", "server", "engine"))
        lines.append(
            f"| {m.backend} | {m.transport} | {m.clients} | {m.op} | {m.tokens} | "
            f"{m.seconds:.2f} | {m.tokens_per_s:.1f} | {', '.join(f'{r:.0f}' for r in m.rates)} "
            f"| {cpu} | {m.cpu_ms_per_token:.3f} |"
        )
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in summary.items()]
    return "\n".join(lines) + "\n"
