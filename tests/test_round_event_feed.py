"""The allocator's one reader of round events, shared by every WatchRounds subscriber, on a
real Redis: subscribers sleep until something happens, a watcher that goes away is let go at
once rather than at the next idle wake-up, and a fan-out to many watchers delivers every event
once and in order while letting the loop serve other work between batches of watchers, and a
watcher of some phases is woken for those (and the run's end) only."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

import allocator.core
from allocator.core import IDLE_WAKE_S, WAKE_BATCH, RoundEventFeed
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
ROUND = [Phase.OPEN, Phase.ALLOCATED, Phase.TRAINING, Phase.REPORTED, Phase.CLOSED]


def _play_round(store: StateStore, r: int) -> None:
    """Round `r` through every phase, as the driver moves it (one event each)."""
    assert store.open_round(r, deadline_ms=0)
    assert store.record_round_allocations(r, {}, deadline_ms=0)
    for phase in ROUND[2:]:
        assert store.transition(r, phase)


def _expected(rounds: range) -> list[tuple[int, Phase, bool]]:
    played = [(r, phase, False) for r in rounds for phase in ROUND]
    return [*played, (rounds[-1], Phase.CLOSED, True)]  # the run's end


async def _collect(
    feed: RoundEventFeed, first: int, phases: frozenset[Phase] | None = None
) -> list[tuple[int, Phase, bool]]:
    return [(e.round, e.phase, e.finished) async for e in feed.subscribe_async(first, phases)]


def test_every_async_watcher_gets_every_event_once_in_order_past_many_wake_batches(
    store: StateStore,
) -> None:
    """More watchers than several wake batches, events arriving while a batched wake-up is
    still going: each gets each event exactly once, in order; one that joins late gets the
    backlog from its round on; one whose RPC ends mid-run is dropped and the others go on."""
    feed = _feed(store)
    watchers = 3 * WAKE_BATCH + 5

    async def run() -> None:
        early = [asyncio.create_task(_collect(feed, 1)) for _ in range(watchers)]
        leaving = asyncio.create_task(_collect(feed, 1))
        await asyncio.sleep(0.3)  # all of them wait now
        await asyncio.to_thread(_play_round, store, 1)
        await asyncio.sleep(0.3)
        leaving.cancel()
        late_from_1 = asyncio.create_task(_collect(feed, 1))
        late_from_2 = asyncio.create_task(_collect(feed, 2))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(_play_round, store, 2)
        await asyncio.to_thread(store.finish_run, 2)
        results = await asyncio.wait_for(asyncio.gather(*early, late_from_1, late_from_2), 10.0)
        assert all(seen == _expected(range(1, 3)) for seen in results[: watchers + 1])
        assert results[-1] == [e for e in _expected(range(1, 3)) if e[0] == 2]
        with contextlib.suppress(asyncio.CancelledError):
            await leaving

    asyncio.run(run())
    assert _reader_stopped(feed)  # every subscriber left, the cancelled one included


def test_a_fan_out_lets_the_loop_run_what_arrived_between_wake_batches(
    store: StateStore,
) -> None:
    """A callback queued while the first watchers take an event (as a unary RPC's next step
    is) runs before the last watchers are woken: it waits for a batch, not the whole fan-out."""
    feed = _feed(store)
    watchers = 4 * WAKE_BATCH
    woken: list[int] = []
    seen_by_other_work: list[int] = []

    async def watch(index: int) -> None:
        async for _event in feed.subscribe_async(1):
            if not woken:  # the first watcher to get the event queues "other work"
                asyncio.get_running_loop().call_soon(lambda: seen_by_other_work.append(len(woken)))
            woken.append(index)
            return

    async def run() -> None:
        tasks = [asyncio.create_task(watch(i)) for i in range(watchers)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(store.open_round, 1, 0)
        await asyncio.wait_for(asyncio.gather(*tasks), 5.0)

    asyncio.run(run())
    assert sorted(woken) == list(range(watchers))
    assert seen_by_other_work and seen_by_other_work[0] <= 2 * WAKE_BATCH


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


# ---- watchers of some phases only -----------------------------------------------------------
ALLOCATED_ONLY = frozenset({Phase.ALLOCATED})


def test_a_watcher_of_some_phases_gets_only_those_and_the_run_end(store: StateStore) -> None:
    """On both kinds of subscriber: ALLOCATED of each round, then the CLOSED that ends the
    run (which every watcher gets, whatever it asked for)."""
    feed = _feed(store)
    wanted = [(1, Phase.ALLOCATED, False), (2, Phase.ALLOCATED, False), (2, Phase.CLOSED, True)]

    async def run() -> list[list[tuple[int, Phase, bool]]]:
        threaded = asyncio.to_thread(
            lambda: [
                (e.round, e.phase, e.finished)
                for e in feed.subscribe(1, lambda: False, ALLOCATED_ONLY)
            ]
        )
        watchers = [
            asyncio.ensure_future(threaded),
            asyncio.create_task(_collect(feed, 1, ALLOCATED_ONLY)),
        ]
        await asyncio.sleep(0.3)
        for r in (1, 2):
            await asyncio.to_thread(_play_round, store, r)
        await asyncio.to_thread(store.finish_run, 2)
        return await asyncio.wait_for(asyncio.gather(*watchers), 10.0)

    assert asyncio.run(run()) == [wanted, wanted]
    assert _reader_stopped(feed)


def test_a_fan_out_wakes_only_the_watchers_that_want_the_event(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OPEN event wakes the 5 watchers of every phase, not the 10 of ALLOCATED only: the
    others cost the loop nothing until their phase comes."""
    feed = _feed(store)
    woken: list[int] = []
    wake = allocator.core._wake_in_batches

    def counted(events: list[asyncio.Event], start: int) -> None:
        if start == 0:
            woken.append(len(events))
        wake(events, start)

    monkeypatch.setattr(allocator.core, "_wake_in_batches", counted)

    async def run() -> None:
        every = [asyncio.create_task(_collect(feed, 1)) for _ in range(5)]
        some = [asyncio.create_task(_collect(feed, 1, ALLOCATED_ONLY)) for _ in range(10)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(store.open_round, 1, 0)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(store.record_round_allocations, 1, {}, 0)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(store.finish_run, 1)
        await asyncio.wait_for(asyncio.gather(*every, *some), 5.0)

    asyncio.run(run())
    assert woken == [5, 15, 15]  # OPEN, ALLOCATED, the run's end
    assert _reader_stopped(feed)
