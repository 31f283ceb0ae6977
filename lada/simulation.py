"""One federation in one process: the same round driver, policies and agent training code
as the services, with in-process ports instead of gRPC and the transformers LLM backend
instead of vLLM (like a federated-learning simulation engine).

`simulate(config, workdir, redis, models)` runs a `ClusterConfig` and returns the same
metrics shape as `lada up`, so one report writer and one comparison serve both modes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator.client import WATCHED_PHASES
from allocator.core import AllocatorCore
from allocator.driver import RoundDriver
from allocator.llm_gateway import ACCURACY_MAX_TOKENS, Contribution, LLMGateway
from lada.config import (
    AllocatorSettings,
    ClusterAgentConfig,
    ClusterConfig,
    LLMServiceConfig,
    LLMServiceExtras,
    agent_for_cluster,
    allocator_for_cluster,
)
from lada.learnability import ClusterModel
from lada.phases import PhaseTimes
from lada.redis_conn import RedisHandle
from lada.report import LLM_EVAL_MAX_TOKENS, llm_accuracy_of, run_metrics, share_by_domain
from lada.state import Phase, StateStore
from lada.tasks import Problem, format_prompt, load_dataset
from llm_service.core import LLMCore
from llm_service.types import BASE_VERSION, Sampling
from llm_service.types import Contribution as LLMContribution
from slm_agent.agent import Agent, StatusBoard
from slm_agent.checkpoint import CheckpointStore
from slm_agent.clients import _report_messages
from slm_agent.main import agent_plan, validate_inputs
from slm_agent.ports import Registered, Registration, RoundEventView
from slm_agent.rounds import (
    AllocatedSample,
    LLMPath,
    RoundAllocation,
    SampleStat,
    ids_by_version,
)
from slm_agent.settings import agent_settings
from slm_agent.trainer import LocalTrainer

log = logging.getLogger("lada.simulation")

AGENT_ROUNDS_PHASE = "agents' rounds, the rest"  # what the agent's own steps leave
LLM_PATHS_PHASE = "LLM paths for the agents"  # timed inside the agents' rounds, not twice


class InProcessAllocator:
    """The agent's AllocatorPort over an AllocatorCore (no gRPC, same core calls)."""

    def __init__(self, core: AllocatorCore) -> None:
        self.core = core
        self.agent_id = ""

    def register(self, registration: Registration) -> Registered:
        enrollment = self.core.register(
            registration.name,
            registration.model_description,
            registration.tokenizer_name,
            registration.domain_tags,
            registration.capacity,
            registration.pool_fingerprint,
            registration.enrollment_secret,
        )
        record = enrollment.record
        return Registered(record.agent_id, enrollment.token, record.first_round, enrollment.resumed)

    def use_identity(self, agent_id: str, token: str) -> None:
        self.core.authorize(token, agent_id)
        self.agent_id = agent_id

    def heartbeat(self) -> int:
        return self.core.heartbeat(self.agent_id)[0]

    def watch_rounds(
        self, from_round: int, phases: Sequence[str] = WATCHED_PHASES
    ) -> Iterator[RoundEventView]:
        raise NotImplementedError("the simulation drives rounds itself")

    def stop_watching(self) -> None:
        return None

    def get_allocation(self, round_number: int) -> RoundAllocation:
        view = self.core.allocation(self.agent_id, round_number)
        return RoundAllocation(
            [AllocatedSample(a.sample_id, a.cluster, a.version, a.scan_only) for a in view.samples],
            view.contribution_requests,
        )

    def report_stats(self, round_number: int, stats: Sequence[SampleStat]) -> tuple[int, int]:
        messages = _report_messages(self.agent_id, round_number, stats)
        flat = [s for message in messages for s in message.stats]
        outcome = self.core.report(self.agent_id, round_number, flat)
        return outcome.accepted, outcome.duplicates

    def contribute(self, round_number: int, paths: dict[str, str]) -> tuple[int, int]:
        outcome = self.core.contribute(self.agent_id, round_number, list(paths.items()))
        return outcome.accepted, len(paths) - outcome.accepted

    def cluster_model(self) -> ClusterModel | None:
        return self.core.cluster_model


class InProcessLLM:
    """The agent's LLMPort over an LLMCore, with the service's default sampling seed."""

    def __init__(self, core: LLMCore, times: PhaseTimes | None = None) -> None:
        self.core = core
        self.times = times or PhaseTimes()

    def reasoning_paths(
        self, samples: Sequence[AllocatedSample], n: int, temperature: float, max_tokens: int
    ) -> dict[str, list[LLMPath]]:
        sampling = Sampling(n=n, temperature=temperature, max_tokens=max_tokens)
        out: dict[str, list[LLMPath]] = {}
        with self.times.phase(LLM_PATHS_PHASE, within=AGENT_ROUNDS_PHASE):
            for version, ids in ids_by_version(samples).items():
                for sample in self.core.generate(ids, [], sampling, version).results:
                    out[sample.sample_id] = [
                        LLMPath(p.text, p.normalized_logprob, p.correct) for p in sample.paths
                    ]
        return out


class InProcessLLMGateway(LLMGateway):
    """The round driver's LLM direction (score, accuracy, absorb) over an LLMCore."""

    def __init__(self, core: LLMCore) -> None:
        self.core = core

    def serving_version(self) -> str:
        return self.core.serving_version

    def score(self, sample_id: str, completions: Sequence[str], version: str = "") -> list[float]:
        result = self.core.score("", completions, sample_id=sample_id, model_version=version)
        return [s.normalized_logprob for s in result.scores]

    def accuracy(
        self, sample_ids: Sequence[str], paths: int, temperature: float, version: str = ""
    ) -> dict[str, str]:
        sampling = Sampling(n=paths, temperature=temperature, max_tokens=ACCURACY_MAX_TOKENS)
        return {
            r.sample_id: f"{sum(p.correct for p in r.paths)}/{len(r.paths)}"
            for r in self.core.generate(sample_ids, [], sampling, version).results
            if r.paths
        }

    def absorb(self, contributions: Sequence[Contribution]) -> str:
        absorbed = [LLMContribution(c.sample_id, c.text, c.agent_id) for c in contributions]
        return self.core.absorb(absorbed).version


@dataclass
class SimulatedRun:
    """The pieces of a simulated federation, for callers that want to look inside."""

    store: StateStore
    core: AllocatorCore
    driver: RoundDriver
    agents: dict[str, Agent]
    llm: LLMCore


def drive_until(
    driver: RoundDriver,
    store: StateStore,
    round_number: int,
    phases: set[Phase],
    max_steps: int = 20,
) -> None:
    """Step the round driver until round r is in one of `phases`."""
    for _ in range(max_steps):
        if store.current_round() == round_number and store.round_phase(round_number) in phases:
            return
        if not driver.step():
            break
    phase = store.round_phase(round_number)
    if phase not in phases:
        raise RuntimeError(f"round {round_number} stuck in {phase} (wanted {sorted(phases)})")


def run_rounds(run: SimulatedRun, rounds: int, times: PhaseTimes | None = None) -> None:
    """Each round: allocate, let every agent work it in turn, close and fold."""
    times = times or PhaseTimes()
    for round_number in range(1, rounds + 1):
        with times.phase("allocate (policy)"):
            drive_until(run.driver, run.store, round_number, {Phase.ALLOCATED})
        for name, agent in run.agents.items():
            log.info("agent works round", extra={"agent": name, "round": round_number})
            with times.phase(AGENT_ROUNDS_PHASE):
                agent.work_round(round_number)
            times.add_all(_agent_steps(agent, round_number), within=AGENT_ROUNDS_PHASE)
        with times.phase("close (fold, LLM absorb)"):
            drive_until(run.driver, run.store, round_number, {Phase.CLOSED})


def _agent_steps(agent: Agent, round_number: int) -> dict[str, float]:
    """The agent's own wall seconds per step of a round it trained (from its checkpoint)."""
    if agent.progress.last_trained_round < round_number:
        return {}
    outcome = agent.store.load_outcome(round_number)
    return {f"agent: {step}": seconds for step, seconds in outcome.seconds.items()}


def build_llm(model: Path, public_pool: str, state_dir: Path, path_cache_url: str = "") -> LLMCore:
    """The LLM service's core on the transformers backend (vLLM is for the cluster);
    `path_cache_url`: a Redis its generated paths are shared through ("": this run only)."""
    from llm_service.main import build_core

    config = LLMServiceConfig(
        model=str(model), backend="transformers", public_pool=public_pool, redis_url=path_cache_url
    )
    extras = dataclasses.replace(LLMServiceExtras.from_env(), state_dir=str(state_dir))
    return build_core(config, extras)


def build_agent(
    agent: ClusterAgentConfig,
    cluster: ClusterConfig,
    model: Path,
    private_data: str,
    public_pool: str,
    state_dir: Path,
    allocator: InProcessAllocator,
    llm: InProcessLLM,
) -> Agent:
    """An agent exactly as `lada agent run` builds it, wired to in-process ports, with an
    invitation the in-process allocator issued for it."""
    config = agent_for_cluster(
        cluster, agent, str(model), private_data, public_pool, str(state_dir)
    )
    _, config.enrollment_secret, _ = allocator.core.invite(agent.name, 0)
    settings = agent_settings(config)
    inputs = validate_inputs(config, settings)
    store = CheckpointStore(inputs.state_dir)
    trainer = LocalTrainer.from_path(config.model, inputs.loss, inputs.private, settings.trainer)
    built = Agent(
        agent_plan(config, settings, inputs, trainer),
        trainer,
        allocator,
        llm,
        store,
        StatusBoard(agent.name),
    )
    built.ensure_identity()
    return built


def core_answers(llm: LLMCore) -> Callable[[list[str], str], list[str]]:
    """Greedy answers of one LLM version to raw prompts, for `llm_accuracy_of`."""
    sampling = Sampling(n=1, temperature=0.0, max_tokens=LLM_EVAL_MAX_TOKENS)

    def answers(prompts: list[str], version: str) -> list[str]:
        return [r.paths[0].text for r in llm.generate([], prompts, sampling, version).results]

    return answers


def adapter_share(llm: LLMCore, version: str, problems: Sequence[Problem]) -> dict[str, float]:
    """Per domain, the share of test prompts `version`'s adapter answers (the rest: the
    base model, where its gate keeps them from the adapter; llm_service/gate.py)."""
    routed = llm.routes([format_prompt(p.question) for p in problems], version)
    return share_by_domain(problems, [answering != BASE_VERSION for answering in routed])


def path_cache_counts(llm: LLMCore) -> dict[str, int]:
    """How the LLM's generations were served: from the shared cache, or generated."""
    shared = llm.shared
    return {
        "shared_hits": shared.hits if shared else 0,
        "shared_misses": shared.misses if shared else 0,
        "generate_calls": llm.generate_calls,
    }


def simulate(
    config: ClusterConfig,
    workdir: Path,
    redis: RedisHandle,
    models: dict[str, Path],
    times: PhaseTimes | None = None,
    path_cache_url: str = "",
) -> dict[str, Any]:
    """Run a whole federation in this process; returns the run's metrics, with the wall
    seconds of each phase under `phase_seconds` (summed into `times` when given).
    `path_cache_url`: a Redis the LLM shares generated paths through, beyond this run."""

    times = times or PhaseTimes()
    started = time.monotonic()
    with times.phase("set up (data, models)"):
        run, tests = _set_up(config, workdir, redis, models, times, path_cache_url)
    try:
        run_rounds(run, config.rounds, times)
        with times.phase("LLM evaluation"):
            problems = [p for spec in tests for p in load_dataset(spec)]
            versions = [BASE_VERSION, run.llm.serving_version]
            accuracy = llm_accuracy_of(core_answers(run.llm), versions, problems)
        metrics = run_metrics(config, run.store, "simulation", started, accuracy, run.core.problems)
        metrics["llm_path_cache"] = path_cache_counts(run.llm)
        metrics["llm_adapter_share"] = adapter_share(run.llm, versions[-1], problems)
    finally:
        run.llm.close()
    metrics["phase_seconds"] = times.rounded()
    return metrics


def _set_up(
    config: ClusterConfig,
    workdir: Path,
    redis: RedisHandle,
    models: dict[str, Path],
    times: PhaseTimes,
    path_cache_url: str,
) -> tuple[SimulatedRun, list[str]]:
    """The federation's data, allocator, LLM and agents; and its test sets' specs."""
    from lada.cluster import carve_data

    data = carve_data(config, workdir / "data")
    run_id = f"sim-{config.run_id}-{int(time.time() * 1000)}"
    store = StateStore(redis.client, run_id)
    core = AllocatorCore(
        store,
        allocator_for_cluster(config, run_id, data.public),
        load_dataset(data.public),
        AllocatorSettings(lost_after_missed_heartbeats=0),  # in-process agents never heartbeat
    )
    llm = build_llm(models[config.llm_model], data.public, workdir / "llm", path_cache_url)
    agents = {
        agent.name: build_agent(
            agent,
            config,
            models[agent.model],
            data.private[agent.name],
            data.public,
            workdir / "agents" / agent.name,
            InProcessAllocator(core),
            InProcessLLM(llm, times),
        )
        for agent in config.agents
    }
    run = SimulatedRun(store, core, RoundDriver(core, InProcessLLMGateway(llm)), agents, llm)
    return run, list(data.test.values())
