"""The allocator's one reader of round events, shared by every WatchRounds subscriber, on a
real Redis: subscribers sleep until something happens, and a watcher that goes away is let
go at once rather than at the next idle wake-up."""

from __future__ import annotations

import threading
import time

from allocator.core import IDLE_WAKE_S, RoundEventFeed
from lada.state import Phase, StateStore

WINDOW_MS = 40


def _feed(store: StateStore) -> RoundEventFeed:
    return RoundEventFeed(store, 200, lambda: 3, lambda _round: WINDOW_MS)


def _reader_stopped(feed: RoundEventFeed) -> bool:
    deadline = time.monotonic() + 5.0
    while feed.reading and time.monotonic() < deadline:
        time.sleep(0.05)
    return not feed.reading


def test_a_cancelled_subscriber_leaves_on_wake_not_at_the_idle_timeout(store: StateStore) -> None:
    feed = _feed(store)
    cancelled = threading.Event()
    thread = threading.Thread(target=lambda: list(feed.subscribe(1, cancelled.is_set)))
    thread.start()
    time.sleep(0.3)  # it is waiting now: no events yet
    started = time.monotonic()
    cancelled.set()
    feed.wake()
    thread.join(timeout=IDLE_WAKE_S)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert _reader_stopped(feed)


def test_only_the_allocated_event_carries_the_fetch_window(store: StateStore) -> None:
    feed = _feed(store)
    assert store.open_round(1, deadline_ms=0)
    assert store.record_round_allocations(1, {}, deadline_ms=0)
    events = feed.subscribe(1, lambda: False)
    seen = [next(events), next(events)]
    assert [(e.phase, e.fetch_window_ms) for e in seen] == [
        (Phase.OPEN, 0),
        (Phase.ALLOCATED, WINDOW_MS),
    ]
    assert all(e.total_rounds == 3 for e in seen)
    events.close()  # the subscriber leaves, then the reader
    assert _reader_stopped(feed)
