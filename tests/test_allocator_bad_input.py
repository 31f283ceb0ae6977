"""Refusals over real gRPC: each bad request gets its status code with the offending field
named, and the run's state in Redis is exactly what it was before."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from allocator.client import AgentClient, OperatorClient
from lada.redis_conn import RedisHandle
from lada.state import StateStore
from lada.v1 import allocator_pb2
from tests.fixtures_allocator import (
    OPERATOR_TOKEN,
    AllocatorDeployment,
    allocator_run,
    register_agents,
    synthetic_stats,
    wait_phase,
)


@dataclass
class OpenRound:
    """Round 1 allocated to two agents, both training; nothing reported yet."""

    deployment: AllocatorDeployment
    alice: AgentClient
    bob: AgentClient
    alice_samples: list[allocator_pb2.AllocatedSample]
    bob_samples: list[allocator_pb2.AllocatedSample]

    @property
    def store(self) -> StateStore:
        return self.deployment.store

    @property
    def address(self) -> str:
        return self.deployment.replicas[0].address


@pytest.fixture(scope="module")
def open_round(
    redis_handle: RedisHandle,
    tmp_path_factory: pytest.TempPathFactory,
    test_pool_fingerprint: str,
) -> Iterator[OpenRound]:
    run_id = "test-" + uuid.uuid4().hex[:10]
    with allocator_run(
        redis_handle, run_id, tmp_path_factory.mktemp("bad-input"), min_agents=2
    ) as deployment:
        alice, bob = register_agents(
            deployment.replicas[0].address, test_pool_fingerprint, 2, capacity=10
        )
        with deployment.operator() as operator:
            wait_phase(operator, 1, "ALLOCATED")
        yield OpenRound(
            deployment,
            alice,
            bob,
            list(alice.get_allocation(1).samples),
            list(bob.get_allocation(1).samples),
        )


def refused(call: Callable[[], Any], code: grpc.StatusCode) -> str:
    """Run a call that must fail with `code`; returns the status message."""
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() is code, error.value.details()
    return str(error.value.details())


def refused_unchanged(world: OpenRound, call: Callable[[], Any], code: grpc.StatusCode) -> str:
    before = world.store.snapshot()
    message = refused(call, code)
    assert world.store.snapshot() == before
    return message


def with_token(world: OpenRound, token: str, agent_id: str) -> AgentClient:
    client = AgentClient(world.address)
    client.use_identity(agent_id, token)
    return client


# ---- authentication -----------------------------------------------------------------------
@pytest.mark.parametrize("token", ["", "not-a-token"])
def test_agent_rpcs_without_a_valid_token_are_unauthenticated(
    open_round: OpenRound, token: str
) -> None:
    stranger = with_token(open_round, token, open_round.alice.agent_id)
    for call in (
        stranger.heartbeat,
        lambda: stranger.get_allocation(1),
        lambda: stranger.report_stats(1, synthetic_stats(open_round.alice_samples)),
        lambda: next(iter(stranger.watch_rounds(1, timeout_s=10))),
        stranger.get_cluster_model,
    ):
        message = refused_unchanged(open_round, call, grpc.StatusCode.UNAUTHENTICATED)
        assert "authorization" in message


@pytest.mark.parametrize("token", ["", "wrong", "agent"])
def test_operator_rpcs_need_the_operator_token(open_round: OpenRound, token: str) -> None:
    token = open_round.alice.token if token == "agent" else token
    with OperatorClient(open_round.address, token) as operator:
        for call in (
            lambda: operator.status(1),
            operator.agents,
            operator.gaps,
            lambda: operator.revoke(open_round.bob.agent_id),
        ):
            message = refused_unchanged(open_round, call, grpc.StatusCode.UNAUTHENTICATED)
            assert "operator token" in message


# ---- acting for others and for samples not allocated ---------------------------------------
def test_reporting_for_another_agent_is_denied_naming_it(open_round: OpenRound) -> None:
    impostor = with_token(open_round, open_round.alice.token, open_round.bob.agent_id)
    message = refused_unchanged(
        open_round,
        lambda: impostor.report_stats(1, synthetic_stats(open_round.bob_samples)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert f"agent_id: this token belongs to {open_round.alice.agent_id}" in message
    assert open_round.bob.agent_id in message


def test_reporting_unallocated_samples_is_denied_naming_them(open_round: OpenRound) -> None:
    mine = {s.sample_id for s in open_round.alice_samples}
    foreign = [s for s in open_round.bob_samples if s.sample_id not in mine][:2]
    stats = synthetic_stats(open_round.alice_samples[:3] + foreign)
    message = refused_unchanged(
        open_round,
        lambda: open_round.alice.report_stats(1, stats),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert message.startswith("stats.sample_id: not allocated to")
    assert all(s.sample_id in message for s in foreign)
    assert not any(s.sample_id in message for s in open_round.alice_samples[:3])


# ---- malformed numbers and IDs ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("slm_normalized_logprob_before", math.nan, "must be finite"),
        ("llm_normalized_logprob", math.inf, "must be finite"),
        ("slm_normalized_logprob_after", -math.inf, "must be finite"),
        ("slm_normalized_logprob_after", 0.5, "must be <= 0"),
    ],
)
def test_bad_numbers_are_invalid_naming_the_field(
    open_round: OpenRound, field: str, value: float, why: str
) -> None:
    stats = synthetic_stats(open_round.alice_samples)
    setattr(stats[3].paths[1], field, value)
    message = refused_unchanged(
        open_round,
        lambda: open_round.alice.report_stats(1, stats, batch_size=2),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert message.startswith(f"stats[3].paths[1].{field}: ")
    assert why in message and stats[3].sample_id in message


def test_a_bad_last_batch_leaves_the_earlier_batches_unapplied(open_round: OpenRound) -> None:
    stats = synthetic_stats(open_round.alice_samples)
    stats[-1].paths[0].llm_normalized_logprob = math.nan
    refused_unchanged(
        open_round,
        lambda: open_round.alice.report_stats(1, stats, batch_size=3),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert open_round.store.get_stats(1, open_round.alice.agent_id) == {}


def test_unknown_sample_ids_are_invalid_naming_them(open_round: OpenRound) -> None:
    stats = synthetic_stats(open_round.alice_samples[:2])
    stats.append(allocator_pb2.SampleStats(sample_id="syn-doesnotexist"))
    message = refused_unchanged(
        open_round,
        lambda: open_round.alice.report_stats(1, stats),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert message == "stats.sample_id: unknown sample IDs: syn-doesnotexist"


def test_one_sample_reported_twice_with_different_values_is_invalid(open_round: OpenRound) -> None:
    first = synthetic_stats(open_round.alice_samples[:1])
    second = synthetic_stats(open_round.alice_samples[:1], lambda c: 0.25)
    message = refused_unchanged(
        open_round,
        lambda: open_round.alice.report_stats(1, first + second),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert open_round.alice_samples[0].sample_id in message


def test_a_stream_mixing_rounds_is_invalid(open_round: OpenRound) -> None:
    alice = open_round.alice
    stats = synthetic_stats(open_round.alice_samples[:2])
    messages = [
        allocator_pb2.ReportStatsRequest(agent_id=alice.agent_id, round=1, stats=stats[:1]),
        allocator_pb2.ReportStatsRequest(agent_id=alice.agent_id, round=2, stats=stats[1:]),
    ]
    message = refused_unchanged(
        open_round,
        lambda: alice.stub.ReportStats(iter(messages), timeout=10, metadata=alice.metadata()),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "round" in message


def test_negative_rounds_are_invalid(open_round: OpenRound) -> None:
    message = refused_unchanged(
        open_round, lambda: open_round.alice.get_allocation(-1), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert message.startswith("round: must not be negative")


# ---- registration ------------------------------------------------------------------------
def test_registration_with_another_pool_fingerprint_fails_precondition(
    open_round: OpenRound,
) -> None:
    message = refused_unchanged(
        open_round,
        lambda: AgentClient(open_round.address).register("other-pool", 5, "0" * 64),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert message.startswith("pool_fingerprint:")


def test_registering_a_taken_name_already_exists(
    open_round: OpenRound, test_pool_fingerprint: str
) -> None:
    message = refused_unchanged(
        open_round,
        lambda: AgentClient(open_round.address).register("agent-0", 5, test_pool_fingerprint),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert message.startswith("name:")


@pytest.mark.parametrize("capacity", [0, -3])
def test_registration_without_positive_capacity_is_invalid(
    open_round: OpenRound, test_pool_fingerprint: str, capacity: int
) -> None:
    message = refused_unchanged(
        open_round,
        lambda: AgentClient(open_round.address).register("cap", capacity, test_pool_fingerprint),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert message == f"capacity: must be positive, got {capacity}"


# ---- contributions and revocation ----------------------------------------------------------
def test_contributions_for_unknown_samples_are_invalid(open_round: OpenRound) -> None:
    message = refused_unchanged(
        open_round,
        lambda: open_round.alice.contribute_paths(1, [("syn-nope", "1+1=2\n#### 2")]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert message == "paths.sample_id: unknown sample IDs: syn-nope"


def test_a_revoked_agent_is_unauthenticated_afterwards(
    open_round: OpenRound, test_pool_fingerprint: str
) -> None:
    extra = AgentClient(open_round.address)
    extra.register("to-revoke", 5, test_pool_fingerprint)
    extra.heartbeat()
    with OperatorClient(open_round.address, OPERATOR_TOKEN) as operator:
        operator.revoke(extra.agent_id)
        status = {a["agent_id"]: a["status"] for a in operator.agents()}
    assert status[extra.agent_id] == "REVOKED"
    message = refused(extra.heartbeat, grpc.StatusCode.UNAUTHENTICATED)
    assert "REVOKED" in message
