"""Property-based fuzzing of the allocator over real gRPC: random and malformed requests.

Whatever is sent, only clean status codes come back (never UNKNOWN, which would mean an
unhandled exception), the server stays SERVING, and a rejected request leaves Redis as it
was. Undecodable raw bytes are refused by grpcio itself before our code runs (INTERNAL,
"Exception deserializing request"); that is the one place INTERNAL is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from lada.v1 import allocator_pb2, allocator_pb2_grpc
from tests.fixtures_allocator import OPERATOR_TOKEN, allocator_run
from tests.fuzzing import CLEAN_CODES, fuzz_settings
from tests.procs import health_status

FUZZ = fuzz_settings(40)

texts = st.one_of(
    st.text(max_size=40),
    st.text(min_size=2000, max_size=5000),
    st.sampled_from(["", " ", "\x00", "agent-x", "../../etc/passwd"]),
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 1e308]),
)
ints = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1), st.sampled_from([0, -1, 2**31 - 1])
)
rounds = st.one_of(st.integers(min_value=-(2**62), max_value=2**62), st.sampled_from([0, 1, -1]))


@pytest.fixture(scope="module")
def fuzz_target(redis_handle, tmp_path_factory) -> Iterator[tuple]:
    """One allocator that never opens a round (min_agents is high) and one valid agent."""
    log_dir: Path = tmp_path_factory.mktemp("fuzz")
    with allocator_run(redis_handle, "fuzz-allocator", log_dir, min_agents=1000) as deployment:
        replica = deployment.replicas[0]
        agent = deployment.agent()
        fingerprint = deployment.store.run_info()["pool_fingerprint"]
        agent.register("fuzz-agent", 8, fingerprint)
        channel = grpc.insecure_channel(replica.address)
        yield deployment, allocator_pb2_grpc.AllocatorStub(channel), agent, replica
        channel.close()


def _call(method, request, metadata=()) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        method(request, timeout=20, metadata=metadata)
    except grpc.RpcError as exc:
        assert exc.code() in CLEAN_CODES, f"{exc.code()}: {exc.details()}"
        return exc.code()
    return grpc.StatusCode.OK


def _assert_rejection_changed_nothing(deployment, before, code: grpc.StatusCode) -> None:  # type: ignore[no-untyped-def]
    if code is not grpc.StatusCode.OK:
        assert deployment.store.snapshot() == before


def _auth(agent) -> tuple:  # type: ignore[no-untyped-def]
    return (("authorization", f"Bearer {agent.token}"),)


@FUZZ
@given(name=texts, capacity=ints, fingerprint=texts, tags=st.lists(texts, max_size=5))
def test_register_agent_with_random_fields(fuzz_target, name, capacity, fingerprint, tags) -> None:
    deployment, stub, _agent, replica = fuzz_target
    before = deployment.store.snapshot()
    request = allocator_pb2.RegisterAgentRequest(
        name=name, capacity=capacity, pool_fingerprint=fingerprint, domain_tags=tags
    )
    code = _call(stub.RegisterAgent, request)
    assert code is not grpc.StatusCode.OK  # a random fingerprint never matches the pool
    _assert_rejection_changed_nothing(deployment, before, code)
    assert health_status(replica.address) == "SERVING"


@FUZZ
@given(
    agent_id=texts,
    round_number=rounds,
    sample_ids=st.lists(texts, max_size=6),
    nlp=numbers,
    with_token=st.booleans(),
)
def test_report_stats_with_random_fields(
    fuzz_target, agent_id, round_number, sample_ids, nlp, with_token
) -> None:
    deployment, stub, agent, replica = fuzz_target
    before = deployment.store.snapshot()
    stats = [
        allocator_pb2.SampleStats(
            sample_id=s,
            paths=[
                allocator_pb2.PathStats(
                    llm_normalized_logprob=nlp, slm_normalized_logprob_before=nlp
                )
            ],
        )
        for s in sample_ids
    ]
    requests = iter(
        [
            allocator_pb2.ReportStatsRequest(
                agent_id=agent_id or agent.agent_id, round=round_number, stats=stats
            )
        ]
    )
    code = _call(stub.ReportStats, requests, _auth(agent) if with_token else ())
    assert code is not grpc.StatusCode.OK or not sample_ids
    _assert_rejection_changed_nothing(deployment, before, code)
    assert health_status(replica.address) == "SERVING"


@FUZZ
@given(round_number=rounds, paths=st.lists(st.tuples(texts, texts), max_size=4))
def test_contribute_paths_with_random_fields(fuzz_target, round_number, paths) -> None:
    deployment, stub, agent, replica = fuzz_target
    before = deployment.store.snapshot()
    request = allocator_pb2.ContributePathsRequest(
        agent_id=agent.agent_id,
        round=round_number,
        paths=[allocator_pb2.ContributedPath(sample_id=s, text=t) for s, t in paths],
    )
    code = _call(stub.ContributePaths, request, _auth(agent))
    _assert_rejection_changed_nothing(deployment, before, code)
    assert health_status(replica.address) == "SERVING"


@FUZZ
@given(agent_id=texts, round_number=rounds, token=texts)
def test_agent_queries_with_random_identity(fuzz_target, agent_id, round_number, token) -> None:
    deployment, stub, _agent, replica = fuzz_target
    before = deployment.store.snapshot()
    metadata = (
        (("authorization", f"Bearer {token}"),) if token.isascii() and token.isprintable() else ()
    )
    for method, request in (
        (
            stub.GetAllocation,
            allocator_pb2.GetAllocationRequest(agent_id=agent_id, round=round_number),
        ),
        (stub.Heartbeat, allocator_pb2.HeartbeatRequest(agent_id=agent_id)),
        (stub.Deregister, allocator_pb2.DeregisterRequest(agent_id=agent_id)),
    ):
        code = _call(method, request, metadata)
        assert code is not grpc.StatusCode.OK
    assert deployment.store.snapshot() == before
    assert health_status(replica.address) == "SERVING"


@pytest.fixture(scope="module")
def invitation_target(redis_handle, tmp_path_factory) -> Iterator[tuple]:
    """An allocator that admits invited agents only, with one pending invitation."""
    log_dir: Path = tmp_path_factory.mktemp("fuzz-invite")
    with allocator_run(
        redis_handle, "fuzz-invitations", log_dir, min_agents=1000, open_enrollment=False
    ) as deployment:
        replica = deployment.replicas[0]
        fingerprint = deployment.store.run_info()["pool_fingerprint"]
        with deployment.operator() as operator:
            secret = operator.invite(INVITED).enrollment_secret
        channel = grpc.insecure_channel(replica.address)
        yield deployment, allocator_pb2_grpc.AllocatorStub(channel), replica, fingerprint, secret
        channel.close()


INVITED = "invited-org"


@FUZZ
@given(name=texts, secret=texts, use_invitation=st.booleans())
def test_register_agent_without_a_matching_invitation_changes_nothing(
    invitation_target, name, secret, use_invitation
) -> None:
    deployment, stub, replica, fingerprint, real_secret = invitation_target
    assume(name != INVITED)
    before = deployment.store.snapshot()
    request = allocator_pb2.RegisterAgentRequest(
        name=name,
        capacity=4,
        pool_fingerprint=fingerprint,
        enrollment_secret=real_secret if use_invitation else secret,
    )
    code = _call(stub.RegisterAgent, request)
    assert code is not grpc.StatusCode.OK
    assert deployment.store.snapshot() == before
    assert health_status(replica.address) == "SERVING"


@FUZZ
@given(
    name=texts,
    expires=ints,
    invitation_id=texts,
    total_rounds=rounds,
    token=st.sampled_from(["", "wrong", OPERATOR_TOKEN]),
)
def test_invitation_rpcs_with_random_fields(
    invitation_target, name, expires, invitation_id, total_rounds, token
) -> None:
    deployment, stub, replica, _fingerprint, _secret = invitation_target
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    for method, request in (
        (stub.InviteAgent, allocator_pb2.InviteAgentRequest(name=name, expires_in_s=expires)),
        (
            stub.RevokeInvitation,
            allocator_pb2.RevokeInvitationRequest(invitation_id=invitation_id + "-x"),
        ),
        (stub.SetTotalRounds, allocator_pb2.SetTotalRoundsRequest(total_rounds=total_rounds)),
    ):
        before = deployment.store.snapshot()
        code = _call(method, request, metadata)
        if token != OPERATOR_TOKEN:
            assert code is grpc.StatusCode.UNAUTHENTICATED
        _assert_rejection_changed_nothing(deployment, before, code)
    assert health_status(replica.address) == "SERVING"


@FUZZ
@given(round_number=rounds, agent_id=texts)
def test_operator_queries_with_random_fields(fuzz_target, round_number, agent_id) -> None:
    deployment, stub, _agent, replica = fuzz_target
    metadata = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
    _call(stub.GetRoundStatus, allocator_pb2.GetRoundStatusRequest(round=round_number), metadata)
    _call(
        stub.GetLearnabilityGaps,
        allocator_pb2.GetLearnabilityGapsRequest(agent_id=agent_id),
        metadata,
    )
    before = deployment.store.snapshot()
    code = _call(
        stub.RevokeAgent, allocator_pb2.RevokeAgentRequest(agent_id=agent_id + "-x"), metadata
    )
    _assert_rejection_changed_nothing(deployment, before, code)
    assert health_status(replica.address) == "SERVING"


@FUZZ
@given(
    payload=st.binary(max_size=256),
    method=st.sampled_from(
        ["RegisterAgent", "GetAllocation", "Heartbeat", "ContributePaths", "GetRoundStatus"]
    ),
)
def test_raw_bytes_never_crash_the_server(fuzz_target, payload, method) -> None:
    deployment, _stub, _agent, replica = fuzz_target
    before = deployment.store.snapshot()
    with grpc.insecure_channel(replica.address) as channel:
        call = channel.unary_unary(
            f"/lada.v1.Allocator/{method}",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        try:
            call(payload, timeout=20)
        except grpc.RpcError as exc:
            assert exc.code() in CLEAN_CODES | {grpc.StatusCode.INTERNAL}, exc.details()
            if exc.code() is grpc.StatusCode.INTERNAL:
                assert "deserializ" in (exc.details() or "").lower()
    if method != "GetRoundStatus":
        assert deployment.store.snapshot() == before
    assert health_status(replica.address) == "SERVING"
