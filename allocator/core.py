"""The allocator's logic without gRPC: registry, authentication, allocations, reports,
contributions and operator queries. All state lives in Redis through `StateStore`; what this
object holds (the pool, its clustering) is derived from the config and Redis, so any number
of replicas, or a restarted process, see the same allocator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from allocator.clustering import (
    fit_cluster_model,
    model_from_json,
    model_to_json,
)
from allocator.folding import accuracy_of, decode_known_gaps
from allocator.policies import LearnerState, PolicyContext, PoolIndex, make_policy
from lada.config import AllocatorConfig, AllocatorSettings
from lada.learnability import ClusterModel, band_gap_bounds, ucb_scores
from lada.state import (
    AgentRecord,
    AgentRoundState,
    AgentStatus,
    Allocation,
    AllocationRead,
    Conflict,
    Enrollment,
    InvalidArgument,
    InvitationRecord,
    InvitationState,
    NotFound,
    PermissionDenied,
    Phase,
    ReportOutcome,
    StateStore,
    Unauthenticated,
    now_ms,
)
from lada.tasks import Problem, is_correct, is_sound, pool_fingerprint
from lada.v1 import allocator_pb2

CLUSTER_BLOB = "clusters"
LLM_LEARNER = "llm"
MAX_NAME_CHARS = 128
MAX_INVITATION_S = 366 * 86_400  # an invitation lives at most a year

__all__ = ["AllocatorCore", "InvalidArgument"]

log = logging.getLogger("lada.allocator.core")


@dataclass
class AllocationView:
    round: int
    samples: list[Allocation]
    deadline_ms: int
    policy: str
    contribution_requests: list[str] = field(default_factory=list)  # sample IDs (method 2)


@dataclass
class ContributionOutcome:
    """What ContributePaths did with one request's paths."""

    accepted: int = 0
    rejected_incorrect: int = 0
    rejected_unsound: int = 0
    rejected_over_cap: int = 0


@dataclass(frozen=True)
class RoundEventView:
    """One round event as a watcher gets it. Frozen: one object per event (and run length)
    is shared by every subscriber, and the servicer keys its one message per event on it."""

    round: int
    phase: Phase
    ts_ms: int
    finished: bool
    total_rounds: int = 0  # the run's length when the event is delivered
    fetch_window_ms: int = 0  # ALLOCATED: agents spread their fetches over this long


# An async subscriber: its loop, the event it waits on, the phases it wants (None: all).
_AsyncWaiter = tuple[asyncio.AbstractEventLoop, asyncio.Event, "frozenset[Phase] | None"]

# A subscriber sleeps until an event or `wake()` (its RPC ended); this timeout is only a
# safety net. Waking each watcher every second cost 1,000 thread wake-ups/s at 1,000 agents.
IDLE_WAKE_S = 30.0
# Async subscribers of one event loop are woken this many at a time, one batch per pass of
# the loop, so that RPCs arriving during a fan-out wait for a batch, not for every watcher
# (docs/bench/load.md, "Follow-up (2026-12-02): round-event fan-out").
WAKE_BATCH = 32


class RoundEventFeed:
    """One reader of the round-event stream per process, shared by every WatchRounds.

    Each subscriber used to block in its own XREAD: one Redis connection per watching agent
    (redis-py's pool holds 100, so past ~90 agents every RPC failed with "Too many
    connections") and one wake-up per agent per `block_ms`. Now one thread reads the stream
    and wakes the subscribers when it grows or a watcher's RPC ends; it stops when the last
    subscriber leaves. Subscribers are threads (`subscribe`, the threaded server) or
    coroutines (`subscribe_async`, the aio server: no thread per watcher). A subscriber may
    ask for some phases only; an async one is then not even woken for the others.
    """

    def __init__(
        self,
        store: StateStore,
        block_ms: int,
        total_rounds: Callable[[], int],
        fetch_window_ms: Callable[[int], int],
    ) -> None:
        self._store = store
        self._block_s = block_ms / 1000.0
        self._total_rounds = total_rounds
        self._fetch_window_ms = fetch_window_ms
        self.total = 0  # the run's length, re-read by the reader at least every block_ms
        self._events: list[RoundEventView] = []
        # index in _events -> that event as delivered (the run's length stamped): one object
        # per event shared by every subscriber, re-stamped only when the length changes
        self._stamped: dict[int, RoundEventView] = {}
        self._after = "0-0"
        self._changed = threading.Condition()
        self._subscribers = 0
        self._reader: threading.Thread | None = None
        # subscribe_async's subscribers: each waits on an asyncio.Event of its loop, woken for
        # the phases it asked for (None: every phase)
        self._async_waiters: dict[
            asyncio.AbstractEventLoop, dict[asyncio.Event, frozenset[Phase] | None]
        ] = {}

    def subscribe(
        self,
        first: int,
        cancelled: Callable[[], bool],
        phases: frozenset[Phase] | None = None,
    ) -> Iterator[RoundEventView]:
        """Events of round >= `first` (and the run's end) from the stream's start on, of
        `phases` only when given (the run's end always)."""
        self._join()
        try:
            seen = 0
            while not cancelled():
                with self._changed:
                    # `cancelled` under the lock: a wake() just before the wait is not lost
                    if seen >= len(self._events) and not cancelled():
                        self._changed.wait(IDLE_WAKE_S)
                    fresh = self._events[seen:]
                due, finished = self._due(seen, fresh, first, phases)
                seen += len(fresh)
                yield from due
                if finished:
                    return
        finally:
            self._leave()

    async def subscribe_async(
        self, first: int, phases: frozenset[Phase] | None = None
    ) -> AsyncIterator[RoundEventView]:
        """`subscribe` for a coroutine: waits on the event loop, not in a thread, for the
        reader to call it back (loop.call_soon_threadsafe) when an event of `phases` (or the
        run's end) arrives; a subscriber whose task is cancelled (its RPC ended) leaves at
        once, so it needs no wake()."""
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()
        self._join((loop, arrived, phases))
        try:
            seen = 0
            while True:
                with self._changed:
                    fresh = self._events[seen:]
                    if not fresh:
                        # under the lock: the reader's next call back comes after this
                        arrived.clear()
                if not fresh:
                    await arrived.wait()
                    continue
                due, finished = self._due(seen, fresh, first, phases)
                seen += len(fresh)
                for event in due:
                    yield event
                if finished:
                    return
        finally:
            self._leave((loop, arrived, phases))

    def _due(
        self,
        start: int,
        fresh: list[RoundEventView],
        first: int,
        phases: frozenset[Phase] | None,
    ) -> tuple[list[RoundEventView], bool]:
        """What of `fresh` (the events from index `start` on) a subscriber from round `first`
        to `phases` gets, and whether the run ended."""
        due: list[RoundEventView] = []
        for index, event in enumerate(fresh, start):
            if event.finished or (event.round >= first and _wanted(event, phases)):
                due.append(self._delivered(index, event))
            if event.finished:
                return due, True
        return due, False

    def _delivered(self, index: int, event: RoundEventView) -> RoundEventView:
        """`event` (the `index`-th) with the run's current length, built once per event and
        length rather than once per subscriber. Unlocked: two threads racing here build two
        equal objects, and either is right."""
        total = self.total
        stamped = self._stamped.get(index)
        if stamped is None or stamped.total_rounds != total:
            stamped = self._stamped[index] = dataclasses.replace(event, total_rounds=total)
        return stamped

    def _join(self, waiter: _AsyncWaiter | None = None) -> None:
        with self._changed:
            self._subscribers += 1
            if waiter is not None:
                loop, arrived, phases = waiter
                self._async_waiters.setdefault(loop, {})[arrived] = phases
            if self._reader is None:
                self.total = self._total_rounds()
                self._reader = threading.Thread(target=self._read, name="round-events", daemon=True)
                self._reader.start()

    def _leave(self, waiter: _AsyncWaiter | None = None) -> None:
        with self._changed:
            self._subscribers -= 1
            if waiter is not None:
                loop, arrived, _phases = waiter
                waiting = self._async_waiters.get(loop, {})
                waiting.pop(arrived, None)
                if not waiting:
                    self._async_waiters.pop(loop, None)

    def _notify(self, fresh: list[RoundEventView]) -> None:
        """Wake the subscribers that want something of `fresh`; the caller holds the lock.
        Threads are all woken (each checks for itself). Async ones get one call back per
        event loop, which sets their events WAKE_BATCH at a time (_wake_in_batches); one
        that wants none of `fresh` sleeps on and reads past it when next woken."""
        self._changed.notify_all()
        for loop, waiting in self._async_waiters.items():
            due = [
                arrived
                for arrived, phases in waiting.items()
                if any(e.finished or _wanted(e, phases) for e in fresh)
            ]
            if not due:
                continue
            try:
                loop.call_soon_threadsafe(_wake_in_batches, due, 0)
            except RuntimeError:  # that loop closed; its subscribers went with it
                continue

    @property
    def reading(self) -> bool:
        """Whether the reader thread runs (it stops a poll after the last subscriber left)."""
        with self._changed:
            return self._reader is not None

    def wake(self) -> None:
        """Wake every subscriber to re-check `cancelled` (a watcher's RPC just ended)."""
        with self._changed:
            self._changed.notify_all()

    def _read(self) -> None:
        while True:
            with self._changed:
                if self._subscribers == 0:
                    self._reader = None
                    return
            try:
                entries = self._store.events(
                    self._after, block_ms=int(self._block_s * 1000), count=500
                )
                self.total = self._total_rounds()  # once here, not per subscriber and event
            except redis.RedisError:
                log.exception("reading round events failed; retrying")
                time.sleep(self._block_s)
                continue
            if not entries:
                continue
            try:
                fresh = [self._event(fields) for _, fields in entries]
            except redis.RedisError:
                log.exception("sizing the fetch window failed; retrying")
                time.sleep(self._block_s)
                continue
            with self._changed:
                self._after = entries[-1][0]
                self._events.extend(fresh)
                self._notify(fresh)

    def _event(self, fields: dict[str, str]) -> RoundEventView:
        round_number, phase = int(fields["round"]), Phase(fields["phase"])
        window = self._fetch_window_ms(round_number) if phase is Phase.ALLOCATED else 0
        return RoundEventView(
            round_number,
            phase,
            int(fields["ts_ms"]),
            fields.get("finished") == "1",
            fetch_window_ms=window,
        )


def _wanted(event: RoundEventView, phases: frozenset[Phase] | None) -> bool:
    return phases is None or event.phase in phases


def _wake_in_batches(events: list[asyncio.Event], start: int) -> None:
    """Set `events[start:start + WAKE_BATCH]`, and the rest in later passes of the loop.

    Each woken watcher writes its message on the loop; setting all of them at once queued
    every watcher's write ahead of the unary RPCs that arrived meanwhile, which then waited
    for the whole fan-out (tens of ms at 1,000 watchers). The next batch is queued behind the
    watchers just woken, so the loop polls for I/O, and runs the RPCs that came, in between.
    A subscriber that left in the meantime is set harmlessly; one that joined reads the new
    events itself before it waits."""
    end = start + WAKE_BATCH
    for event in events[start:end]:
        event.set()
    if end < len(events):
        asyncio.get_running_loop().call_soon(_wake_in_batches, events, end)


_LOGPROB_FIELDS = (
    "llm_normalized_logprob",
    "slm_normalized_logprob_before",
    "slm_normalized_logprob_after",
)


class AllocatorCore:
    """One run's allocator, usable in-process (simulation) or behind the gRPC servicer."""

    def __init__(
        self,
        store: StateStore,
        config: AllocatorConfig,
        problems: Sequence[Problem],
        settings: AllocatorSettings | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.settings = settings or AllocatorSettings()
        self.problems = list(problems)
        self.by_id = {p.id: p for p in self.problems}
        self.fingerprint = pool_fingerprint(self.problems)
        config.lada.check()
        self.policy = make_policy(config.policy)
        self._event_feed = RoundEventFeed(
            store, self.settings.watch_block_ms, self.total_rounds, self.fetch_window_ms
        )
        store.init_run(
            policy=config.policy,
            total_rounds=config.rounds,
            pool_fingerprint=self.fingerprint,
            pool_size=len(self.problems),
        )
        self.cluster_model, assignment = self._load_or_fit_clusters()
        self.pool = PoolIndex(
            [p.id for p in self.problems], assignment, self.cluster_model.num_clusters
        )
        self.policy.bind(PolicyContext(store, [p.domain for p in self.problems]))

    # ---- clustering ----------------------------------------------------------------------
    def _load_or_fit_clusters(self) -> tuple[ClusterModel, np.ndarray]:
        """The first replica fits the clustering before round 1; everyone uses the stored one."""
        blob = self.store.get_blob(CLUSTER_BLOB)
        if blob is None:
            difficulty = 1.0 - accuracy_of(self.store.llm_accuracy(), list(self.by_id))
            model, assignment = fit_cluster_model(
                [p.question for p in self.problems],
                [p.domain for p in self.problems],
                difficulty,
                self.config.lada.num_clusters,
                self.config.seed,
                self.settings.clustering,
            )
            self.store.put_blob_once(CLUSTER_BLOB, _encode_clusters(model, assignment))
            blob = self.store.get_blob(CLUSTER_BLOB)
        assert blob is not None
        return _decode_clusters(blob, len(self.problems))

    # ---- authentication --------------------------------------------------------------------
    def authorize(self, token: str, agent_id: str) -> AgentRecord:
        """The calling agent from its token; acting for another agent is PERMISSION_DENIED."""
        record = self.store.caller(token)
        _check_claim(record, agent_id)
        return record

    def check_operator(self, token: str, *, required: bool = False) -> None:
        """Operator RPCs carry the operator token; `required` ones (invitations, the run's
        length) are refused outright by an allocator that has none configured."""
        expected = self.config.operator_token
        if required and not expected:
            raise PermissionDenied(
                "authorization: this allocator has no operator token "
                "(start it with --operator-token or LADA_OPERATOR_TOKEN)"
            )
        if expected and not secrets.compare_digest(token.encode(), expected.encode()):
            raise Unauthenticated("authorization: missing or wrong operator token")

    def is_operator(self, token: str) -> bool:
        expected = self.config.operator_token
        return bool(expected) and secrets.compare_digest(token.encode(), expected.encode())

    # ---- registry --------------------------------------------------------------------------
    def register(
        self,
        name: str,
        model_description: str,
        tokenizer_name: str,
        domain_tags: Sequence[str],
        capacity: int,
        fingerprint: str,
        enrollment_secret: str,
    ) -> Enrollment:
        """Admit an invited agent (or, with open enrollment, any agent that keeps a secret);
        it takes part from the round after the current one. Retries return the same agent."""
        _check_name(name)
        if capacity <= 0:
            raise InvalidArgument(f"capacity: must be positive, got {capacity}")
        if fingerprint != self.fingerprint:
            raise Conflict(
                f"pool_fingerprint: the agent holds pool {fingerprint[:12] or '(none)'}, "
                f"the allocator serves {self.fingerprint[:12]}"
            )
        record = AgentRecord(
            agent_id="",
            name=name,
            model_description=model_description,
            tokenizer_name=tokenizer_name,
            domain_tags=list(domain_tags),
            capacity=capacity,
        )
        return self.store.register_agent(
            record, enrollment_secret, open_enrollment=self.config.open_enrollment
        )

    # ---- invitations and the run's length (operator) ---------------------------------------
    def invite(self, name: str, expires_in_s: int) -> tuple[str, str, int]:
        """A one-time enrollment secret bound to `name`: (invitation_id, secret, expires_ms)."""
        _check_name(name)
        if not 0 <= expires_in_s <= MAX_INVITATION_S:
            raise InvalidArgument(
                f"expires_in_s: between 0 (never) and {MAX_INVITATION_S}, got {expires_in_s}"
            )
        expires_ms = now_ms() + expires_in_s * 1000 if expires_in_s else 0
        invitation_id, secret = self.store.create_invitation(name, expires_ms)
        return invitation_id, secret, expires_ms

    def invitations(self) -> list[tuple[InvitationRecord, InvitationState]]:
        """Every invitation with its state as of now (expiry is decided here)."""
        stamp = now_ms()
        return [(i, i.state(stamp)) for i in self.store.invitations()]

    def revoke_invitation(self, invitation_id: str) -> None:
        if not invitation_id:
            raise InvalidArgument("invitation_id: required")
        self.store.revoke_invitation(invitation_id)

    def total_rounds(self) -> int:
        """The run's rounds (0: until stopped); the config's when Redis has lost the run."""
        return self.store.total_rounds(default=self.config.rounds)

    def set_total_rounds(self, total: int) -> tuple[int, int]:
        """Set the run's rounds (0: until stopped); returns (total, current round)."""
        if total < 0:
            raise InvalidArgument(f"total_rounds: must not be negative, got {total}")
        current = self.store.set_total_rounds(total)
        self._event_feed.total = total  # this replica's watchers see it at once
        return total, current

    def heartbeat(self, agent_id: str) -> tuple[int, Phase | None, int]:
        stamp, current, phase = self.store.heartbeat_and_round(agent_id)
        return current, phase, stamp

    def authorized_heartbeat(self, token: str, agent_id: str) -> tuple[int, Phase | None, int]:
        """`authorize(token, agent_id)` then `heartbeat`, in one round trip to Redis: the
        heartbeat is recorded only for an authorized caller, refusals are authorize's."""
        record, beat = self.store.caller_heartbeat(token, agent_id)
        _check_claim(record, agent_id)
        if beat is None:  # the script beats for every caller _check_claim lets by
            raise Unauthenticated(f"agent_id: agent {agent_id!r} is not active")
        stamp, current, phase = beat
        return current, phase, stamp

    def leave(self, agent_id: str, status: AgentStatus) -> None:
        """Deregister or revoke: the agent's unfinished allocation this round is released."""
        self.store.set_agent_status(agent_id, status)
        current = self.store.current_round()
        state = self.store.agent_round_state(current, agent_id) if current else None
        if state in (AgentRoundState.ALLOCATED, AgentRoundState.TRAINING):
            self.store.set_agent_round_state(current, agent_id, AgentRoundState.LATE)

    # ---- allocations and reports ----------------------------------------------------------
    def resolve_round(self, round_number: int) -> int:
        if round_number < 0:
            raise InvalidArgument(f"round: must not be negative, got {round_number}")
        resolved = round_number or self.store.current_round()
        if resolved == 0 or self.store.round_phase(resolved) is None:
            raise NotFound(f"round: no round {round_number or 'open yet'}")
        return resolved

    def allocation(self, agent_id: str, round_number: int, mark: bool = True) -> AllocationView:
        """An agent's allocation; fetching it moves the agent (and round) to TRAINING."""
        if round_number < 0:
            raise InvalidArgument(f"round: must not be negative, got {round_number}")
        r = round_number or self.store.current_round()
        # One read for the round, the agent's state, its samples and its contribution
        # requests, one script to mark it: every agent fetches once a round, so each round
        # trip here is paid N times.
        read = self.store.allocation_view(r, agent_id)
        view = self._allocation_view(agent_id, round_number, r, read)
        phase, _, state, _, _ = read
        if mark and (state is AgentRoundState.ALLOCATED or phase is Phase.ALLOCATED):
            self.store.mark_training(r, agent_id, round_too=phase is Phase.ALLOCATED)
        return view

    def authorized_allocation(self, token: str, agent_id: str, round_number: int) -> AllocationView:
        """`authorize(token, agent_id)` then `allocation` of that agent, in one round trip to
        Redis for a named round (what agents ask for); refusals are authorize's, then
        allocation's, in that order. Round 0 (the current one) takes the two-step path."""
        if round_number <= 0:
            agent = self.authorize(token, agent_id)
            return self.allocation(agent.agent_id, round_number)
        record, read = self.store.caller_allocation(token, agent_id, round_number)
        _check_claim(record, agent_id)
        if read is None:  # the script reads for every caller _check_claim lets by
            raise Unauthenticated(f"agent_id: agent {agent_id!r} is not active")
        return self._allocation_view(record.agent_id, round_number, round_number, read)

    def _allocation_view(
        self, agent_id: str, round_number: int, r: int, read: AllocationRead
    ) -> AllocationView:
        """The view of what was read of round `r` (`round_number` as asked), or the refusal."""
        phase, deadline_ms, state, samples, requests = read
        if r == 0 or phase is None:
            raise NotFound(f"round: no round {round_number or 'open yet'}")
        if phase is Phase.OPEN:
            raise Conflict(f"round: round {r} is OPEN; allocations are not recorded yet")
        if state is None:
            raise NotFound(f"agent_id: {agent_id} takes no part in round {r}")
        return AllocationView(r, samples, deadline_ms, self.config.policy, requests)

    def report(
        self, agent_id: str, round_number: int, stats: Sequence[allocator_pb2.SampleStats]
    ) -> ReportOutcome:
        """Validate a whole report stream, then apply it atomically (all or nothing).

        A named round is not read first: the report's script checks its phase anyway, and
        answers a missing round as resolve_round does (NotFound), so a report is one round
        trip. Refusals keep resolve_round's precedence over the payload's."""
        r = self.resolve_round(round_number) if round_number <= 0 else round_number
        try:
            payload = self._validated_payload(stats)
        except InvalidArgument:
            self.resolve_round(round_number)  # a missing round is refused first, as before
            raise
        return self.store.apply_report(r, agent_id, payload, require_open=True)

    def _validated_payload(self, stats: Sequence[allocator_pb2.SampleStats]) -> dict[str, bytes]:
        _check_numbers(stats, self.settings.max_paths_per_sample)
        unknown = [s.sample_id for s in stats if s.sample_id not in self.by_id]
        if unknown:
            raise InvalidArgument(f"stats.sample_id: unknown sample IDs: {_listing(unknown)}")
        payload: dict[str, bytes] = {}
        clashing: list[str] = []
        for sample in stats:
            data = sample.SerializeToString()
            previous = payload.setdefault(sample.sample_id, data)
            if previous != data:
                clashing.append(sample.sample_id)
        if clashing:
            raise InvalidArgument(
                f"stats.sample_id: reported twice with different values: {_listing(clashing)}"
            )
        return payload

    def contribute(
        self, agent_id: str, round_number: int, paths: Sequence[tuple[str, str]]
    ) -> ContributionOutcome:
        """Record an agent's sound paths on public samples, up to its per-round cap.

        Paths are checked, not trusted: a wrong final answer or a false arithmetic step
        (lada.tasks.is_sound) drops the path; the round counts every drop.
        """
        r = self.resolve_round(round_number)
        phase = self.store.round_phase(r)
        if phase not in (Phase.ALLOCATED, Phase.TRAINING):
            raise Conflict(f"round: round {r} is {phase}, not taking contributions")
        ids = [sample_id for sample_id, _ in paths]
        unknown = [s for s in ids if s not in self.by_id]
        if unknown:
            raise InvalidArgument(f"paths.sample_id: unknown sample IDs: {_listing(unknown)}")
        repeated = sorted({s for s in ids if ids.count(s) > 1})
        if repeated:
            raise InvalidArgument(f"paths.sample_id: more than one path for {_listing(repeated)}")
        for sample_id, text in paths:
            if not text.strip() or len(text) > self.settings.max_contribution_chars:
                raise InvalidArgument(
                    f"paths.text: empty or longer than {self.settings.max_contribution_chars} "
                    f"characters for {sample_id}"
                )
        correct = {s: t for s, t in paths if is_correct(t, self.by_id[s].answer)}
        sound = {s: t for s, t in correct.items() if is_sound(t, self.by_id[s].answer)}
        outcome = ContributionOutcome(
            rejected_incorrect=len(paths) - len(correct),
            rejected_unsound=len(correct) - len(sound),
        )
        outcome.accepted, outcome.rejected_over_cap = self.store.add_contributions(
            r,
            agent_id,
            sound,
            self.settings.max_contributions_per_agent_round,
            (outcome.rejected_incorrect, outcome.rejected_unsound),
        )
        return outcome

    # ---- round events --------------------------------------------------------------------
    def fetch_window_ms(self, round_number: int) -> int:
        """How long agents should spread their fetches of a round's allocations over."""
        per_agent = self.settings.fetch_window_ms_per_agent
        window = round(self.store.participant_count(round_number) * per_agent)
        return min(window, self.settings.max_fetch_window_ms)

    def watch(
        self,
        from_round: int,
        cancelled: Callable[[], bool],
        phases: frozenset[Phase] | None = None,
    ) -> Iterator[RoundEventView]:
        """Round events from `from_round` (0: the current round) until the run finishes; of
        `phases` only when given (the event that ends the run always comes)."""
        first = from_round or max(self.store.current_round(), 1)
        yield from self._event_feed.subscribe(first, cancelled, phases)

    def watch_async(
        self, from_round: int, phases: frozenset[Phase] | None = None
    ) -> AsyncIterator[RoundEventView]:
        """`watch` for a coroutine (the aio servicer): no thread per watcher, and the
        watcher leaves when its task is cancelled. Resolves round 0 before returning."""
        first = from_round or max(self.store.current_round(), 1)
        return self._event_feed.subscribe_async(first, phases)

    def wake_watchers(self) -> None:
        """Call when a watcher's RPC ends, so its subscription notices and lets go."""
        self._event_feed.wake()

    # ---- operator queries ------------------------------------------------------------------
    def round_status(self, round_number: int) -> dict[str, Any]:
        info = self.store.run_info()
        r = round_number or self.store.current_round()
        status: dict[str, Any] = {
            "round": r,
            "phase": "",
            "deadline_ms": 0,
            "policy": info.get("policy", self.config.policy),
            "total_rounds": self.total_rounds(),
            "pool_fingerprint": self.fingerprint,
            "pool_size": len(self.problems),
            "agents": [],
            "contributions": {},
        }
        if r == 0:
            return status
        record = self.store.get_round(r)
        names = {a.agent_id: a.name for a in self.store.list_agents()}
        status["phase"] = record.phase.value
        status["deadline_ms"] = record.deadline_ms
        status["contributions"] = self.store.contribution_counts(r)
        status["agents"] = [
            {
                "agent_id": agent_id,
                "name": names.get(agent_id, ""),
                "state": state.value,
                "allocated": self.store.allocation_size(r, agent_id),
                "reported": len(self.store.get_stats(r, agent_id)),
                "requested": self.store.contribution_request_count(r, agent_id),
            }
            for agent_id, state in sorted(record.agents.items())
        ]
        return status

    def learner(self, agent_id: str) -> LearnerState:
        raw = self.store.learners().get(agent_id)
        return LearnerState.from_json(raw, self.pool.num_clusters, self.config.lada)

    def learnability(self, agent_id: str = "") -> list[dict[str, Any]]:
        """Per agent: gap histogram, band and per-cluster arms (the LLM too, when asked for all)."""
        if agent_id:
            self.store.get_agent(agent_id)
            ids = [agent_id]
        else:
            ids = [a.agent_id for a in self.store.list_agents()]
            if LLM_LEARNER in self.store.learners():
                ids.append(LLM_LEARNER)
        return [self._learnability_of(a) for a in ids]

    def _learnability_of(self, agent_id: str) -> dict[str, Any]:
        learner = self.learner(agent_id)
        _, gaps, _ = decode_known_gaps(self.store.known_gaps(agent_id), self.pool)
        finite = gaps[np.isfinite(gaps)]
        counts, edges = (
            np.histogram(finite, bins=self.settings.gap_histogram_bins)
            if finite.size
            else (np.zeros(0, np.int64), np.zeros(0))
        )
        gap_lo, gap_hi = band_gap_bounds(finite, learner.band_low, learner.band_high)
        params = self.config.lada
        scores = ucb_scores(
            learner.reward_sum, learner.pulls, params.ucb_alpha, params.arm_prior_pulls
        )
        return {
            "agent_id": agent_id,
            "histogram_edges": edges.tolist(),
            "histogram_counts": counts.tolist(),
            "band_low_quantile": learner.band_low,
            "band_high_quantile": learner.band_high,
            "band_low_gap": gap_lo if math.isfinite(gap_lo) else 0.0,
            "band_high_gap": gap_hi if math.isfinite(gap_hi) else 0.0,
            "samples_with_gap": int(finite.size),
            "arms": [
                {
                    "cluster": c,
                    "mean_reward": float(learner.reward_sum[c] / learner.pulls[c])
                    if learner.pulls[c]
                    else 0.0,
                    "pulls": int(learner.pulls[c]),
                    "ucb_score": float(scores[c]),
                }
                for c in range(self.pool.num_clusters)
            ],
        }

    def agents(self) -> list[AgentRecord]:
        return self.store.list_agents()

    def deadline_for_new_round(self) -> int:
        return now_ms() + int(self.config.round_deadline_s * 1000)


def _check_claim(caller: AgentRecord, agent_id: str) -> None:
    """Acting for another agent than the token's is PERMISSION_DENIED ('' = its own)."""
    if agent_id and agent_id != caller.agent_id:
        raise PermissionDenied(f"agent_id: this token belongs to {caller.agent_id}, not {agent_id}")


def _check_name(name: str) -> None:
    if not name.strip():
        raise InvalidArgument("name: must not be empty")
    if len(name) > MAX_NAME_CHARS or any(ch in name for ch in "|\n\r\0"):
        raise InvalidArgument(
            f"name: at most {MAX_NAME_CHARS} characters, no '|' or control characters"
        )


def _check_numbers(stats: Sequence[allocator_pb2.SampleStats], max_paths: int) -> None:
    """Every log-probability finite and <= 0, and no more paths than allowed."""
    low = -math.inf
    for sample in stats:
        paths = sample.paths
        if len(paths) > max_paths:
            raise InvalidArgument(
                f"stats.paths: more than {max_paths} paths for {sample.sample_id}"
            )
        for path in paths:
            if not (
                low < path.llm_normalized_logprob <= 0.0
                and low < path.slm_normalized_logprob_before <= 0.0
                and low < path.slm_normalized_logprob_after <= 0.0
            ):
                raise InvalidArgument(_first_bad_number(stats))


def _first_bad_number(stats: Sequence[allocator_pb2.SampleStats]) -> str:
    for i, sample in enumerate(stats):
        for j, path in enumerate(sample.paths):
            for name in _LOGPROB_FIELDS:
                value = getattr(path, name)
                if not math.isfinite(value) or value > 0.0:
                    what = "must be finite" if not math.isfinite(value) else "must be <= 0"
                    return (
                        f"stats[{i}].paths[{j}].{name}: {value!r} {what} "
                        f"(sample {sample.sample_id})"
                    )
    return "stats: invalid number"


def _listing(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


def _encode_clusters(model: ClusterModel, assignment: np.ndarray) -> bytes:
    return model_to_json(model) + b"\n" + assignment.astype(np.int32).tobytes()


def _decode_clusters(blob: bytes, pool_size: int) -> tuple[ClusterModel, np.ndarray]:
    head, _, tail = blob.partition(b"\n")
    assignment = np.frombuffer(tail, np.int32).astype(np.int64)
    if len(assignment) != pool_size:
        raise Conflict(f"public_pool: stored clustering covers {len(assignment)} samples")
    return model_from_json(head), assignment
