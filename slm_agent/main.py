"""`lada agent run`: validate inputs, serve lada.v1.Agent, connect, then run the round loop.

Exit codes: 0 the run finished (or SIGTERM); 1 bad input (private data, pool, model,
loss, enrollment secret file), found before registering; 3 the allocator or the LLM
service stayed unreachable for `connect_deadline_s`; 4 the allocator refused the agent
(invitation, token, pool, request); 5 the run has no round left for the agent (it joined
while the last round was closing, or after the run ended).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import torch

from lada.config import AgentConfig, ConfigError, check_positive, lada_home
from lada.logs import configure_logging
from lada.modeling import ModelDirError, check_model_dir
from lada.server import (
    RunningServer,
    ServiceBinding,
    channel_credentials,
    grpc_options,
    start_server,
)
from lada.tasks import DatasetSpecError, Problem, load_dataset, pool_fingerprint
from lada.v1 import agent_pb2_grpc
from slm_agent.agent import Agent, AgentPlan, NoRoundLeft, StatusBoard
from slm_agent.audit import AuditLog, audited_channel
from slm_agent.checkpoint import CheckpointStore
from slm_agent.clients import GrpcAllocator, GrpcLLM, wait_ready
from slm_agent.losses import DistillationLoss, make_loss
from slm_agent.ports import ServiceError, Unreachable
from slm_agent.service import AgentServicer
from slm_agent.settings import AgentSettings, agent_settings
from slm_agent.trainer import LocalTrainer

log = logging.getLogger("lada.agent")

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_UNREACHABLE = 3
EXIT_REFUSED = 4
EXIT_NO_ROUND_LEFT = 5


class BadInput(ValueError):
    """An input the agent cannot work with; the message names the field."""


@dataclass
class Inputs:
    """Everything validated before the agent registers."""

    private: list[Problem]
    pool: dict[str, Problem]
    fingerprint: str
    loss: DistillationLoss
    state_dir: Path
    enrollment_secret: str = ""


def load_private_data(spec: str) -> list[Problem]:
    """The private data, or BadInput when the spec is empty, malformed or yields nothing."""
    if not spec.strip():
        raise BadInput(
            "private_data: empty dataset spec (e.g. synthetic:domains=rates,n=200,seed=5)"
        )
    try:
        problems = load_dataset(spec)
    except DatasetSpecError as exc:
        raise BadInput(f"private_data: {exc}") from exc
    if not problems:
        raise BadInput(f"private_data: {spec!r} holds no samples")
    return problems


def validate_inputs(config: AgentConfig, settings: AgentSettings) -> Inputs:
    """Check private data, public pool, model directory and loss; nothing is sent yet."""
    private = load_private_data(config.private_data)
    try:
        pool_list = load_dataset(settings.public_pool)
    except DatasetSpecError as exc:
        raise BadInput(f"public_pool: {exc}") from exc
    try:
        check_model_dir(config.model)
    except ModelDirError as exc:
        raise BadInput(f"model: {exc}") from exc
    if config.capacity <= 0:
        raise BadInput(f"capacity: must be positive, got {config.capacity}")
    try:
        check_positive("learning_rate", config.learning_rate)
    except ConfigError as exc:
        raise BadInput(str(exc)) from exc
    try:
        loss = make_loss(config.loss, config.lada)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    state_dir = Path(config.state_dir) if config.state_dir else lada_home() / "agents" / config.name
    return Inputs(
        private,
        {p.id: p for p in pool_list},
        pool_fingerprint(pool_list),
        loss,
        state_dir,
        enrollment_secret(config),
    )


def enrollment_secret(config: AgentConfig) -> str:
    """The invitation's secret: `enrollment_secret`, else the file `enrollment_secret_file`."""
    if config.enrollment_secret or not config.enrollment_secret_file:
        return config.enrollment_secret.strip()
    path = Path(config.enrollment_secret_file)
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise BadInput(f"enrollment_secret_file: cannot read {path}: {exc.strerror}") from exc
    if not secret:
        raise BadInput(f"enrollment_secret_file: {path} is empty")
    return secret


def run(config: AgentConfig) -> int:
    """The `lada agent run` entry point; returns the process exit code."""
    configure_logging(
        config.server.log_level, config.server.log_json, service=f"agent:{config.name}"
    )
    try:
        settings = agent_settings(config)
    except ConfigError as exc:
        log.error(f"bad input: {exc}")
        return EXIT_BAD_INPUT
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    try:
        inputs = validate_inputs(config, settings)
    except BadInput as exc:
        log.error(f"bad input: {exc}")
        return EXIT_BAD_INPUT
    store = CheckpointStore(inputs.state_dir)
    store.clean_temporaries()
    audit = AuditLog(store.audit_path)
    status = StatusBoard(config.name)
    _stop_on_signals()
    running = _serve(config, status, audit)
    try:
        return _run_agent(config, settings, inputs, store, audit, status)
    except ShutdownRequested:
        log.info("stopped by a signal before the round loop began")
        return EXIT_OK
    finally:
        running.stop()


def _serve(config: AgentConfig, status: StatusBoard, audit: AuditLog) -> RunningServer:
    binding = ServiceBinding(
        agent_pb2_grpc.add_AgentServicer_to_server, AgentServicer(status, audit), "lada.v1.Agent"
    )
    running = start_server("agent", [binding], config.server)
    log.info(
        f"agent service listening on {config.server.host}:{running.port}",
        extra={"port": running.port},
    )
    return running


def _run_agent(
    config: AgentConfig,
    settings: AgentSettings,
    inputs: Inputs,
    store: CheckpointStore,
    audit: AuditLog,
    status: StatusBoard,
) -> int:
    current_round = _RoundSource()
    options = grpc_options(config.server)
    credentials = channel_credentials(config.tls)

    def channel_to(target: str) -> grpc.Channel:
        return audited_channel(target, audit, current_round, credentials, options=options)

    allocator_channel = channel_to(config.allocator)
    watch_channel = channel_to(config.allocator_watch) if config.allocator_watch else None
    llm_channel = channel_to(config.llm)
    try:
        status.update(activity="loading model")
        latest = store.latest_round()
        trainer = LocalTrainer.from_path(
            config.model,
            inputs.loss,
            inputs.private,
            settings.trainer,
            checkpoint=store.round_dir(latest) if latest else None,
        )
        log.info(
            "model loaded",
            extra={
                "params": trainer.base_parameters,
                "lora": trainer.uses_lora,
                "checkpoint_round": latest,
            },
        )
        status.update(activity="connecting")
        wait_ready(allocator_channel, "allocator", config.allocator, config.connect_deadline_s)
        if watch_channel is not None:
            wait_ready(
                watch_channel,
                "allocator (watch)",
                config.allocator_watch,
                config.connect_deadline_s,
            )
        wait_ready(llm_channel, "LLM service", config.llm, config.connect_deadline_s)
        plan = agent_plan(config, settings, inputs, trainer)
        agent = Agent(
            plan,
            trainer,
            GrpcAllocator(allocator_channel, settings.rpc_timeout_s, watch_channel),
            GrpcLLM(llm_channel, settings.llm_timeout_s),
            store,
            status,
        )
        current_round.agent = agent
        _SIGNAL_TARGET["agent"] = agent
        agent.run()
        return EXIT_OK
    except NoRoundLeft as exc:
        log.error(f"no round left for this agent: {exc}")
        return EXIT_NO_ROUND_LEFT
    except Unreachable as exc:
        log.error(f"giving up: {exc}")
        return EXIT_UNREACHABLE
    except ServiceError as exc:
        log.error(f"refused: {exc}")
        return EXIT_REFUSED
    finally:
        allocator_channel.close()
        if watch_channel is not None:
            watch_channel.close()
        llm_channel.close()


def agent_plan(
    config: AgentConfig, settings: AgentSettings, inputs: Inputs, trainer: LocalTrainer
) -> AgentPlan:
    model_type = getattr(getattr(trainer.model, "config", None), "model_type", "causal-lm")
    tokenizer = trainer.tokenizer
    return AgentPlan(
        name=config.name,
        capacity=config.capacity,
        model_description=f"{model_type}, {trainer.base_parameters} parameters"
        + (" (LoRA)" if trainer.uses_lora else ""),
        tokenizer_name=f"{type(tokenizer).__name__} (vocab {len(tokenizer)})",
        pool=inputs.pool,
        pool_fingerprint=inputs.fingerprint,
        private=inputs.private,
        hyper=config.lada,
        contribute=config.contribute,
        allocator_target=config.allocator,
        llm_max_tokens=settings.llm_max_tokens,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        retry_deadline_s=config.connect_deadline_s,
        enrollment_secret=inputs.enrollment_secret,
    )


class _RoundSource:
    """The agent's current round, for audit records of messages without a round field."""

    agent: Agent | None = None

    def __call__(self) -> int:
        return self.agent.current_round if self.agent else 0


class ShutdownRequested(BaseException):
    """SIGTERM/SIGINT arrived while connecting or loading: unwind and exit cleanly. A
    BaseException, like KeyboardInterrupt, so a library's `except Exception` (transformers'
    tokenizer loading turns it into "Can't load tokenizer") cannot swallow it."""


_SIGNAL_TARGET: dict[str, Agent | None] = {"agent": None}


def _stop_on_signals() -> None:
    """SIGTERM/SIGINT: before the loop, unwind at once; in the loop, stop after the current
    step; a second signal exits at once."""
    if threading.current_thread() is not threading.main_thread():
        return
    hits = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        hits["count"] += 1
        log.info("signal received, stopping", extra={"signal": signum})
        agent = _SIGNAL_TARGET["agent"]
        if agent is None:
            raise ShutdownRequested
        if hits["count"] > 1:
            raise KeyboardInterrupt
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
