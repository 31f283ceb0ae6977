"""The audit log: every message that leaves the agent, recorded by a client interceptor.

Each outgoing request message (unary or streamed) becomes one JSON line in
`state_dir/audit.jsonl`: when, which RPC, to whom, for which round, how many bytes, and
which fields were populated. With a capture file (test mode) the raw serialized bytes
and metadata values are appended too, so a test can prove no private text left.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from lada.config import AGENT_CAPTURE_ENV as CAPTURE_ENV


@dataclass
class AuditRecord:
    """One message that left the agent (mirrors lada.v1.AuditRecord)."""

    timestamp_unix_ms: int
    rpc: str
    target: str
    round: int
    bytes: int
    field_names: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditRecord:
        return cls(**data)


class AuditLog:
    """Append-only JSONL file; safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: AuditRecord) -> None:
        line = (json.dumps(record.to_json(), separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def read(self, round_number: int = 0) -> list[AuditRecord]:
        """Records oldest first; only those of `round_number` unless it is 0."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = AuditRecord.from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # a line cut short by a crash: everything else still counts
            if round_number in (0, record.round):
                records.append(record)
        return records

    def bytes_sent(self) -> int:
        return sum(r.bytes for r in self.read())


def populated_fields(message: Message, prefix: str = "") -> list[str]:
    """Dotted paths of every populated field, nested messages included (order kept)."""
    seen: dict[str, None] = {}
    for descriptor, value in message.ListFields():
        path = f"{prefix}{descriptor.name}"
        seen[path] = None
        if descriptor.message_type is None:
            continue
        children = value if _is_repeated(descriptor) else [value]
        for child in children:
            for nested in populated_fields(child, path + "."):
                seen[nested] = None
    return list(seen)


def _is_repeated(descriptor: Any) -> bool:
    repeated = getattr(descriptor, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(descriptor.label == descriptor.LABEL_REPEATED)


class AuditInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Records every outgoing request message of one channel before it is sent."""

    def __init__(
        self,
        log: AuditLog,
        target: str,
        current_round: Callable[[], int] = lambda: 0,
        capture: Path | None = None,
    ) -> None:
        self.log = log
        self.target = target
        self.current_round = current_round
        capture_env = os.environ.get(CAPTURE_ENV)
        self.capture = capture or (Path(capture_env) if capture_env else None)
        self._capture_lock = threading.Lock()

    def record(self, method: str, message: Message, metadata: Any = None) -> None:
        payload = message.SerializeToString()
        round_number = getattr(message, "round", 0) or self.current_round()
        self.log.append(
            AuditRecord(
                timestamp_unix_ms=int(time.time() * 1000),
                rpc=method,
                target=self.target,
                round=int(round_number),
                bytes=len(payload),
                field_names=populated_fields(message),
            )
        )
        if self.capture is not None:
            self._capture(method, payload, metadata)

    def _capture(self, method: str, payload: bytes, metadata: Any) -> None:
        """Test mode: raw bytes of the message and metadata values, length-prefixed."""
        chunks = [method.encode(), payload]
        for key, value in metadata or ():
            chunks.append(
                f"{key}=".encode() + (value if isinstance(value, bytes) else value.encode())
            )
        blob = b"".join(len(c).to_bytes(4, "big") + c for c in chunks)
        with self._capture_lock, open(self.capture, "ab") as sink:  # type: ignore[arg-type]
            sink.write(blob)

    def _method(self, details: grpc.ClientCallDetails) -> str:
        method = details.method
        return method.decode() if isinstance(method, bytes) else str(method)

    def _recorded_stream(
        self, details: grpc.ClientCallDetails, requests: Iterator[Message]
    ) -> Iterator[Message]:
        method = self._method(details)
        for request in requests:
            self.record(method, request, details.metadata)
            yield request

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        self.record(self._method(client_call_details), request, client_call_details.metadata)
        return continuation(client_call_details, request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        self.record(self._method(client_call_details), request, client_call_details.metadata)
        return continuation(client_call_details, request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(
            client_call_details, self._recorded_stream(client_call_details, request_iterator)
        )

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(
            client_call_details, self._recorded_stream(client_call_details, request_iterator)
        )


def audited_channel(
    target: str,
    log: AuditLog,
    current_round: Callable[[], int] = lambda: 0,
    credentials: grpc.ChannelCredentials | None = None,
    options: list[tuple[str, Any]] | None = None,
) -> grpc.Channel:
    """A channel to `target` whose every outgoing message is audited."""
    base = (
        grpc.secure_channel(target, credentials, options=options)
        if credentials
        else grpc.insecure_channel(target, options=options)
    )
    return grpc.intercept_channel(base, AuditInterceptor(log, target, current_round))


def render_table(records: list[AuditRecord]) -> str:
    """A human-readable table of audit records plus a byte total."""
    if not records:
        return "no messages have left this agent"
    header = f"{'time (UTC)':<20} {'round':>5} {'bytes':>8}  {'rpc':<36} {'target':<21} fields"
    lines = [header, "-" * len(header)]
    for r in records:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.timestamp_unix_ms / 1000))
        fields_text = ",".join(r.field_names)
        lines.append(
            f"{stamp:<20} {r.round:>5} {r.bytes:>8}  {r.rpc:<36} {r.target:<21} {fields_text}"
        )
    lines.append(f"{len(records)} messages, {sum(r.bytes for r in records)} bytes")
    return "\n".join(lines)
