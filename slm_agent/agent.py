"""The agent's round loop: register or resume, follow rounds, work each one, report, checkpoint.

It talks to the allocator and the LLM service only through `AllocatorPort` / `LLMPort`
(slm_agent.clients), trains through `LocalTrainer`, and persists through
`CheckpointStore`, so the same loop runs over gRPC or in-process.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from lada.config import HEARTBEAT_INTERVAL_S, LadaHyperParams
from lada.learnability import assign_clusters, domain_weights
from lada.tasks import Problem
from slm_agent.checkpoint import CheckpointStore, Identity, Progress
from slm_agent.ports import (
    AllocatorPort,
    LLMPort,
    Registration,
    RoundEventView,
    RoundGone,
    RunOver,
    ServiceError,
    StreamEnded,
    Unavailable,
    with_retries,
)
from slm_agent.rounds import RoundOutcome, run_round
from slm_agent.trainer import LocalTrainer

log = logging.getLogger("lada.agent")
T = TypeVar("T")

WORK_PHASES = {"ALLOCATED", "TRAINING"}
LATE_PHASES = {"REPORTED", "CLOSED"}
RESUBSCRIBE_PAUSE_S = 1.0
DOMAIN_TAG_MIN_SHARE = 0.2  # a domain is one of the agent's when it holds this much of D_k


@dataclass
class AgentStatusView:
    """What GetAgentStatus shows; updated by the loop, read by the servicer."""

    agent_id: str = ""
    name: str = ""
    last_reported_round: int = 0
    activity: str = "starting"
    last_accuracy: float = 0.0


class StatusBoard:
    """Thread-safe holder of the agent's status."""

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        self._view = AgentStatusView(name=name)

    def update(self, **changes: object) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._view, key, value)

    def snapshot(self) -> AgentStatusView:
        with self._lock:
            return AgentStatusView(**vars(self._view))


@dataclass
class AgentPlan:
    """Who the agent is and how it works, independent of transport."""

    name: str
    capacity: int
    model_description: str
    tokenizer_name: str
    pool: dict[str, Problem]
    pool_fingerprint: str
    private: Sequence[Problem]
    hyper: LadaHyperParams = field(default_factory=LadaHyperParams)
    contribute: bool = False
    allocator_target: str = ""
    llm_max_tokens: int = 128
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    retry_deadline_s: float = 60.0
    enrollment_secret: str = ""  # the invitation's; empty: saved or self-chosen (open enrollment)

    @property
    def domain_tags(self) -> list[str]:
        return domain_tags(self.private)


def domain_tags(private: Sequence[Problem]) -> list[str]:
    """Domains holding at least DOMAIN_TAG_MIN_SHARE of the private data, largest first."""
    counts = Counter(p.domain for p in private)
    total = max(sum(counts.values()), 1)
    tags = [d for d, c in counts.most_common() if c / total >= DOMAIN_TAG_MIN_SHARE]
    return tags or [d for d, _ in counts.most_common(1)]


class NoRoundLeft(Exception):
    """The run ended (or will end) before this agent's first round."""


class Agent:
    """The loop; `run()` returns when the run is finished or `stop()` is called, and raises
    NoRoundLeft when the agent joined a run with no round left for it."""

    def __init__(
        self,
        plan: AgentPlan,
        trainer: LocalTrainer,
        allocator: AllocatorPort,
        llm: LLMPort,
        store: CheckpointStore,
        status: StatusBoard | None = None,
    ) -> None:
        self.plan = plan
        self.trainer = trainer
        self.allocator = allocator
        self.llm = llm
        self.store = store
        self.status = status or StatusBoard(plan.name)
        self.progress: Progress = store.load_progress()
        self.identity: Identity | None = None
        self.current_round = 0
        self._stop = threading.Event()
        self._cluster_weights: np.ndarray | None = None
        self._jitter = random.Random()  # unseeded: agents must not pick the same moment

    # ---- lifecycle -----------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self.allocator.stop_watching()

    def run(self) -> None:
        """Register or resume, then work every round until the run finishes."""
        self.identity = self.ensure_identity()
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heartbeat.start()
        try:
            self._follow_rounds()
        finally:
            self._stop.set()
            self.status.update(activity="stopped")

    def ensure_identity(self) -> Identity:
        """The saved identity when there is one for this allocator and pool, else register."""
        saved = self.store.load_identity()
        if (
            saved
            and saved.name == self.plan.name
            and saved.pool_fingerprint == self.plan.pool_fingerprint
        ):
            log.info(
                "resuming identity",
                extra={"agent_id": saved.agent_id, "progress": vars(self.progress)},
            )
            identity = saved
        else:
            identity = self._register()
        self.allocator.use_identity(identity.agent_id, identity.token)
        self.status.update(
            agent_id=identity.agent_id,
            last_reported_round=self.progress.last_reported_round,
            last_accuracy=self.progress.last_accuracy,
        )
        return identity

    def _register(self) -> Identity:
        """Register with the enrollment secret, saved first: a retry (lost reply) or a
        restart after a crash mid-call presents the same secret and gets the same agent."""
        name = self.plan.name
        secret = (
            self.plan.enrollment_secret
            or self.store.load_enrollment(name)
            or secrets.token_urlsafe(24)
        )
        self.store.save_enrollment(name, secret)
        registration = Registration(
            name=name,
            model_description=self.plan.model_description,
            tokenizer_name=self.plan.tokenizer_name,
            domain_tags=self.plan.domain_tags,
            capacity=self.plan.capacity,
            pool_fingerprint=self.plan.pool_fingerprint,
            enrollment_secret=secret,
        )
        self.status.update(activity="registering")
        try:
            registered = with_retries(
                lambda: self.allocator.register(registration),
                "RegisterAgent",
                self.plan.retry_deadline_s,
            )
        except RunOver as exc:
            raise NoRoundLeft(exc.details) from exc
        identity = Identity(
            registered.agent_id,
            registered.token,
            self.plan.name,
            registered.first_round,
            self.plan.allocator_target,
            self.plan.pool_fingerprint,
        )
        self.store.save_identity(identity)
        log.info(
            "registered",
            extra={
                "agent_id": identity.agent_id,
                "first_round": identity.first_round,
                "resumed": registered.resumed,
            },
        )
        return identity

    # ---- following rounds ----------------------------------------------------------
    def _follow_rounds(self) -> None:
        """Consume WatchRounds; when the stream breaks, wait for the allocator and resubscribe."""
        while not self._stop.is_set():
            self.status.update(activity="waiting")
            try:
                for event in self.allocator.watch_rounds(self._next_round()):
                    if self._handle(event) or self._stop.is_set():
                        return
            except (Unavailable, StreamEnded) as exc:
                if self._stop.is_set():
                    return
                log.warning(f"round stream lost ({exc.code}); reconnecting")
            if self._stop.wait(RESUBSCRIBE_PAUSE_S):
                return
            with_retries(self.allocator.heartbeat, "Heartbeat", self.plan.retry_deadline_s)

    def _next_round(self) -> int:
        first = self.identity.first_round if self.identity else 1
        return max(first, self.progress.last_reported_round + 1, 1)

    def _handle(self, event: RoundEventView) -> bool:
        """Act on one event; True when the run is over."""
        self.current_round = max(self.current_round, event.round)
        first = self.identity.first_round if self.identity else 1
        done = (
            event.round <= self.progress.last_reported_round
            or event.round in self.progress.skipped()
        )
        if event.round >= first and not done:
            if event.phase in WORK_PHASES:
                if self._stop.wait(self._fetch_delay_s(event)):
                    return True
                self.work_round(event.round)
            elif event.phase in LATE_PHASES:
                self._mark_skipped(
                    event.round, f"round reached {event.phase} before the agent worked it"
                )
        if event.run_finished and event.round < first:
            raise NoRoundLeft(
                f"the run finished at round {event.round}, before this agent's first round "
                f"{first} (an operator can extend a running federation: lada run extend)"
            )
        if event.run_finished:
            log.info(
                "run finished", extra={"last_reported_round": self.progress.last_reported_round}
            )
            return True
        return False

    # ---- one round -----------------------------------------------------------------
    def work_round(self, round_number: int) -> None:
        """Train (or reload a trained-but-unreported round), contribute, report."""
        if self.progress.last_trained_round >= round_number:
            outcome = self.store.load_outcome(round_number)
            log.info(
                "round already trained before a restart; reporting it",
                extra={"round": round_number},
            )
        else:
            outcome = self._train(round_number)
            if outcome is None:
                return
        if self.plan.contribute and outcome.contributions:
            self._contribute(outcome)  # before reporting: the round takes them until it closes
        self._report(outcome)

    def _train(self, round_number: int) -> RoundOutcome | None:
        self.status.update(activity=f"fetching round {round_number}")
        try:
            allocation = self._retry(
                lambda: self.allocator.get_allocation(round_number), "GetAllocation"
            )
        except RoundGone as exc:
            self._mark_skipped(round_number, f"no allocation: {exc}")
            return None
        paths = self._retry(
            lambda: self.llm.reasoning_paths(
                allocation.samples,
                self.plan.hyper.paths_per_sample,
                self.plan.hyper.path_temperature,
                self.plan.llm_max_tokens,
            ),
            "GenerateReasoningPaths",
        )
        self.status.update(activity=f"training round {round_number}")
        outcome = run_round(
            self.trainer,
            round_number,
            allocation.samples,
            self.plan.pool,
            paths,
            self._domain_weights(),
            set(self.plan.domain_tags) if self.plan.contribute else None,
            allocation.contribution_requests,
        )
        self.store.save_round(outcome, self.trainer.save)
        self.progress.last_trained_round = round_number
        self.store.save_progress(self.progress)
        log.info("round trained", extra=outcome.summary())
        return outcome

    def _report(self, outcome: RoundOutcome) -> None:
        self.status.update(activity=f"reporting round {outcome.round}")
        try:
            accepted, duplicates = self._retry(
                lambda: self.allocator.report_stats(outcome.round, outcome.stats), "ReportStats"
            )
        except RoundGone as exc:
            self._mark_skipped(outcome.round, f"report refused: {exc}")
            return
        self.progress.last_reported_round = outcome.round
        self.progress.last_accuracy = outcome.accuracy_after
        self.store.save_progress(self.progress)
        self.status.update(last_reported_round=outcome.round, last_accuracy=outcome.accuracy_after)
        log.info(
            "round reported",
            extra={"round": outcome.round, "accepted": accepted, "duplicates": duplicates},
        )

    def _contribute(self, outcome: RoundOutcome) -> None:
        if self.progress.last_contributed_round >= outcome.round:
            return
        try:
            accepted, rejected = self._retry(
                lambda: self.allocator.contribute(outcome.round, outcome.contributions),
                "ContributePaths",
            )
        except ServiceError as exc:
            log.warning("contribution refused", extra={"round": outcome.round, "why": str(exc)})
            return
        self.progress.last_contributed_round = outcome.round
        self.store.save_progress(self.progress)
        log.info(
            "paths contributed",
            extra={"round": outcome.round, "accepted": accepted, "rejected": rejected},
        )

    def _fetch_delay_s(self, event: RoundEventView) -> float:
        """A random moment within the allocator's fetch window, so N agents do not all
        fetch (and then ask the LLM service for paths) at the same instant."""
        return self._jitter.uniform(0.0, event.fetch_window_ms / 1000.0)

    def _mark_skipped(self, round_number: int, why: str) -> None:
        skipped = self.progress.skipped()
        if round_number not in skipped:
            self.progress.skipped_rounds = [*skipped, round_number]
            self.store.save_progress(self.progress)
        log.warning(f"skipping round {round_number}: {why}", extra={"round": round_number})

    def _domain_weights(self) -> np.ndarray | None:
        """w_k(c) per cluster from the private cluster histogram (computed locally)."""
        if self._cluster_weights is not None:
            return self._cluster_weights
        try:
            model = self._retry(self.allocator.cluster_model, "GetClusterModel")
        except ServiceError as exc:
            log.warning("no cluster model; domain weights are 1", extra={"why": str(exc)})
            return None
        if model is None:
            return None
        private = self.plan.private
        clusters = assign_clusters(
            model, [p.question for p in private], [p.domain for p in private]
        )
        counts = np.bincount(clusters, minlength=model.num_clusters)
        hyper = self.plan.hyper
        self._cluster_weights = domain_weights(
            counts, model.pool_share, hyper.domain_weight_min, hyper.domain_weight_max
        )
        log.info("domain weights", extra={"weights": np.round(self._cluster_weights, 3).tolist()})
        return self._cluster_weights

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return with_retries(call, what, self.plan.retry_deadline_s)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.plan.heartbeat_interval_s):
            try:
                self.allocator.heartbeat()
            except ServiceError as exc:
                log.warning("heartbeat failed", extra={"code": exc.code})
