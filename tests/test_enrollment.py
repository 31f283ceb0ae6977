"""Joining a federation, over real gRPC and Redis: only invited agents get in, a retried
registration returns the same agent, the run's length decides who can still join, and
contributed paths are checked before they can reach the LLM."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from allocator.client import AgentClient, OperatorClient, Registration
from lada.state import hash_token
from lada.v1 import allocator_pb2
from tests.fixtures_allocator import (
    OPERATOR_TOKEN,
    AllocatorDeployment,
    finish_one_round_run,
    synthetic_stats,
    wait_for,
    wait_phase,
)

Deploy = Callable[..., AllocatorDeployment]


def invitations_only(allocator_deployment: Deploy, **overrides: Any) -> AllocatorDeployment:
    return allocator_deployment(open_enrollment=False, **overrides)


def refused_unchanged(
    deployment: AllocatorDeployment, call: Callable[[], Any], code: grpc.StatusCode
) -> str:
    """A call that must fail with `code` and leave the run's Redis state as it was."""
    before = deployment.store.snapshot()
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() is code, error.value.details()
    assert deployment.store.snapshot() == before
    return str(error.value.details())


def invite(deployment: AllocatorDeployment, name: str, expires_in_s: int = 0) -> str:
    with deployment.operator() as operator:
        return operator.invite(name, expires_in_s).enrollment_secret


def register(
    deployment: AllocatorDeployment, name: str, secret: str, fingerprint: str
) -> tuple[AgentClient, Registration]:
    client = AgentClient(deployment.replicas[0].address)
    return client, client.register(name, 4, fingerprint, enrollment_secret=secret)


def _request(name: str, secret: str, fingerprint: str) -> allocator_pb2.RegisterAgentRequest:
    return allocator_pb2.RegisterAgentRequest(
        name=name, capacity=4, pool_fingerprint=fingerprint, enrollment_secret=secret
    )


# ---- invitations -------------------------------------------------------------------------
def test_an_invited_agent_joins_and_only_the_secrets_hash_is_stored(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = invitations_only(allocator_deployment)
    secret = invite(deployment, "clinic-a")
    client, registration = register(deployment, "clinic-a", secret, test_pool_fingerprint)
    client.heartbeat()
    raw = repr(deployment.store.snapshot()).encode()
    assert secret.encode() not in raw and registration.token.encode() not in raw
    assert hash_token(secret).encode() in raw
    with deployment.operator() as operator:
        (row,) = operator.invitations()
    assert (row["name"], row["state"], row["agent_id"]) == (
        "clinic-a",
        "USED",
        registration.agent_id,
    )


def test_registering_without_a_secret_is_unauthenticated_and_changes_nothing(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = invitations_only(allocator_deployment)
    message = refused_unchanged(
        deployment,
        lambda: AgentClient(deployment.replicas[0].address).stub.RegisterAgent(
            _request("clinic-a", "", test_pool_fingerprint), timeout=10
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert message.startswith("enrollment_secret: required")


def test_a_wrong_secret_is_unauthenticated_and_changes_nothing(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = invitations_only(allocator_deployment)
    invite(deployment, "clinic-a")
    message = refused_unchanged(
        deployment,
        lambda: register(deployment, "clinic-a", "lada-inv-guessed", test_pool_fingerprint),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert message == "enrollment_secret: no invitation matches this secret"


def test_another_organisations_secret_is_permission_denied(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = invitations_only(allocator_deployment)
    secret = invite(deployment, "clinic-a")
    message = refused_unchanged(
        deployment,
        lambda: register(deployment, "clinic-b", secret, test_pool_fingerprint),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert message == "name: the invitation is for 'clinic-a', not 'clinic-b'"


def test_an_expired_invitation_is_unauthenticated(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = invitations_only(allocator_deployment)
    secret = invite(deployment, "clinic-a", expires_in_s=1)
    with deployment.operator() as operator:
        wait_for(lambda: operator.invitations()[0]["state"] == "EXPIRED", 5, "expiry")
    message = refused_unchanged(
        deployment,
        lambda: register(deployment, "clinic-a", secret, test_pool_fingerprint),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert message.startswith("enrollment_secret: the invitation for 'clinic-a' expired at")


def test_an_invitation_revoked_before_use_admits_nobody(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = invitations_only(allocator_deployment)
    secret = invite(deployment, "clinic-a")
    with deployment.operator() as operator:
        (row,) = operator.invitations()
        operator.revoke_invitation(row["invitation_id"])
        assert operator.invitations()[0]["state"] == "REVOKED"
    message = refused_unchanged(
        deployment,
        lambda: register(deployment, "clinic-a", secret, test_pool_fingerprint),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert message == "enrollment_secret: the invitation for 'clinic-a' was revoked"
    assert deployment.store.list_agents() == []


def test_inviting_needs_the_operator_token(allocator_deployment: Deploy) -> None:
    deployment = invitations_only(allocator_deployment)
    with OperatorClient(deployment.replicas[0].address, "not-the-token") as stranger:
        message = refused_unchanged(
            deployment, lambda: stranger.invite("me"), grpc.StatusCode.UNAUTHENTICATED
        )
    assert message.startswith("authorization:")


def test_an_allocator_without_an_operator_token_invites_nobody(
    allocator_deployment: Deploy,
) -> None:
    deployment = invitations_only(allocator_deployment, operator_token="")
    with OperatorClient(deployment.replicas[0].address) as anyone:
        message = refused_unchanged(
            deployment, lambda: anyone.invite("me"), grpc.StatusCode.PERMISSION_DENIED
        )
    assert "no operator token" in message


# ---- idempotent registration ---------------------------------------------------------------
def test_registering_again_with_the_same_secret_returns_the_same_agent_and_a_new_token(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = invitations_only(allocator_deployment)
    secret = invite(deployment, "clinic-a")
    first_client, first = register(deployment, "clinic-a", secret, test_pool_fingerprint)
    second_client, second = register(deployment, "clinic-a", secret, test_pool_fingerprint)
    assert second.agent_id == first.agent_id and second.resumed and not first.resumed
    assert second.first_round == first.first_round
    assert [a.agent_id for a in deployment.store.list_agents()] == [first.agent_id]
    second_client.heartbeat()
    with pytest.raises(grpc.RpcError) as error:
        first_client.heartbeat()  # the token of the lost reply no longer works
    assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_revoked_agent_cannot_come_back_through_its_invitation(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = invitations_only(allocator_deployment)
    secret = invite(deployment, "clinic-a")
    _, first = register(deployment, "clinic-a", secret, test_pool_fingerprint)
    with deployment.operator() as operator:
        operator.revoke(first.agent_id)
    message = refused_unchanged(
        deployment,
        lambda: register(deployment, "clinic-a", secret, test_pool_fingerprint),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert (
        message == f"enrollment_secret: the agent registered with it ({first.agent_id}) is REVOKED"
    )


def test_two_agents_racing_for_one_name_leave_one_agent(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = allocator_deployment()  # open enrollment: each racer brings its own secret
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def race(index: int) -> None:
        client = AgentClient(deployment.replicas[0].address)
        start.wait()
        try:
            client.register(
                "contested", 4, test_pool_fingerprint, enrollment_secret=f"racer-{index:012d}"
            )
            outcomes.append("OK")
        except grpc.RpcError as exc:
            outcomes.append(exc.code().name)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["ALREADY_EXISTS"] * 7 + ["OK"]
    assert [a.name for a in deployment.store.list_agents()] == ["contested"]


# ---- the run's length ----------------------------------------------------------------------
def test_joining_a_run_with_no_round_left_is_out_of_range_and_changes_nothing(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = allocator_deployment(rounds=1, min_agents=1)
    finish_one_round_run(deployment)
    message = refused_unchanged(
        deployment,
        lambda: AgentClient(deployment.replicas[0].address).register(
            "late", 4, test_pool_fingerprint
        ),
        grpc.StatusCode.OUT_OF_RANGE,
    )
    assert message == (
        "round: the run has no round left for a new agent: finished, last round 1 "
        "(an operator can extend it: lada run extend --rounds N)"
    )


def test_an_operator_extends_the_run_so_a_late_organisation_joins(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = allocator_deployment(rounds=1, min_agents=1)
    early = AgentClient(deployment.replicas[0].address)
    early.register("early", 4, test_pool_fingerprint)
    with deployment.operator() as operator:
        wait_phase(operator, 1, "ALLOCATED")
        late = AgentClient(deployment.replicas[0].address)
        with pytest.raises(grpc.RpcError) as error:
            late.register("late", 4, test_pool_fingerprint)
        assert error.value.code() is grpc.StatusCode.OUT_OF_RANGE
        reply = operator.set_total_rounds(2)
        assert (reply.total_rounds, reply.current_round) == (2, 1)
        joined = late.register("late", 4, test_pool_fingerprint)
        assert joined.first_round == 2
        early.report_stats(1, synthetic_stats(early.get_allocation(1).samples))
        wait_phase(operator, 2, "ALLOCATED")
        assert {a["name"] for a in operator.status(2)["agents"]} == {"early", "late"}


def test_a_finished_run_cannot_be_extended(
    allocator_deployment: Deploy, test_pool_fingerprint: str
) -> None:
    deployment = allocator_deployment(rounds=1, min_agents=1)
    finish_one_round_run(deployment)
    with OperatorClient(deployment.replicas[0].address, OPERATOR_TOKEN) as operator:
        message = refused_unchanged(
            deployment, lambda: operator.set_total_rounds(5), grpc.StatusCode.FAILED_PRECONDITION
        )
    assert message == "total_rounds: the run has finished; start a new run"
