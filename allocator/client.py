"""Typed clients of the Allocator: `AgentClient` for SLM agents, `OperatorClient` for the
`lada status` / `lada allocation` / `lada agent revoke` commands, and their text renderers.
Every call carries a deadline and, when there is one, `authorization: Bearer <token>`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import numpy as np

from lada.config import MAX_MESSAGE_BYTES
from lada.learnability import ClusterModel
from lada.v1 import allocator_pb2, allocator_pb2_grpc, common_pb2

DEFAULT_TIMEOUT_S = 30.0
REPORT_BATCH = 5000


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    if credentials is not None:
        return grpc.secure_channel(address, credentials, options=options)
    return grpc.insecure_channel(address, options=options)


class _Client:
    def __init__(
        self,
        address: str,
        token: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.address = address
        self.token = token
        self.timeout_s = timeout_s
        self.channel = _channel(address, credentials)
        self.stub = allocator_pb2_grpc.AllocatorStub(self.channel)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass
class Registration:
    agent_id: str
    token: str
    first_round: int
    resumed: bool = False


def phase_name(value: int) -> str:
    name = common_pb2.RoundPhase.Name(value)
    return name.removeprefix("ROUND_PHASE_")


# The phases an agent subscribes to: ALLOCATED (work the round) and CLOSED (give up on a round
# it missed; the run's end is a CLOSED). OPEN, TRAINING and REPORTED would cost the allocator a
# write to every agent each for nothing (docs/bench/load.md, "phase filter").
WATCHED_PHASES = ("ALLOCATED", "CLOSED")


def phase_values(names: Iterable[str]) -> list[int]:
    """Phase names ("ALLOCATED") as lada.v1.RoundPhase values."""
    return [common_pb2.RoundPhase.Value(f"ROUND_PHASE_{name}") for name in names]


class AgentClient(_Client):
    """The agent's side: register, follow rounds, fetch allocations, report, contribute."""

    agent_id: str = ""
    enrollment_secret: str = ""

    def register(
        self,
        name: str,
        capacity: int,
        pool_fingerprint: str,
        model_description: str = "",
        tokenizer_name: str = "",
        domain_tags: Sequence[str] = (),
        enrollment_secret: str = "",
    ) -> Registration:
        """Register with an invitation's secret (none given: a random one of this client's,
        which an allocator in open enrollment accepts). Calling again with the same secret
        is safe: the same agent, a fresh token. The token is kept for later calls."""
        self.enrollment_secret = (
            enrollment_secret or self.enrollment_secret or secrets.token_urlsafe(24)
        )
        reply = self.stub.RegisterAgent(
            allocator_pb2.RegisterAgentRequest(
                name=name,
                model_description=model_description,
                tokenizer_name=tokenizer_name,
                domain_tags=list(domain_tags),
                capacity=capacity,
                pool_fingerprint=pool_fingerprint,
                enrollment_secret=self.enrollment_secret,
            ),
            timeout=self.timeout_s,
        )
        self.agent_id, self.token = reply.agent_id, reply.token
        return Registration(reply.agent_id, reply.token, reply.first_round, reply.resumed)

    def use_identity(self, agent_id: str, token: str) -> None:
        """Resume as an agent registered earlier (e.g. after a crash)."""
        self.agent_id, self.token = agent_id, token

    def heartbeat(self) -> allocator_pb2.HeartbeatResponse:
        return self.stub.Heartbeat(
            allocator_pb2.HeartbeatRequest(agent_id=self.agent_id),
            timeout=self.timeout_s,
            metadata=self.metadata(),
        )

    def deregister(self) -> None:
        self.stub.Deregister(
            allocator_pb2.DeregisterRequest(agent_id=self.agent_id),
            timeout=self.timeout_s,
            metadata=self.metadata(),
        )

    def get_allocation(self, round_number: int = 0) -> allocator_pb2.GetAllocationResponse:
        return self.stub.GetAllocation(
            allocator_pb2.GetAllocationRequest(agent_id=self.agent_id, round=round_number),
            timeout=self.timeout_s,
            metadata=self.metadata(),
        )

    def watch_rounds(
        self,
        from_round: int = 0,
        timeout_s: float | None = None,
        phases: Sequence[str] = (),
    ) -> Iterator[allocator_pb2.RoundEvent]:
        """Round events as they happen; the stream ends after `run_finished` (or the deadline).

        The deadline defaults to a day: a watch lives as long as the run. `phases` (names,
        e.g. "ALLOCATED"): only those, and the run's end; empty: every phase.
        """
        request = allocator_pb2.WatchRoundsRequest(
            agent_id=self.agent_id, from_round=from_round, phases=phase_values(phases)
        )
        return self.stub.WatchRounds(
            request,
            timeout=timeout_s or 86_400.0,
            metadata=self.metadata(),
        )

    def report_stats(
        self,
        round_number: int,
        stats: Iterable[allocator_pb2.SampleStats],
        batch_size: int = REPORT_BATCH,
    ) -> allocator_pb2.ReportStatsResponse:
        """Stream statistics in batches; the allocator applies the whole stream or none of it."""
        return self.stub.ReportStats(
            _batches(self.agent_id, round_number, stats, batch_size),
            timeout=self.timeout_s,
            metadata=self.metadata(),
        )

    def contribute_paths(
        self, round_number: int, paths: Sequence[tuple[str, str]]
    ) -> allocator_pb2.ContributePathsResponse:
        return self.stub.ContributePaths(
            allocator_pb2.ContributePathsRequest(
                agent_id=self.agent_id,
                round=round_number,
                paths=[allocator_pb2.ContributedPath(sample_id=s, text=t) for s, t in paths],
            ),
            timeout=self.timeout_s,
            metadata=self.metadata(),
        )

    def get_cluster_model(self) -> ClusterModel:
        """The public clustering, to assign private texts to clusters locally."""
        reply = self.stub.GetClusterModel(
            allocator_pb2.GetClusterModelRequest(),
            timeout=self.timeout_s,
            metadata=self.metadata(),
        )
        return cluster_model_from_message(reply)


def _batches(
    agent_id: str, round_number: int, stats: Iterable[allocator_pb2.SampleStats], size: int
) -> Iterator[allocator_pb2.ReportStatsRequest]:
    batch: list[allocator_pb2.SampleStats] = []
    sent = False
    for sample in stats:
        batch.append(sample)
        if len(batch) >= size:
            yield allocator_pb2.ReportStatsRequest(
                agent_id=agent_id, round=round_number, stats=batch
            )
            batch, sent = [], True
    if batch or not sent:
        yield allocator_pb2.ReportStatsRequest(agent_id=agent_id, round=round_number, stats=batch)


def cluster_model_from_message(reply: allocator_pb2.GetClusterModelResponse) -> ClusterModel:
    centroids = np.asarray(reply.centroids, float).reshape(reply.num_clusters, reply.feature_count)
    return ClusterModel(
        vocabulary=list(reply.vocabulary),
        idf=np.asarray(reply.idf, float),
        domains=list(reply.domains),
        centroids=centroids,
        pool_share=np.asarray(reply.cluster_pool_share, float),
        domain_weight=reply.domain_feature_weight,
        difficulty_weight=reply.difficulty_feature_weight,
    )


class OperatorClient(_Client):
    """Operator queries; `operator_token` is sent when given."""

    def __init__(
        self,
        address: str,
        operator_token: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        super().__init__(address, operator_token, timeout_s, credentials)

    def _call(self, method: Any, request: Any) -> Any:
        return method(request, timeout=self.timeout_s, metadata=self.metadata())

    def status(self, round_number: int = 0) -> dict[str, Any]:
        reply = self._call(
            self.stub.GetRoundStatus, allocator_pb2.GetRoundStatusRequest(round=round_number)
        )
        return {
            "round": reply.round,
            "phase": phase_name(reply.phase),
            "deadline_unix_ms": reply.deadline_unix_ms,
            "policy": reply.policy,
            "total_rounds": reply.total_rounds,
            "pool_fingerprint": reply.pool_fingerprint,
            "pool_size": reply.pool_size,
            "contributions": {
                "accepted": reply.contributions.accepted,
                "rejected_incorrect": reply.contributions.rejected_incorrect,
                "rejected_unsound": reply.contributions.rejected_unsound,
                "rejected_over_cap": reply.contributions.rejected_over_cap,
            },
            "agents": [
                {
                    "agent_id": a.agent_id,
                    "name": a.name,
                    "state": allocator_pb2.AgentRoundState.Name(a.state).removeprefix(
                        "AGENT_ROUND_STATE_"
                    ),
                    "allocated": a.allocated,
                    "reported": a.reported,
                    "requested": a.contribution_requests,
                }
                for a in reply.agents
            ],
        }

    def agents(self) -> list[dict[str, Any]]:
        reply = self._call(self.stub.ListAgents, allocator_pb2.ListAgentsRequest())
        return [
            {
                "agent_id": a.agent_id,
                "name": a.name,
                "capacity": a.capacity,
                "first_round": a.first_round,
                "domain_tags": list(a.domain_tags),
                "status": allocator_pb2.AgentStatus.Name(a.status).removeprefix("AGENT_STATUS_"),
                "last_heartbeat_unix_ms": a.last_heartbeat_unix_ms,
            }
            for a in reply.agents
        ]

    def gaps(self, agent_id: str = "") -> list[dict[str, Any]]:
        reply = self._call(
            self.stub.GetLearnabilityGaps,
            allocator_pb2.GetLearnabilityGapsRequest(agent_id=agent_id),
        )
        return [
            {
                "agent_id": g.agent_id,
                "samples_with_gap": g.samples_with_gap,
                "band_quantiles": [g.band_low_quantile, g.band_high_quantile],
                "band_gaps": [g.band_low_gap, g.band_high_gap],
                "histogram_edges": list(g.histogram_edges),
                "histogram_counts": list(g.histogram_counts),
                "arms": [
                    {
                        "cluster": a.cluster,
                        "mean_reward": a.mean_reward,
                        "pulls": a.pulls,
                        "ucb_score": a.ucb_score,
                    }
                    for a in g.arms
                ],
            }
            for g in reply.agents
        ]

    def allocation(self, agent_id: str = "", round_number: int = 0) -> dict[str, Any]:
        """Gaps, bands and arms per agent, with each agent's allocation in the round (the
        sample IDs themselves only when an operator token lets us read them)."""
        status = self.status(round_number)
        progress = {a["agent_id"]: a for a in status["agents"]}
        entries = []
        for entry in self.gaps(agent_id):
            row = progress.get(entry["agent_id"], {})
            entry["allocated"] = row.get("allocated", 0)
            entry["reported"] = row.get("reported", 0)
            entry["requested"] = row.get("requested", 0)
            entry["state"] = row.get("state", "")
            if self.token and row:
                reply = self._call(
                    self.stub.GetAllocation,
                    allocator_pb2.GetAllocationRequest(
                        agent_id=entry["agent_id"], round=status["round"]
                    ),
                )
                entry["samples"] = [
                    {"sample_id": s.sample_id, "cluster": s.cluster, "scan_only": s.scan_only}
                    for s in reply.samples
                ]
                entry["contribution_requests"] = list(reply.contribution_requests)
            entries.append(entry)
        return {"round": status["round"], "policy": status["policy"], "agents": entries}

    def revoke(self, agent_id: str) -> None:
        self._call(self.stub.RevokeAgent, allocator_pb2.RevokeAgentRequest(agent_id=agent_id))

    def invite(self, name: str, expires_in_s: int = 0) -> allocator_pb2.InviteAgentResponse:
        """A one-time enrollment secret for the agent `name` (shown only in this reply)."""
        return self._call(
            self.stub.InviteAgent,
            allocator_pb2.InviteAgentRequest(name=name, expires_in_s=expires_in_s),
        )

    def invitations(self) -> list[dict[str, Any]]:
        reply = self._call(self.stub.ListInvitations, allocator_pb2.ListInvitationsRequest())
        return [
            {
                "invitation_id": i.invitation_id,
                "name": i.name,
                "state": allocator_pb2.InvitationState.Name(i.state).removeprefix(
                    "INVITATION_STATE_"
                ),
                "created_unix_ms": i.created_unix_ms,
                "expires_unix_ms": i.expires_unix_ms,
                "agent_id": i.agent_id,
                "open_enrollment": i.open_enrollment,
            }
            for i in reply.invitations
        ]

    def revoke_invitation(self, invitation_id: str) -> None:
        self._call(
            self.stub.RevokeInvitation,
            allocator_pb2.RevokeInvitationRequest(invitation_id=invitation_id),
        )

    def set_total_rounds(self, total_rounds: int) -> allocator_pb2.SetTotalRoundsResponse:
        return self._call(
            self.stub.SetTotalRounds, allocator_pb2.SetTotalRoundsRequest(total_rounds=total_rounds)
        )


# ---- rendering -----------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def render_status(status: dict[str, Any]) -> str:
    head = (
        f"round {status['round']}/{status['total_rounds'] or 'until stopped'}  "
        f"phase {status['phase'] or '-'}  policy {status['policy']}  pool {status['pool_size']} "
        f"({status['pool_fingerprint'][:12]})"
    )
    counts = status.get("contributions") or {}
    if any(counts.values()):
        head += (
            f"\ncontributions: {counts['accepted']} accepted, rejected "
            f"{counts['rejected_incorrect']} wrong answer, {counts['rejected_unsound']} unsound, "
            f"{counts['rejected_over_cap']} over the cap"
        )
    if not status["agents"]:
        return head + "\n(no participants)"
    rows = [
        (a["agent_id"], a["name"], a["state"], a["allocated"], a["reported"], a["requested"])
        for a in status["agents"]
    ]
    headers = ("agent", "name", "state", "allocated", "reported", "requested")
    return head + "\n" + _table(headers, rows)


def render_invitations(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(no invitations)"
    return _table(
        ("invitation", "name", "state", "expires", "agent"),
        [
            (
                r["invitation_id"],
                r["name"],
                r["state"] + (" (open)" if r["open_enrollment"] else ""),
                utc_text(r["expires_unix_ms"]) if r["expires_unix_ms"] else "never",
                r["agent_id"] or "-",
            )
            for r in rows
        ],
    )


def utc_text(unix_ms: int) -> str:
    """Unix milliseconds as a UTC minute, for tables."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix_ms / 1000))


def render_allocation(payload: dict[str, Any]) -> str:
    parts = [f"round {payload['round']}  policy {payload['policy']}"]
    for entry in payload["agents"]:
        low, high = entry["band_quantiles"]
        gap_low, gap_high = entry["band_gaps"]
        parts.append(
            f"\n{entry['agent_id']}  state {entry.get('state') or '-'}  "
            f"allocated {entry.get('allocated', 0)}  reported {entry.get('reported', 0)}  "
            f"requested {entry.get('requested', 0)}  "
            f"gaps known {entry['samples_with_gap']}  band q[{low:.2f}, {high:.2f}] = "
            f"gap[{gap_low:.3f}, {gap_high:.3f}]"
        )
        per_cluster: dict[int, int] = {}
        for sample in entry.get("samples", []):
            per_cluster[sample["cluster"]] = per_cluster.get(sample["cluster"], 0) + 1
        rows = [
            (
                arm["cluster"],
                arm["pulls"],
                f"{arm['mean_reward']:.4f}",
                f"{arm['ucb_score']:.4f}",
                per_cluster.get(arm["cluster"], "-" if "samples" not in entry else 0),
            )
            for arm in entry["arms"]
        ]
        parts.append(_table(("cluster", "pulls", "mean_reward", "ucb", "allocated"), rows))
    return "\n".join(parts)
