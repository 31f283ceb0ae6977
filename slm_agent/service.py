"""The agent's own gRPC service (lada.v1.Agent): its status and its audit log, nothing private."""

from __future__ import annotations

import grpc

from lada.v1 import agent_pb2, agent_pb2_grpc
from slm_agent.agent import StatusBoard
from slm_agent.audit import AuditLog


class AgentServicer(agent_pb2_grpc.AgentServicer):
    """Translates the status board and the audit log into lada.v1 messages."""

    def __init__(self, status: StatusBoard, audit: AuditLog) -> None:
        self.status = status
        self.audit = audit

    def GetAgentStatus(
        self, request: agent_pb2.GetAgentStatusRequest, context: grpc.ServicerContext
    ) -> agent_pb2.GetAgentStatusResponse:
        view = self.status.snapshot()
        return agent_pb2.GetAgentStatusResponse(
            agent_id=view.agent_id,
            name=view.name,
            last_reported_round=view.last_reported_round,
            activity=view.activity,
            last_accuracy=view.last_accuracy,
            bytes_sent=self.audit.bytes_sent(),
        )

    def GetAuditLog(
        self, request: agent_pb2.GetAuditLogRequest, context: grpc.ServicerContext
    ) -> agent_pb2.GetAuditLogResponse:
        if request.round < 0:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"round: must be >= 0, got {request.round}"
            )
        records = self.audit.read(int(request.round))
        return agent_pb2.GetAuditLogResponse(
            records=[
                agent_pb2.AuditRecord(
                    timestamp_unix_ms=r.timestamp_unix_ms,
                    rpc=r.rpc,
                    target=r.target,
                    round=r.round,
                    bytes=r.bytes,
                    field_names=r.field_names,
                )
                for r in records
            ]
        )
