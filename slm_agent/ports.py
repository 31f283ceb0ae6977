"""What the agent loop needs from the allocator and the LLM service, free of any transport.

`AllocatorPort` and `LLMPort` are small interfaces; slm_agent.clients implements them
over gRPC, and a simulation can pass in-process objects. Failures come back as the
`ServiceError` family below, never as transport exceptions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from allocator.client import WATCHED_PHASES
from lada.learnability import ClusterModel
from slm_agent.rounds import AllocatedSample, LLMPath, RoundAllocation, SampleStat

log = logging.getLogger("lada.agent.ports")

T = TypeVar("T")
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0


class ServiceError(Exception):
    """A call to the allocator or the LLM service failed; `code` names why (gRPC names)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class Unavailable(ServiceError):
    """Transient: the service did not answer (retry with backoff)."""


class RoundGone(ServiceError):
    """The round can no longer be worked on (closed, not a participant, not found)."""


class Refused(ServiceError):
    """The service refused the agent or its request for good (token, pool, arguments)."""


class RunOver(Refused):
    """The run has no round left for this agent (OUT_OF_RANGE on RegisterAgent)."""


class StreamEnded(ServiceError):
    """The round stream was cut (server restart); resubscribe."""


class Unreachable(ConnectionError):
    """A service stayed unavailable past the retry deadline."""


@dataclass
class Registration:
    """What the agent tells the allocator about itself (no private data)."""

    name: str
    model_description: str
    tokenizer_name: str
    domain_tags: list[str]
    capacity: int
    pool_fingerprint: str
    enrollment_secret: str


@dataclass
class Registered:
    agent_id: str
    token: str
    first_round: int
    resumed: bool = False


@dataclass
class RoundEventView:
    """A round phase change, as the loop needs it."""

    round: int
    phase: str  # OPEN | ALLOCATED | TRAINING | REPORTED | CLOSED
    total_rounds: int
    run_finished: bool
    fetch_window_ms: int = 0  # ALLOCATED: fetch at a random moment within this many ms


class AllocatorPort(Protocol):
    def register(self, registration: Registration) -> Registered: ...
    def use_identity(self, agent_id: str, token: str) -> None: ...
    def heartbeat(self) -> int: ...
    def watch_rounds(
        self, from_round: int, phases: Sequence[str] = WATCHED_PHASES
    ) -> Iterator[RoundEventView]: ...
    def stop_watching(self) -> None: ...
    def get_allocation(self, round_number: int) -> RoundAllocation: ...
    def report_stats(self, round_number: int, stats: Sequence[SampleStat]) -> tuple[int, int]: ...
    def contribute(self, round_number: int, paths: dict[str, str]) -> tuple[int, int]: ...
    def cluster_model(self) -> ClusterModel | None: ...


class LLMPort(Protocol):
    def reasoning_paths(
        self, samples: Sequence[AllocatedSample], n: int, temperature: float, max_tokens: int
    ) -> dict[str, list[LLMPath]]: ...


def with_retries(call: Callable[[], T], what: str, deadline_s: float) -> T:
    """Run `call`, retrying `Unavailable` with exponential backoff until the deadline."""
    started = time.monotonic()
    delay = FIRST_BACKOFF_S
    while True:
        try:
            return call()
        except Unavailable as exc:
            elapsed = time.monotonic() - started
            if elapsed + delay > deadline_s:
                raise Unreachable(f"{what}: {exc.code} for {elapsed:.0f}s: {exc.details}") from exc
            log.warning(
                f"{what} failed ({exc.code}); retrying in {delay:.1f}s",
                extra={"details": exc.details},
            )
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
