"""Per-caller rate limits for every gRPC service (RESOURCE_EXHAUSTED when exceeded).

The caller is the bearer token's hash when present (one agent, wherever it connects
from), else the peer address. A token bucket per caller; buckets idle for a minute go.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass
class Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Thread-safe token buckets: `rate` per second, up to `burst` at once."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key) or Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            self._buckets[key] = bucket
            if len(self._buckets) > 10_000:
                self._forget_idle(now)
            if bucket.tokens < 1.0:
                return False
            bucket.tokens -= 1.0
            return True

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if now - b.updated > 60]:
            del self._buckets[key]


def caller_key(metadata: tuple[tuple[str, str | bytes], ...] | None, peer: str) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            token = value.decode() if isinstance(value, bytes) else value
            return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    host = peer.rsplit(":", 1)[0] if peer else "unknown"
    return "peer:" + host


class _RateLimit:
    """The decision both servers' interceptors take: health checks and reflection are exempt."""

    EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

    def __init__(self, rate: float, burst: float) -> None:
        self.buckets = TokenBuckets(rate, burst)
        self.message = f"rate limit: at most {rate:g} RPCs/s per caller (burst {burst:g})"

    def allows(self, handler_call_details: grpc.HandlerCallDetails) -> bool:
        method = handler_call_details.method
        if method.startswith(self.EXEMPT_PREFIXES):
            return True
        # The peer is not in handler_call_details; token-less callers share one bucket.
        return self.buckets.allow(caller_key(handler_call_details.invocation_metadata, ""))


class RateLimitInterceptor(_RateLimit, grpc.ServerInterceptor):
    """Refuses RPCs beyond `rate` per second per caller (threaded server)."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        allowed = self.allows(handler_call_details)
        handler = continuation(handler_call_details)
        if allowed or handler is None:
            return handler
        return _matching_abort(handler, *_aborting(self.message))


class AioRateLimitInterceptor(_RateLimit, grpc.aio.ServerInterceptor):
    """Refuses RPCs beyond `rate` per second per caller (grpc.aio server)."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        allowed = self.allows(handler_call_details)
        handler = await continuation(handler_call_details)
        if allowed or handler is None:
            return handler
        return self.refusing(handler)

    def refusing(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """A handler of `handler`'s shape that refuses with RESOURCE_EXHAUSTED (the aio
        server's one interceptor uses it, lada.server)."""
        return _matching_abort(handler, *_aborting_aio(self.message))


def _aborting(message: str) -> tuple[Any, Any]:
    """A unary and a streaming behaviour that refuse with RESOURCE_EXHAUSTED."""

    def unary(request, context):  # type: ignore[no-untyped-def]
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def streaming(request, context):  # type: ignore[no-untyped-def]
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        yield  # pragma: no cover

    return unary, streaming


def _aborting_aio(message: str) -> tuple[Any, Any]:
    """_aborting for the aio server: coroutines that await the abort."""

    async def unary(request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    async def streaming(request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        yield  # pragma: no cover

    return unary, streaming


def _matching_abort(
    handler: grpc.RpcMethodHandler, unary: Any, streaming: Any
) -> grpc.RpcMethodHandler:
    """An aborting handler of the same streaming shape as the one it replaces."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
