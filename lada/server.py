"""Common gRPC server bootstrap shared by the allocator, the LLM service and the agent.

Every service gets the same things here, so a servicer only translates and validates:
grpc.health.v1, server reflection, message-size limits, optional TLS/mTLS, a Prometheus
endpoint with per-RPC counters and latencies, JSON logs, and graceful SIGTERM shutdown.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lada.config import ClientTLS, ServerConfig
from lada.logs import configure_logging
from lada.ratelimit import RateLimitInterceptor

log = logging.getLogger("lada.server")


@dataclass
class ServiceBinding:
    """One gRPC service to mount: its registration function, servicer and full name."""

    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any
    full_name: str  # e.g. "lada.v1.Allocator"


@dataclass
class RunningServer:
    """A started server; `stop()` is idempotent and flips health to NOT_SERVING first."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: list[str]
    metrics_port: int | None
    grace_seconds: float
    _stopped: threading.Event = field(default_factory=threading.Event)
    _on_stop: list[Callable[[], None]] = field(default_factory=list)

    def add_stop_hook(self, hook: Callable[[], None]) -> None:
        self._on_stop.append(hook)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(self.grace_seconds).wait()
        for hook in self._on_stop:
            try:
                hook()
            except Exception:  # a failing hook must not block shutdown of the others
                log.exception("stop hook failed")
        log.info("server stopped", extra={"port": self.port})

    def wait(self) -> None:
        self.server.wait_for_termination()


class _MetricsInterceptor(grpc.ServerInterceptor):
    """Counts RPCs by method and status code and records their latency."""

    def __init__(self, service: str) -> None:
        from lada import metrics

        self._requests = metrics.RPC_REQUESTS
        self._latency = metrics.RPC_LATENCY
        self._service = service
        # labelled children, looked up once per (method, code): labels() takes a lock and
        # builds a key on every call, and this runs on every RPC
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[str, Any] = {}

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return handler._replace(unary_unary=self._wrap_unary(handler.unary_unary, method))
        if handler.stream_unary:
            return handler._replace(stream_unary=self._wrap_unary(handler.stream_unary, method))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._wrap_stream(handler.unary_stream, method))
        return handler._replace(stream_stream=self._wrap_stream(handler.stream_stream, method))

    def _observe(
        self, method: str, context: grpc.ServicerContext, started: float, failed: bool
    ) -> None:
        code = context.code() if hasattr(context, "code") else None
        name = code.name if isinstance(code, grpc.StatusCode) else ("UNKNOWN" if failed else "OK")
        elapsed = time.perf_counter() - started
        counter = self._counted.get((method, name))
        if counter is None:
            counter = self._counted[(method, name)] = self._requests.labels(
                self._service, method, name
            )
        counter.inc()
        timer = self._timed.get(method)
        if timer is None:
            timer = self._timed[method] = self._latency.labels(self._service, method)
        timer.observe(elapsed)

    def _wrap_unary(self, behaviour, method: str):  # type: ignore[no-untyped-def]
        def wrapped(request, context):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            failed = False
            try:
                return behaviour(request, context)
            except Exception:
                failed = True
                raise
            finally:
                self._observe(method, context, started, failed)

        return wrapped

    def _wrap_stream(self, behaviour, method: str):  # type: ignore[no-untyped-def]
        def wrapped(request, context):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            failed = False
            try:
                yield from behaviour(request, context)
            except Exception:
                failed = True
                raise
            finally:
                self._observe(method, context, started, failed)

        return wrapped


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS when a certificate is configured; mTLS when a client CA is configured too."""
    if not config.tls_cert:
        return None
    key = Path(config.tls_key).read_bytes()
    cert = Path(config.tls_cert).read_bytes()
    client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(tls: ClientTLS) -> grpc.ChannelCredentials | None:
    """Client-side TLS (and mTLS when a certificate is given); None means plaintext."""
    if not tls.ca:
        return None
    key = Path(tls.key).read_bytes() if tls.key else None
    cert = Path(tls.cert).read_bytes() if tls.cert else None
    return grpc.ssl_channel_credentials(Path(tls.ca).read_bytes(), key, cert)


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", int(config.share_port)),
    ]


def start_server(
    name: str,
    bindings: Iterable[ServiceBinding],
    config: ServerConfig,
    interceptors: Iterable[grpc.ServerInterceptor] = (),
) -> RunningServer:
    """Start a gRPC server with health, reflection and metrics; return once it listens."""
    from lada import metrics

    configure_logging(config.log_level, config.log_json, service=name)
    bindings = list(bindings)
    chain: list[grpc.ServerInterceptor] = [_MetricsInterceptor(name)]
    if config.rate_limit_per_s > 0:
        chain.append(RateLimitInterceptor(config.rate_limit_per_s, config.rate_limit_burst))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix=name),
        options=grpc_options(config),
        interceptors=[*chain, *interceptors],
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in bindings:
        binding.add_to_server(binding.servicer, server)
    names = [b.full_name for b in bindings]
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = f"{config.host}:{config.port}"
    credentials = server_credentials(config)
    port = (
        server.add_secure_port(address, credentials)
        if credentials
        else server.add_insecure_port(address)
    )
    if port == 0:
        raise OSError(f"{name}: cannot bind {address}")
    server.start()
    for service_name in ["", *names]:
        health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    metrics_port = metrics.start_endpoint(config.metrics_port, config.host)
    log.info(
        "serving",
        extra={
            "service": name,
            "port": port,
            "tls": bool(credentials),
            "metrics_port": metrics_port,
            "rpcs": names,
        },
    )
    return RunningServer(server, port, health_servicer, names, metrics_port, config.grace_seconds)


def run_until_signalled(running: RunningServer) -> None:
    """Block until SIGTERM/SIGINT, then shut down gracefully (health first, then RPCs)."""
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal received, shutting down", extra={"signal": signum})
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop_requested.wait()
    running.stop()
