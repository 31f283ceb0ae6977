"""The round driver: OPEN -> ALLOCATED -> TRAINING -> REPORTED -> CLOSED, one idempotent
step at a time, every step a compare-and-set in Redis. Only the replica holding the
`round_driver` lease steps; a crash anywhere leaves Redis in a state the next step resumes.
"""

from __future__ import annotations

import logging
import threading
import uuid

import numpy as np

from allocator.core import LLM_LEARNER, AllocatorCore
from allocator.folding import (
    ReportArrays,
    accuracy_of,
    decode_known_gaps,
    fold_report,
    parse_stats,
    report_arrays,
    scan_gaps,
    split_scans,
    unlearnable_mask,
)
from allocator.llm_gateway import Contribution, LLMGateway
from allocator.policies import AgentView, AllocationRequest, LearnerState
from allocator.requests import round_requests, weak_samples
from allocator.scans import round_scans
from lada import metrics
from lada.learnability import domain_relevance, novelty_scores, select_novel
from lada.state import AgentRecord, AgentRoundState, Allocation, Phase, now_ms
from llm_service.types import BASE_VERSION

log = logging.getLogger("lada.allocator.driver")

LEASE_NAME = "round_driver"


class RoundDriver:
    """Advances the run; `step()` does at most one transition and is safe to repeat."""

    def __init__(
        self, core: AllocatorCore, llm: LLMGateway | None = None, owner: str | None = None
    ) -> None:
        self.core = core
        self.store = core.store
        self.llm = llm
        self.owner = owner or f"driver-{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the loop --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="round-driver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        tick = self.core.settings.driver_tick_s
        while not self._stop.wait(tick):
            try:
                self.tick()
            except Exception:  # keep driving; the step is retried on the next tick
                log.exception("round driver step failed")

    def tick(self) -> bool:
        """Step if this replica leads; returns whether anything changed."""
        ttl_ms = int(self.core.settings.lease_ttl_s * 1000)
        if not self.store.acquire_lease(LEASE_NAME, self.owner, ttl_ms):
            return False
        return self.step()

    # ---- one step --------------------------------------------------------------------------
    def step(self) -> bool:
        r = self.store.current_round()
        phase = self.store.round_phase(r) if r else Phase.CLOSED
        if phase is Phase.CLOSED:
            return self._open_next(r)
        if phase is Phase.OPEN:
            return self._allocate(r)
        if phase in (Phase.ALLOCATED, Phase.TRAINING):
            return self._maybe_close_reporting(r)
        return self._close(r)

    def _open_next(self, r: int) -> bool:
        total = self.core.total_rounds()
        if total and r >= total:
            if self.store.finish_run(r):
                log.info("run finished", extra={"rounds": r})
                return True
            return False
        if len(self._live(self.store.active_agents(r + 1))) < self.core.config.min_agents:
            return False
        opened = self.store.open_round(r + 1, deadline_ms=0)
        if opened:
            log.info("round opened", extra={"round": r + 1})
        return opened

    def _allocate(self, r: int) -> bool:
        participants = self._live(self.store.active_agents(r))
        request = self.allocation_request(r, participants)
        chosen = self.core.policy.allocate(request)
        requested_idx = self.contribution_requests(r, participants, chosen)
        scans = round_scans(request, chosen, requested_idx)
        version = self._llm_version()
        pool = self.core.pool

        def allocated(i: int, scan_only: bool = False) -> Allocation:
            return Allocation(pool.sample_ids[i], int(pool.clusters[i]), version, scan_only)

        allocations = {
            agent_id: [allocated(i) for i in indices]
            + [allocated(i, scan_only=True) for i in scans.get(agent_id, ())]
            for agent_id, indices in chosen.items()
        }
        requested = {
            agent_id: [pool.sample_ids[i] for i in indices]
            for agent_id, indices in requested_idx.items()
        }
        deadline = self.core.deadline_for_new_round()
        recorded = self.store.record_round_allocations(r, allocations, deadline, requested)
        if recorded:
            total = sum(len(v) for v in chosen.values())
            metrics.SAMPLES_ALLOCATED.labels(self.core.config.policy).inc(total)
            log.info("round allocated", extra={"round": r, "agents": len(allocations)})
        return recorded

    def allocation_request(self, r: int, participants: list[AgentRecord]) -> AllocationRequest:
        """Everything the policy may know, read from Redis."""
        core = self.core
        learners = self.store.learners()
        ids = [a.agent_id for a in participants]
        known = self.store.known_gaps_many(ids)
        views = []
        for agent in sorted(participants, key=lambda a: a.name):  # order-free, like the draws
            idx, gaps, solved = decode_known_gaps(known[agent.agent_id], core.pool)
            learner = LearnerState.from_json(
                learners.get(agent.agent_id), core.pool.num_clusters, core.config.lada
            )
            views.append(
                AgentView(
                    agent.agent_id,
                    agent.capacity,
                    learner,
                    idx,
                    gaps,
                    solved,
                    agent.name,
                    tuple(agent.domain_tags),
                )
            )
        return AllocationRequest(
            round=r,
            pool=core.pool,
            agents=views,
            unlearnable=unlearnable_mask(self.store.llm_accuracy(), core.pool),
            params=core.config.lada,
            seed=core.config.seed,
        )

    def contribution_requests(
        self, r: int, participants: list[AgentRecord], chosen: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Per participant, pool indices of its domains where the LLM is weak (method 2),
        beside this round's allocation and never overlapping it."""
        core = self.core
        params = core.config.lada
        if params.contribution_requests <= 0:
            return {}
        absorbed = self.store.absorbed()
        weak = weak_samples(
            [p.domain for p in core.problems],
            accuracy_of(self.store.llm_accuracy(), core.pool.sample_ids),
            np.array([s in absorbed for s in core.pool.sample_ids], bool),
            params.novelty_max_llm_accuracy,
        )
        return round_requests(
            core.config.seed, r, participants, chosen, weak, params.contribution_requests
        )

    def _llm_version(self) -> str:
        stored = self.store.run_info().get("llm_version")
        if stored:
            return stored
        return self.llm.serving_version() if self.llm is not None else BASE_VERSION

    def _maybe_close_reporting(self, r: int) -> bool:
        record = self.store.get_round(r)
        pending = [
            a
            for a, s in record.agents.items()
            if s in (AgentRoundState.ALLOCATED, AgentRoundState.TRAINING)
        ]
        if pending and now_ms() < record.deadline_ms:
            lost = self._lost(pending)
            if lost and self.store.mark_lost(r, lost):
                log.warning("agents lost", extra={"round": r, "agents": lost})
            if set(pending) - set(lost):
                return bool(lost)
        closed = self.store.close_reporting(r)
        if closed:
            log.info("round reported", extra={"round": r, "unreported": pending})
        return closed

    # ---- liveness ----------------------------------------------------------------------------
    def _silence_limit_ms(self) -> int:
        """How long an agent may go without a heartbeat before it counts as LOST (0: never)."""
        settings = self.core.settings
        return int(settings.lost_after_missed_heartbeats * settings.heartbeat_interval_s * 1000)

    def _live(self, agents: list[AgentRecord]) -> list[AgentRecord]:
        """Agents heartbeating recently enough to take part (all of them without liveness)."""
        limit = self._silence_limit_ms()
        if not limit:
            return agents
        stamp = now_ms()
        return [a for a in agents if stamp - a.last_heartbeat_ms <= limit]

    def _lost(self, agent_ids: list[str]) -> list[str]:
        limit = self._silence_limit_ms()
        if not limit:
            return []
        return self.store.silent_agents(agent_ids, since_ms=now_ms() - limit)

    def _close(self, r: int) -> bool:
        """REPORTED -> CLOSED: fold rewards, run the LLM direction, close."""
        self.fold(r)
        if self.llm is not None and self.store.absorbed_round() < r:
            self.absorb(r)
        closed = self.store.transition(r, Phase.CLOSED)
        if closed:
            log.info("round closed", extra={"round": r})
        total = self.core.total_rounds()
        if total and r >= total:
            self.store.finish_run(r)
        return closed

    # ---- folding -----------------------------------------------------------------------------
    def fold(self, r: int) -> bool:
        """Fold every reporting agent's statistics into its arms, band and gaps, once."""
        if self.store.folded_round() >= r:
            return False
        core = self.core
        record = self.store.get_round(r)
        stored = self.store.learners()
        learners: dict[str, object] = {}
        gaps: dict[str, dict[str, str]] = {}
        llm_acc: dict[str, str] = {}
        reporters = [a for a, s in record.agents.items() if s is AgentRoundState.REPORTED]
        # every reporter's statistics and known gaps in two round trips, not two per agent
        reported = self.store.get_stats_many(r, reporters)
        known_gaps = self.store.known_gaps_many(reporters)
        tags = self._foreign_tags()
        for agent_id in reporters:
            stats, scanned = split_scans(parse_stats(reported[agent_id]))
            if not stats:
                continue
            _, known, _ = decode_known_gaps(known_gaps[agent_id], core.pool)
            learner = LearnerState.from_json(
                stored.get(agent_id), core.pool.num_clusters, core.config.lada
            )
            arrays = report_arrays(stats)
            relevance = None if tags is None else self._relevance(arrays, tags.get(agent_id, ()))
            result = fold_report(learner, known, arrays, core.pool, core.config.lada, relevance)
            learners[agent_id] = result.learner.to_json()
            gaps[agent_id] = result.gaps
            llm_acc.update(result.llm_acc)
            if scanned:
                scan_gap, scan_acc = scan_gaps(report_arrays(scanned))
                gaps[agent_id] = {**scan_gap, **result.gaps}
                llm_acc.update({**scan_acc, **result.llm_acc})
        folded = self.store.fold_round(r, learners, gaps, llm_acc)
        if folded:
            log.info("round folded", extra={"round": r, "agents": len(learners)})
        return folded

    def _foreign_tags(self) -> dict[str, tuple[str, ...]] | None:
        """Each agent's registered domains where `lada.foreign_reward_scale` weighs rewards;
        None at the method's scale of 1, so a default fold reads no registrations."""
        if self.core.config.lada.foreign_reward_scale == 1.0:
            return None
        return {a.agent_id: tuple(a.domain_tags) for a in self.store.list_agents()}

    def _relevance(self, report: ReportArrays, domain_tags: tuple[str, ...]) -> np.ndarray:
        """Each reported sample's reward weight for an agent of these domains (method 1.4)."""
        domains = [self.core.by_id[s].domain for s in report.sample_ids]
        return domain_relevance(domains, domain_tags, self.core.config.lada.foreign_reward_scale)

    # ---- the LLM direction ---------------------------------------------------------------------
    def absorb(self, r: int) -> int:
        """Select the most novel contributions (method 2), have the LLM absorb them, and credit
        the LLM's per-cluster gain on them to its own arms. Returns how many were absorbed."""
        assert self.llm is not None
        core = self.core
        candidates = [Contribution(a, s, t) for a, s, t in self.store.contributions(r)]
        learner = core.learner(LLM_LEARNER)
        if not candidates:
            self.store.record_absorption(r, [], learner.to_json(), "")
            return 0
        sample_ids = [c.sample_id for c in candidates]
        accuracy = self._llm_accuracy(sorted(set(sample_ids)))
        before = np.array([self.llm.score(c.sample_id, [c.text])[0] for c in candidates])
        sampled = np.array([accuracy.get(s, np.nan) for s in sample_ids])
        threshold = core.config.lada.novelty_max_llm_accuracy
        novelty = novelty_scores(
            before, sampled, threshold, self._greedy_right(sample_ids, sampled < threshold)
        )
        chosen = select_novel(
            sample_ids, novelty, self.store.absorbed(), core.config.lada.llm_budget
        )
        if chosen.size == 0:
            self.store.record_absorption(r, [], learner.to_json(), "")
            return 0
        selected = [candidates[i] for i in chosen]
        version = self.llm.absorb(selected)
        after = np.array([self.llm.score(c.sample_id, [c.text], version)[0] for c in selected])
        clusters = np.array([core.pool.clusters[core.pool.index_of[c.sample_id]] for c in selected])
        size = core.pool.num_clusters
        learner = LearnerState(
            learner.reward_sum
            + np.bincount(clusters, weights=after - before[chosen], minlength=size),
            learner.pulls + np.bincount(clusters, minlength=size),
            learner.band_low,
            learner.band_high,
        )
        self.store.record_absorption(r, [c.sample_id for c in selected], learner.to_json(), version)
        log.info("llm absorbed", extra={"round": r, "samples": len(selected), "version": version})
        return len(selected)

    def _greedy_right(self, sample_ids: list[str], weak: np.ndarray) -> np.ndarray | None:
        """Whether the base LLM answers each sample right greedily, asked only for the
        samples its sampled accuracy calls weak (None when `novelty_greedy_check` is off).

        The base, not the serving version: once a version's gate sends a domain to its
        adapter, that adapter's errors there would count as novel and be absorbed, and the
        next gate would send the domain there all the more (docs/results.md, S1 seed 1)."""
        assert self.llm is not None
        if not self.core.config.lada.novelty_greedy_check:
            return None
        asked = sorted({s for s, w in zip(sample_ids, weak, strict=True) if w})
        greedy = self.llm.accuracy(asked, 1, 0.0, BASE_VERSION) if asked else {}
        return accuracy_of(greedy, sample_ids) == 1.0

    def _llm_accuracy(self, sample_ids: list[str]) -> dict[str, float]:
        """Reported LLM accuracy, asking the LLM service for samples no agent reported on."""
        assert self.llm is not None
        known = self.store.llm_accuracy()
        missing = [s for s in sample_ids if s not in known]
        if missing:
            params = self.core.config.lada
            known = {
                **known,
                **self.llm.accuracy(missing, params.paths_per_sample, params.path_temperature),
            }
        values = accuracy_of(known, sample_ids)
        return dict(zip(sample_ids, values.tolist(), strict=True))
