"""`lada up`: a whole federation as local processes, with live progress and a report.

Starts Redis (embedded unless REDIS_URL), the LLM service, the allocator and N agents
from one YAML file, follows the rounds through the allocator's operator RPCs, stops every
process on Ctrl-C or at the end, and writes report.md, metrics.json and plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from lada.config import (
    AgentSettings,
    ClusterConfig,
    ConfigError,
    agent_for_cluster,
    allocator_for_cluster,
    lada_home,
    llm_env_var,
    load_config,
)
from lada.netports import free_ports
from lada.redis_conn import RedisHandle, connect, shutdown_embedded, start_embedded
from lada.state import StateStore
from lada.tasks import (
    AgentSplitSpec,
    FederatedSplit,
    Problem,
    SplitSpec,
    format_prompt,
    load_dataset,
    make_split,
)
from lada.v1 import agent_pb2, agent_pb2_grpc, allocator_pb2, allocator_pb2_grpc, common_pb2
from llm_service.types import BASE_VERSION

log = logging.getLogger("lada.cluster")

ROUND_PHASE = common_pb2.RoundPhase
AGENT_STATE = allocator_pb2.AgentRoundState


@dataclass
class Child:
    """One service process of the cluster and where its log goes."""

    name: str
    address: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@dataclass
class Cluster:
    """The running processes plus what is needed to query them."""

    config: ClusterConfig
    run_id: str
    redis: RedisHandle
    workdir: Path
    children: dict[str, Child] = field(default_factory=dict)
    # Known to the allocator and to `lada up` only: it issues the agents' invitations.
    operator_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def start(
        self, name: str, args: list[str], port: int, env_extra: dict[str, str] | None = None
    ) -> Child:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "REDIS_URL": self.redis.url}
        env.update(env_extra or {})
        with open(log_path, "ab") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lada.cli", *args],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        child = Child(name, f"127.0.0.1:{port}", proc, log_path)
        self.children[name] = child
        return child

    def stop_all(self) -> None:
        """Agents first (they report), then the allocator, then the LLM service."""
        order = sorted(
            self.children.values(), key=lambda c: (c.name == "llm", c.name == "allocator")
        )
        for child in order:
            child.stop()


def wait_serving(child: Child, timeout: float) -> None:
    """Block until the child's gRPC health check says SERVING, or fail with its log."""
    from lada.healthcheck import check

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(
                f"{child.name} exited ({child.proc.returncode}):\n{child.log_tail()}"
            )
        if check(child.address, timeout=2.0):
            return
        time.sleep(0.5)
    raise TimeoutError(f"{child.name} not SERVING after {timeout:.0f}s:\n{child.log_tail()}")


def resolve_models(config: ClusterConfig) -> dict[str, Path]:
    """Zoo names (built on demand, cached) or directories, for the LLM and each agent."""
    from lada.zoo import build_zoo

    names = [config.llm_model, *(a.model for a in config.agents)]
    if all(Path(n).is_dir() for n in names):
        return {n: Path(n) for n in names}
    manifest = build_zoo(config.profile, progress=True)
    catalogue = {"llm": manifest.llm, **manifest.slms}
    resolved: dict[str, Path] = {}
    for name in names:
        if Path(name).is_dir():
            resolved[name] = Path(name)
        elif name in catalogue:
            resolved[name] = Path(catalogue[name])
        else:
            raise ConfigError(
                f"model {name!r}: not a directory and not in the "
                f"{config.profile} zoo ({', '.join(sorted(catalogue))})"
            )
    return resolved


def flags(**options: object) -> list[str]:
    """`flags(metrics_port=-1)` -> ["--metrics-port", "-1"]; booleans become bare flags."""
    out: list[str] = []
    for key, value in options.items():
        name = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(name if value else "--no-" + key.replace("_", "-"))
        else:
            out += [name, str(value)]
    return out


@dataclass
class DataFiles:
    """The carved split as JSONL dataset specs every process can load."""

    public: str
    private: dict[str, str]
    test: dict[str, str]
    fingerprint: str


def write_jsonl(problems: list[Problem], path: Path) -> str:
    """Write problems in the generic JSONL format (ids kept) and return its dataset spec."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as sink:
        for problem in problems:
            sink.write(json.dumps(problem.to_dict()) + "\n")
    return f"jsonl:{path}"


def carve_split(config: ClusterConfig) -> FederatedSplit:
    """Split the source into disjoint public / private / test sets, as the config says."""
    return make_split(
        SplitSpec(
            source=config.source,
            public_size=config.public_size,
            test_size=config.test_size,
            skew=config.skew,
            own_share=config.own_share,
            seed=config.split_seed,
            agents=[
                AgentSplitSpec(a.name, tuple(a.domains), a.private_size) for a in config.agents
            ],
        )
    )


def carve_data(config: ClusterConfig, data_dir: Path) -> DataFiles:
    """`carve_split`, written out as JSONL files."""
    split = carve_split(config)
    private_dir, test_dir = data_dir / "private", data_dir / "test"
    return DataFiles(
        public=write_jsonl(split.public, data_dir / "public.jsonl"),
        private={n: write_jsonl(p, private_dir / f"{n}.jsonl") for n, p in split.private.items()},
        test={d: write_jsonl(p, test_dir / f"{d}.jsonl") for d, p in split.test.items()},
        fingerprint=split.fingerprint,
    )


def llm_args(config: ClusterConfig, model: Path, port: int, public_pool: str) -> list[str]:
    return [
        "llm",
        "serve",
        *flags(
            port=port,
            metrics_port=-1,
            model=model,
            backend=config.llm_backend,
            public_pool=public_pool,
            gpu_memory_utilization=config.gpu_memory_utilization,
        ),
    ]


def write_service_config(section: str, config: Any, path: Path) -> str:
    """A service's whole config as YAML for its `--config`, so the processes of `lada up`
    run exactly the configs the simulation builds (`allocator_for_cluster` & co)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({section: dataclasses.asdict(config)}))
    return str(path)


def allocator_args(config_file: str, port: int, llm: str, redis_url: str) -> list[str]:
    return [
        "allocator",
        "serve",
        *flags(config=config_file, port=port, metrics_port=-1, redis_url=redis_url, llm=llm),
    ]


def agent_args(config_file: str, port: int, allocator: str, llm: str) -> list[str]:
    return [
        "agent",
        "run",
        *flags(config=config_file, port=port, metrics_port=-1, allocator=allocator, llm=llm),
    ]


@contextmanager
def redis_for_cluster(workdir: Path, name: str = "cluster") -> Iterator[RedisHandle]:
    """REDIS_URL when set, else an embedded server kept under LADA_HOME; a process running
    beside another (the baseline beside the live run) passes its own `name`, so that neither
    stops the other's server."""
    if os.environ.get("REDIS_URL"):
        handle = connect(os.environ["REDIS_URL"])
        yield handle
        handle.close()
        return
    handle = start_embedded(lada_home() / "redis" / f"{name}.rdb")
    try:
        yield handle
    finally:
        shutdown_embedded(handle)


def start_cluster(cluster: Cluster, models: dict[str, Path], data: DataFiles) -> None:
    """The LLM service and the allocator side by side (the allocator reaches the LLM only when
    a round needs it), then every agent at once once both serve (an agent checks both on start).
    """
    config = cluster.config
    llm_port, allocator_port, *agent_ports = free_ports(2 + len(config.agents))
    configs = cluster.workdir / "configs"
    llm_model = models[config.llm_model]
    llm = cluster.start(
        "llm", llm_args(config, llm_model, llm_port, data.public), llm_port, llm_state_env(cluster)
    )
    allocator_config = allocator_for_cluster(config, cluster.run_id, data.public)
    allocator = cluster.start(
        "allocator",
        allocator_args(
            write_service_config("allocator", allocator_config, configs / "allocator.yaml"),
            allocator_port,
            llm.address,
            cluster.redis.url,
        ),
        allocator_port,
        {"LADA_OPERATOR_TOKEN": cluster.operator_token},
    )
    wait_serving(allocator, 120)
    wait_serving(llm, config.startup_timeout_s)
    secrets_dir = cluster.workdir / "secrets"
    threads = agent_threads_env(len(config.agents))
    started = []
    for agent, port in zip(config.agents, agent_ports, strict=True):
        agent_config = agent_for_cluster(
            config,
            agent,
            str(models[agent.model]),
            data.private[agent.name],
            data.public,
            str(cluster.workdir / "agents" / agent.name),
        )
        agent_config.enrollment_secret_file = invite(cluster, agent.name, secrets_dir)
        args = agent_args(
            write_service_config("agent", agent_config, configs / f"{agent.name}.yaml"),
            port,
            allocator.address,
            llm.address,
        )
        started.append(cluster.start(agent.name, args, port, threads))
    for child in started:
        wait_serving(child, 300)


def llm_state_env(cluster: Cluster) -> dict[str, str]:
    """The LLM service keeps its versions in the run's own directory, so every `lada up` starts
    from the base model, not from what an earlier run absorbed; LADA_LLM_STATE_DIR, when set,
    names a directory to continue from instead."""
    variable = llm_env_var("state_dir")
    return {variable: os.environ.get(variable) or str(cluster.workdir / "llm")}


def agent_threads_env(agents: int) -> dict[str, str]:
    """Split the machine's cores between the agents that train at once: with torch's default
    (every core per process) four agents on two cores took 4x the wall time for a demo round
    as with one thread each (OpenMP threads spin-waiting on each other; docs/zoo.md, attempt 5)."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, agents)))
    return {"LADA_AGENT_TORCH_THREADS": threads, "OMP_NUM_THREADS": threads}


def invite(cluster: Cluster, name: str, secrets_dir: Path) -> str:
    """Invite an agent through the allocator's InviteAgent RPC, as an operator would; the
    secret goes to a 0600 file only that agent reads. Returns the file's path."""
    from allocator.client import OperatorClient
    from slm_agent.checkpoint import write_atomic

    with OperatorClient(cluster.children["allocator"].address, cluster.operator_token) as op:
        reply = op.invite(name)
    path = secrets_dir / f"{name}.secret"
    write_atomic(path, reply.enrollment_secret.encode(), mode=0o600)
    return str(path)


@dataclass
class Snapshot:
    """What the live view shows: the round, its phase and each agent's progress."""

    round: int
    total_rounds: int
    phase: str
    agents: list[dict[str, object]]
    finished: bool


def poll(cluster: Cluster) -> Snapshot:
    with grpc.insecure_channel(cluster.children["allocator"].address) as channel:
        status = allocator_pb2_grpc.AllocatorStub(channel).GetRoundStatus(
            allocator_pb2.GetRoundStatusRequest(),
            timeout=5,
            metadata=[("authorization", f"Bearer {cluster.operator_token}")],
        )
    rows: list[dict[str, object]] = []
    for agent in status.agents:
        row: dict[str, object] = {
            "name": agent.name,
            "state": AGENT_STATE.Name(agent.state).removeprefix("AGENT_ROUND_STATE_"),
            "allocated": agent.allocated,
            "reported": agent.reported,
        }
        child = cluster.children.get(agent.name)
        if child and child.alive():
            row.update(agent_status(child.address))
        rows.append(row)
    phase = ROUND_PHASE.Name(status.phase).removeprefix("ROUND_PHASE_")
    finished = status.round >= status.total_rounds > 0 and phase == "CLOSED"
    return Snapshot(status.round, status.total_rounds, phase, rows, finished)


def agent_status(address: str) -> dict[str, object]:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = agent_pb2_grpc.AgentStub(channel).GetAgentStatus(
                agent_pb2.GetAgentStatusRequest(), timeout=2
            )
    except grpc.RpcError:
        return {}
    return {
        "activity": reply.activity,
        "accuracy": round(reply.last_accuracy, 3),
        "bytes_sent": reply.bytes_sent,
    }


AGENT_COLUMNS = ("state", "allocated", "reported", "activity", "accuracy", "bytes_sent")


def render(snapshot: Snapshot, elapsed: float):  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table(
        title=f"LaDa round {snapshot.round}/{snapshot.total_rounds} "
        f"[{snapshot.phase}]  {elapsed:.0f}s"
    )
    table.add_column("agent")
    for column in AGENT_COLUMNS:
        table.add_column(column.replace("_sent", ""))
    for row in snapshot.agents:
        table.add_row(*(str(row.get(k, "")) for k in ("name", *AGENT_COLUMNS)))
    return table


def progress_line(snapshot: Snapshot) -> str:
    """One plain-text line of the live view (logs and pipes get this instead of the table)."""
    agents = "; ".join(
        f"{row.get('name')}: {row.get('state', '')} "
        f"{row.get('reported', 0)}/{row.get('allocated', 0)} reported"
        + (f", {row['activity']}" if row.get("activity") else "")
        + (f", accuracy {row['accuracy']}" if row.get("accuracy") not in (None, "") else "")
        for row in snapshot.agents
    )
    return f"round {snapshot.round}/{snapshot.total_rounds} [{snapshot.phase}] {agents}".rstrip()


def follow(cluster: Cluster, poll_seconds: float = 1.0) -> Snapshot:
    """Show progress until the last round closes or a core service dies: a live table on a
    terminal, else one line each time something changes."""
    from rich.console import Console
    from rich.live import Live

    started = time.monotonic()
    snapshot = Snapshot(0, cluster.config.rounds, "STARTING", [], False)
    console = Console(stderr=True)
    if not console.is_terminal:
        return _follow_plain(cluster, snapshot, poll_seconds, started)
    with Live(render(snapshot, 0), console=console, refresh_per_second=2) as live:
        while not snapshot.finished:
            snapshot = _next_snapshot(cluster, snapshot)
            live.update(render(snapshot, time.monotonic() - started))
            time.sleep(poll_seconds)
    return snapshot


def _follow_plain(
    cluster: Cluster, snapshot: Snapshot, poll_seconds: float, started: float
) -> Snapshot:
    shown = ""
    while not snapshot.finished:
        snapshot = _next_snapshot(cluster, snapshot)
        line = progress_line(snapshot)
        if line != shown:
            print(f"[{time.monotonic() - started:6.0f}s] {line}", file=sys.stderr, flush=True)
            shown = line
        time.sleep(poll_seconds)
    return snapshot


def _next_snapshot(cluster: Cluster, previous: Snapshot) -> Snapshot:
    """Poll the allocator; raise if a core service died, keep the last view on a failed poll."""
    for core in ("allocator", "llm"):
        if not cluster.children[core].alive():
            raise RuntimeError(f"{core} died:\n{cluster.children[core].log_tail()}")
    try:
        return poll(cluster)
    except grpc.RpcError as exc:
        log.warning("status poll failed: %s", exc.code().name)
        return previous


LOGIT_TOP_K = 128  # FedMKT-style mutual distillation sends the top-128 logits per token
LOGIT_ENTRY_BYTES = 8  # a float32 logit plus an int32 token index


def test_problems(data: DataFiles) -> list[Problem]:
    return [p for spec in data.test.values() for p in load_dataset(spec)]


def llm_accuracy(address: str, problems: list[Problem]) -> dict[str, float]:
    """Greedy accuracy of the base model and of the version being served (after absorbing)."""
    from lada.report import LLM_EVAL_MAX_TOKENS, llm_accuracy_of
    from llm_service.client import LLMClient

    with LLMClient(address) as client:

        def answers(prompts: list[str], version: str) -> list[str]:
            result = client.generate(
                prompts=prompts,
                n=1,
                temperature=0.0,
                max_tokens=LLM_EVAL_MAX_TOKENS,
                model_version=version,
            )
            return [r.paths[0].text for r in result.results]

        return llm_accuracy_of(answers, [BASE_VERSION, client.serving_version()], problems)


def logit_exchange_bytes(
    address: str, store: StateStore, agent_id: str, rounds: int, config: ClusterConfig
) -> dict[int, int]:
    """What top-128-logit exchange would send per round for the same samples and paths.

    Re-asks the LLM service for the agent's paths with the agent's sampling parameters and
    the model version each sample was allocated under (a cache hit: asking the version
    served now would generate every earlier round's paths again) and counts their tokens.
    """
    from llm_service.client import LLMClient

    per_round = {}
    with LLMClient(address) as client:
        for round_number in range(1, rounds + 1):
            by_version: dict[str, list[str]] = {}
            for a in store.get_allocation(round_number, agent_id):
                by_version.setdefault(a.version, []).append(a.sample_id)
            if not by_version:
                continue
            tokens = 0
            for version, ids in by_version.items():
                result = client.generate(
                    sample_ids=ids,
                    n=config.lada.paths_per_sample,
                    temperature=config.lada.path_temperature,
                    max_tokens=AgentSettings().llm_max_tokens,
                    model_version=version,
                )
                tokens += sum(path.token_count for r in result.results for path in r.paths)
            per_round[round_number] = tokens * LOGIT_TOP_K * LOGIT_ENTRY_BYTES
    return per_round


def audited_bytes(state_dir: Path) -> dict[int, int]:
    """Bytes that left an agent per round, from its own audit log."""
    from slm_agent.audit import AuditLog
    from slm_agent.checkpoint import CheckpointStore

    per_round: dict[int, int] = {}
    for record in AuditLog(CheckpointStore(state_dir).audit_path).read():
        per_round[record.round] = per_round.get(record.round, 0) + record.bytes
    return per_round


def collect_cluster_metrics(cluster: Cluster, data: DataFiles, started: float) -> dict[str, Any]:
    """What needs the services: round state, LLM accuracy, logit-exchange comparison."""
    from lada.report import run_metrics

    config = cluster.config
    store = StateStore(cluster.redis.client, cluster.run_id)
    llm_address = cluster.children["llm"].address
    logits = {
        a.name: logit_exchange_bytes(llm_address, store, a.agent_id, config.rounds, config)
        for a in store.list_agents()
    }
    metrics = run_metrics(
        config,
        store,
        "cluster",
        started,
        llm_accuracy(llm_address, test_problems(data)),
        load_dataset(data.public),
    )
    return {**metrics, "logit_exchange_bytes": logits}


def add_offline_metrics(
    metrics: dict[str, Any], cluster: Cluster, models: dict[str, Path], data: DataFiles
) -> None:
    """After the processes stopped: audited bytes, test accuracy before/after, and which
    test prompts the LLM's last version answers with its adapter."""
    from lada.report import evaluate_agents, share_by_domain
    from llm_service.gate import serving_routes

    problems = test_problems(data)
    state_dir = Path(llm_state_env(cluster)[llm_env_var("state_dir")])
    routed = serving_routes(state_dir, [format_prompt(p.question) for p in problems])
    if routed is not None:
        metrics["llm_adapter_share"] = share_by_domain(problems, routed)
    agents = cluster.config.agents
    metrics["bytes_sent"] = {
        a.name: audited_bytes(cluster.workdir / "agents" / a.name) for a in agents
    }
    test_spec = write_jsonl(test_problems(data), cluster.workdir / "data" / "test-all.jsonl")
    before = evaluate_agents(agents, cluster.workdir, models, test_spec, False, with_ids=True)
    after = evaluate_agents(agents, cluster.workdir, models, test_spec, True, with_ids=True)
    metrics["final_eval"] = {
        name: {
            "before": before[name]["all"],
            "after": after[name]["all"],
            "own_before": before[name]["own"],
            "own_after": after[name]["own"],
            "own_nlp_before": before[name]["own_nlp"],
            "own_nlp_after": after[name]["own_nlp"],
            **own_flips(before[name]["own_correct"], after[name]["own_correct"]),
            "own_correct_before": before[name]["own_correct"],
        }
        for name in before
    }


def own_flips(before: list[str], after: list[str]) -> dict[str, Any]:
    """Own-domain problems newly right and no longer right, with the McNemar p-value: whether
    a change in accuracy is more than the churn of retraining."""
    from lada.report import flips

    change = flips(before, after)
    return {"own_up": change.up, "own_down": change.down, "own_p": change.p}


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Warnings only from logger `name` meanwhile: the in-process baseline run would print
    every agent's and the LLM's INFO lines into the console of `lada up`."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def use_torch_threads(config: ClusterConfig) -> None:
    """This process's torch threads as `config.torch_threads` says (0: torch's default)."""
    if config.torch_threads > 0:
        import torch

        torch.set_num_threads(config.torch_threads)


def baseline_metrics(
    config: ClusterConfig, models: dict[str, Path], data: DataFiles, workdir: Path
) -> dict[str, Any]:
    """The same federation (split, seed, budget) under `config.baseline_policy`, simulated in
    this process, and its agents' test accuracy after it: what the policy is measured against."""
    from lada.report import evaluate_agents
    from lada.simulation import simulate

    use_torch_threads(config)
    base = dataclasses.replace(config, policy=config.baseline_policy)
    base_dir = workdir / "baseline"
    with redis_for_cluster(base_dir, name="baseline") as handle, _quiet("lada"):
        run = simulate(base, base_dir, handle, models)
    test_spec = write_jsonl(test_problems(data), base_dir / "test-all.jsonl")
    after = evaluate_agents(config.agents, base_dir, models, test_spec, True, with_ids=True)
    return {
        "policy": base.policy,
        "mode": run["mode"],
        "wall_seconds": run["wall_seconds"],
        "llm_accuracy_by_domain": run["llm_accuracy_by_domain"],
        "after": after,
    }


@contextmanager
def baseline_beside(
    config: ClusterConfig, models: dict[str, Path], data: DataFiles, workdir: Path
) -> Iterator[Callable[[], dict[str, Any] | None]]:
    """Run `baseline_metrics` in a child process while the live federation runs (`lada up`
    alone: 758 s against 792 s with it after the run, docs/zoo.md attempt 15); yields a call
    that waits for the result. A child that finished exits cleanly (killed idle, it left a
    semaphore for multiprocessing's resource tracker to warn about); one still working when
    the caller leaves is killed."""
    if not config.baseline_policy:
        yield lambda: None
        return
    import multiprocessing

    print(
        f"baseline: policy `{config.baseline_policy}` on the same federation, simulated beside it"
    )
    pool = multiprocessing.get_context("spawn").Pool(1)
    pending = pool.apply_async(baseline_metrics, (config, models, data, workdir))
    try:
        yield pending.get
    finally:
        if pending.ready():
            pool.close()
        else:
            pool.terminate()
        pool.join()


def add_baseline_metrics(metrics: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    """Pair the baseline's after-run accuracy with the agents' own before-run accuracy."""
    if baseline is None:
        return
    before = metrics.get("final_eval", {})
    after = baseline.pop("after")
    metrics["baseline"] = {
        **baseline,
        "final_eval": {
            name: {
                "before": before.get(name, {}).get("before"),
                "after": after[name]["all"],
                "own_before": before.get(name, {}).get("own_before"),
                "own_after": after[name]["own"],
                **(
                    own_flips(before[name]["own_correct_before"], after[name]["own_correct"])
                    if "own_correct_before" in before.get(name, {})
                    else {}
                ),
            }
            for name in after
        },
    }


def run_cluster(config_path: str, out_dir: str | None = None) -> int:
    """Run a federation from a YAML file; return a process exit code."""
    from lada.logs import configure_logging
    from lada.report import write_report

    configure_logging("INFO", as_json=False, service="cluster")
    config = load_config(ClusterConfig, config_path, section="cluster")
    use_torch_threads(config)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report_dir = Path(out_dir or f"reports/{stamp}")
    workdir = report_dir / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    models = resolve_models(config)
    data = carve_data(config, workdir / "data")
    with (
        baseline_beside(config, models, data, workdir) as baseline,
        redis_for_cluster(workdir) as redis_handle,
    ):
        cluster = Cluster(config, f"{config.run_id}-{stamp}", redis_handle, workdir)
        started = time.monotonic()
        try:
            start_cluster(cluster, models, data)
            follow(cluster)
            metrics = collect_cluster_metrics(cluster, data, started)
        except KeyboardInterrupt:
            print("lada: interrupted; stopping every process", file=sys.stderr)
            return 130
        finally:
            cluster.stop_all()
        add_offline_metrics(metrics, cluster, models, data)
        add_baseline_metrics(metrics, baseline())
    write_report(report_dir, metrics)
    print(f"report: {report_dir / 'report.md'}")
    return 0
