"""The allocator's one reader of round events, shared by every WatchRounds subscriber, on a
real Redis: subscribers sleep until something happens, a watcher that goes away is let go at
once rather than at the next idle wake-up, and an event is built once for all its watchers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from allocator.core import IDLE_WAKE_S, RoundEventFeed
from allocator.service import round_event
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


def test_an_async_subscriber_is_woken_on_its_loop_by_the_reader(store: StateStore) -> None:
    feed = _feed(store)

    async def first_two() -> list[Phase]:
        events = feed.subscribe_async(1)
        first = await anext(events)  # waits on the loop until the reader thread calls back
        assert store.record_round_allocations(1, {}, deadline_ms=0)
        second = await asyncio.wait_for(anext(events), 5.0)
        await events.aclose()
        return [first.phase, second.phase]

    async def opened_later() -> list[Phase]:
        task = asyncio.create_task(first_two())
        await asyncio.sleep(0.3)  # the subscriber waits now: no events yet
        assert store.open_round(1, deadline_ms=0)
        return await asyncio.wait_for(task, 5.0)

    assert asyncio.run(opened_later()) == [Phase.OPEN, Phase.ALLOCATED]
    assert _reader_stopped(feed)


def test_an_async_subscriber_whose_task_is_cancelled_leaves_at_once(store: StateStore) -> None:
    feed = _feed(store)

    async def watch_then_cancel() -> float:
        task = asyncio.create_task(anext(feed.subscribe_async(1)))
        await asyncio.sleep(0.3)  # it is waiting now: no events yet
        started = time.monotonic()
        task.cancel()  # as gRPC does when the watcher's client goes away
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(watch_then_cancel()) < 1.0
    assert _reader_stopped(feed)


# ---- fan-out to many async subscribers ------------------------------------------------------
def test_watchers_share_one_view_and_one_message_per_event(store: StateStore) -> None:
    """The feed stamps each event with the run's length once, not once per watcher, and the
    servicer builds one message from it for every watcher."""
    feed = _feed(store)
    assert store.open_round(1, deadline_ms=0)
    first, second = feed.subscribe(1, lambda: False), feed.subscribe(1, lambda: False)
    one, other = next(first), next(second)
    assert one is other and one.total_rounds == 3
    assert round_event(one) is round_event(other)
    assert round_event(one).round == 1 and round_event(one).total_rounds == 3
    first.close()
    second.close()
    assert _reader_stopped(feed)
