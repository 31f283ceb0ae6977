"""Retry policy and error translation between the agent loop and its services."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest

from lada.v1 import allocator_pb2
from slm_agent.clients import GrpcAllocator
from slm_agent.ports import (
    Refused,
    RoundGone,
    ServiceError,
    Unavailable,
    Unreachable,
    with_retries,
)
from tests.fixtures_allocator import register_agents


def test_transient_failures_are_retried_until_the_call_succeeds() -> None:
    outcomes: Iterator[object] = iter([Unavailable("UNAVAILABLE", "down"), 7])

    def call() -> object:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert with_retries(call, "Heartbeat", deadline_s=5.0) == 7


def test_retrying_stops_with_unreachable_at_the_deadline() -> None:
    calls = []

    def call() -> None:
        calls.append(time.monotonic())
        raise Unavailable("UNAVAILABLE", "connection refused")

    started = time.monotonic()
    with pytest.raises(Unreachable, match="GetAllocation: UNAVAILABLE for"):
        with_retries(call, "GetAllocation", deadline_s=2.0)
    assert len(calls) == 3  # waits 0.5 s, then 1 s; a 2 s wait would pass the deadline
    assert 1.4 < time.monotonic() - started < 2.5


def test_a_refusal_is_not_retried() -> None:
    calls = []

    def call() -> None:
        calls.append(1)
        raise Refused("UNAUTHENTICATED", "authorization: missing or unknown agent token")

    with pytest.raises(Refused):
        with_retries(call, "Heartbeat", deadline_s=5.0)
    assert calls == [1]


@dataclass
class RefusingAllocator:
    address: str = ""
    code: grpc.StatusCode = grpc.StatusCode.NOT_FOUND


@pytest.fixture
def refusing_allocator() -> Iterator[RefusingAllocator]:
    """A real gRPC server whose GetAllocation / Heartbeat abort with a chosen code."""
    state = RefusingAllocator()

    def abort(_request: object, context: grpc.ServicerContext) -> None:
        context.abort(state.code, "round: no round 9")

    handler = grpc.method_handlers_generic_handler(
        "lada.v1.Allocator",
        {
            name: grpc.unary_unary_rpc_method_handler(
                abort, request_deserializer=kind.FromString, response_serializer=bytes
            )
            for name, kind in (
                ("GetAllocation", allocator_pb2.GetAllocationRequest),
                ("Heartbeat", allocator_pb2.HeartbeatRequest),
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    state.address = f"127.0.0.1:{port}"
    yield state
    server.stop(0)


@pytest.mark.parametrize(
    ("code", "round_call", "other_call"),
    [
        (grpc.StatusCode.NOT_FOUND, RoundGone, Refused),
        (grpc.StatusCode.FAILED_PRECONDITION, RoundGone, Refused),
        (grpc.StatusCode.UNAVAILABLE, Unavailable, Unavailable),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Unavailable, Unavailable),
        (grpc.StatusCode.UNAUTHENTICATED, Refused, Refused),
        (grpc.StatusCode.INVALID_ARGUMENT, Refused, Refused),
    ],
)
def test_status_codes_become_transport_free_errors(
    refusing_allocator: RefusingAllocator,
    code: grpc.StatusCode,
    round_call: type[Exception],
    other_call: type[Exception],
) -> None:
    refusing_allocator.code = code
    with grpc.insecure_channel(refusing_allocator.address) as channel:
        allocator = GrpcAllocator(channel, timeout_s=5)
        with pytest.raises(round_call) as on_round:
            allocator.get_allocation(9)
        with pytest.raises(other_call):
            allocator.heartbeat()
    error = on_round.value
    assert isinstance(error, ServiceError)
    assert (error.code, error.details) == (code.name, "round: no round 9")


def test_round_events_come_from_the_watch_address_and_unary_calls_from_the_allocator(
    refusing_allocator: RefusingAllocator, allocator_deployment, test_pool_fingerprint: str
) -> None:
    """`allocator_watch`: the main address here refuses every call and serves no
    WatchRounds at all, so the events can only have come from the watch address."""
    deployment = allocator_deployment(rounds=1, min_agents=1)
    address = deployment.replicas[0].address
    (agent,) = register_agents(address, test_pool_fingerprint, 1, capacity=8)
    refusing_allocator.code = grpc.StatusCode.UNAUTHENTICATED
    with (
        grpc.insecure_channel(refusing_allocator.address) as main,
        grpc.insecure_channel(address) as watch,
    ):
        allocator = GrpcAllocator(main, timeout_s=5, watch_channel=watch)
        allocator.use_identity(agent.agent_id, agent.token)
        with pytest.raises(Refused):
            allocator.heartbeat()
        first = next(allocator.watch_rounds(1))
        allocator.stop_watching()
    assert (first.round, first.phase) == (1, "ALLOCATED")
