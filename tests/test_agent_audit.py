"""The audit log: every outgoing message recorded by the client interceptor, over real gRPC."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from lada.config import ServerConfig
from lada.server import RunningServer, ServiceBinding, start_server
from lada.v1 import agent_pb2, agent_pb2_grpc, allocator_pb2
from slm_agent.agent import StatusBoard
from slm_agent.audit import (
    AuditInterceptor,
    AuditLog,
    AuditRecord,
    audited_channel,
    populated_fields,
    render_table,
)
from slm_agent.clients import GrpcAllocator
from slm_agent.rounds import PathStat, SampleStat
from slm_agent.service import AgentServicer
from tests.procs import REPO_ROOT


@pytest.fixture
def audit_log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.jsonl")


@pytest.fixture
def agent_service(audit_log: AuditLog) -> Iterator[tuple[RunningServer, StatusBoard]]:
    """The real lada.v1.Agent service, in-process, on a free port."""
    status = StatusBoard("clinic-a")
    binding = ServiceBinding(
        agent_pb2_grpc.add_AgentServicer_to_server,
        AgentServicer(status, audit_log),
        "lada.v1.Agent",
    )
    running = start_server("agent", [binding], ServerConfig(port=0, metrics_port=-1))
    yield running, status
    running.stop()


@pytest.fixture
def report_sink() -> Iterator[tuple[str, list[allocator_pb2.ReportStatsRequest]]]:
    """A gRPC server that accepts ReportStats streams and keeps what arrived."""
    received: list[allocator_pb2.ReportStatsRequest] = []

    def report(requests: Iterator[allocator_pb2.ReportStatsRequest], _context: object) -> object:
        received.extend(requests)
        return allocator_pb2.ReportStatsResponse(accepted=sum(len(r.stats) for r in received))

    handler = grpc.method_handlers_generic_handler(
        "lada.v1.Allocator",
        {
            "ReportStats": grpc.stream_unary_rpc_method_handler(
                report,
                request_deserializer=allocator_pb2.ReportStatsRequest.FromString,
                response_serializer=allocator_pb2.ReportStatsResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", received
    server.stop(0)


def stats(count: int) -> list[SampleStat]:
    return [
        SampleStat(f"syn-{i:04d}", [PathStat(-0.5, True, -1.5, -1.25)], False, True)
        for i in range(count)
    ]


def test_a_unary_request_is_recorded_with_rpc_target_round_bytes_and_fields(
    agent_service: tuple[RunningServer, StatusBoard], audit_log: AuditLog
) -> None:
    target = f"127.0.0.1:{agent_service[0].port}"
    with audited_channel(target, audit_log) as channel:
        agent_pb2_grpc.AgentStub(channel).GetAuditLog(agent_pb2.GetAuditLogRequest(round=3))
    (record,) = audit_log.read()
    assert record.rpc == "/lada.v1.Agent/GetAuditLog"
    assert record.target == target
    assert record.round == 3
    assert record.bytes == len(agent_pb2.GetAuditLogRequest(round=3).SerializeToString()) == 2
    assert record.field_names == ["round"]


def test_every_message_of_a_client_stream_is_recorded(
    report_sink: tuple[str, list[allocator_pb2.ReportStatsRequest]], audit_log: AuditLog
) -> None:
    target, received = report_sink
    with audited_channel(target, audit_log) as channel:
        allocator = GrpcAllocator(channel)
        allocator.use_identity("agent-1", "secret")
        assert allocator.report_stats(2, stats(40)) == (40, 0)
    records = audit_log.read()
    assert [r.rpc for r in records] == ["/lada.v1.Allocator/ReportStats"] * 2  # 32 + 8 samples
    assert [r.bytes for r in records] == [m.ByteSize() for m in received]
    assert all(r.round == 2 for r in records)
    assert records[0].field_names == [
        "agent_id",
        "round",
        "stats",
        "stats.sample_id",
        "stats.paths",
        "stats.paths.llm_normalized_logprob",
        "stats.paths.correct",
        "stats.paths.slm_normalized_logprob_before",
        "stats.paths.slm_normalized_logprob_after",
        "stats.correct_after",
    ]


def test_a_message_without_a_round_field_takes_the_agents_current_round(
    agent_service: tuple[RunningServer, StatusBoard], audit_log: AuditLog
) -> None:
    target = f"127.0.0.1:{agent_service[0].port}"
    with audited_channel(target, audit_log, current_round=lambda: 5) as channel:
        agent_pb2_grpc.AgentStub(channel).GetAgentStatus(agent_pb2.GetAgentStatusRequest())
    (record,) = audit_log.read()
    assert (record.round, record.bytes, record.field_names) == (5, 0, [])


def test_capture_mode_writes_the_raw_bytes_and_metadata_that_left(
    agent_service: tuple[RunningServer, StatusBoard], audit_log: AuditLog, tmp_path: Path
) -> None:
    capture = tmp_path / "capture.bin"
    base = grpc.insecure_channel(f"127.0.0.1:{agent_service[0].port}")
    interceptor = AuditInterceptor(audit_log, "agent", capture=capture)
    with grpc.intercept_channel(base, interceptor) as channel:
        agent_pb2_grpc.AgentStub(channel).GetAuditLog(
            agent_pb2.GetAuditLogRequest(round=7), metadata=[("x-note", "hello")]
        )
    blob = capture.read_bytes()
    assert agent_pb2.GetAuditLogRequest(round=7).SerializeToString() in blob
    assert b"/lada.v1.Agent/GetAuditLog" in blob and b"x-note=hello" in blob


def test_populated_fields_walk_nested_and_repeated_messages() -> None:
    message = allocator_pb2.ContributePathsRequest(
        agent_id="a", paths=[allocator_pb2.ContributedPath(sample_id="s", text="t")]
    )
    assert populated_fields(message) == ["agent_id", "paths", "paths.sample_id", "paths.text"]


def test_reading_filters_by_round_and_skips_a_line_torn_by_a_crash(audit_log: AuditLog) -> None:
    for r in (1, 2, 2):
        audit_log.append(AuditRecord(1000, "/x/Y", "h:1", r, 10 * r, ["round"]))
    with open(audit_log.path, "a") as handle:
        handle.write('{"timestamp_unix_ms": 12, "rpc": "/x/')
    assert [r.bytes for r in audit_log.read(2)] == [20, 20]
    assert len(audit_log.read()) == 3
    assert audit_log.bytes_sent() == 50


def test_render_table_lists_each_message_and_the_total() -> None:
    records = [
        AuditRecord(0, "/lada.v1.Allocator/Heartbeat", "127.0.0.1:1", 1, 12, ["agent_id"]),
        AuditRecord(0, "/lada.v1.Allocator/ReportStats", "127.0.0.1:1", 1, 300, ["stats"]),
    ]
    table = render_table(records)
    assert "/lada.v1.Allocator/ReportStats" in table and "agent_id" in table
    assert table.splitlines()[-1] == "2 messages, 312 bytes"
    assert render_table([]) == "no messages have left this agent"


def test_agent_service_serves_the_audit_log_and_the_byte_total(
    agent_service: tuple[RunningServer, StatusBoard], audit_log: AuditLog
) -> None:
    running, status = agent_service
    audit_log.append(AuditRecord(5, "/lada.v1.Allocator/Heartbeat", "a:1", 1, 14, ["agent_id"]))
    audit_log.append(AuditRecord(6, "/lada.v1.Allocator/ReportStats", "a:1", 2, 99, ["stats"]))
    status.update(agent_id="agent-7", last_reported_round=2, activity="waiting")
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        log_reply = stub.GetAuditLog(agent_pb2.GetAuditLogRequest(round=2))
        status_reply = stub.GetAgentStatus(agent_pb2.GetAgentStatusRequest())
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetAuditLog(agent_pb2.GetAuditLogRequest(round=-1))
    assert [(r.rpc, r.bytes, list(r.field_names)) for r in log_reply.records] == [
        ("/lada.v1.Allocator/ReportStats", 99, ["stats"])
    ]
    assert (status_reply.agent_id, status_reply.name, status_reply.bytes_sent) == (
        "agent-7",
        "clinic-a",
        113,
    )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "round" in (refused.value.details() or "")


def test_lada_agent_audit_prints_the_log_as_json(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(AuditRecord(5, "/lada.v1.Allocator/Heartbeat", "a:1", 1, 14, ["agent_id"]))
    log.append(AuditRecord(6, "/lada.v1.Allocator/ReportStats", "a:1", 2, 99, ["stats"]))
    result = subprocess.run(
        [sys.executable, "-m", "lada.cli", "agent", "audit", "--state-dir", str(tmp_path),
         "--round", "2", "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(result.stdout) == [
        {
            "timestamp_unix_ms": 6,
            "rpc": "/lada.v1.Allocator/ReportStats",
            "target": "a:1",
            "round": 2,
            "bytes": 99,
            "field_names": ["stats"],
        }
    ]
