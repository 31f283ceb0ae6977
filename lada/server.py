"""Common gRPC server bootstrap shared by the allocator, the LLM service and the agent.

Every service gets the same things here, so a servicer only translates and validates:
grpc.health.v1, server reflection, message-size limits, optional TLS/mTLS, a Prometheus
endpoint with per-RPC counters and latencies, JSON logs, and graceful SIGTERM shutdown.

Two ways to serve: `start_server` (gRPC's threaded server: a thread per RPC in flight, so one
per open stream) and `start_aio_server` (grpc.aio: one event loop; the allocator uses it so
that its WatchRounds streams cost no thread each, docs/bench/load.md). Both build their
options, credentials, interceptors and mounts here, from the same code.
"""

from __future__ import annotations

import asyncio
import inspect
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
from lada.ratelimit import AioRateLimitInterceptor, RateLimitInterceptor

log = logging.getLogger("lada.server")
SIGNAL_POLL_S = 0.5  # how often the main thread wakes to run a pending signal handler


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
        _run_stop_hooks(self._on_stop, self.port)

    def wait(self) -> None:
        self.server.wait_for_termination()


@dataclass
class AioRunningServer:
    """A started grpc.aio server, used from its event loop; `stop()` is idempotent and flips
    health to NOT_SERVING first, as RunningServer's."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str]
    metrics_port: int | None
    grace_seconds: float
    _stopped: bool = False
    _on_stop: list[Callable[[], None]] = field(default_factory=list)

    def add_stop_hook(self, hook: Callable[[], None]) -> None:
        """`hook` runs on the loop after the server stopped (blocking there is harmless)."""
        self._on_stop.append(hook)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_seconds)
        _run_stop_hooks(self._on_stop, self.port)

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def _run_stop_hooks(hooks: Iterable[Callable[[], None]], port: int) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:  # a failing hook must not block shutdown of the others
            log.exception("stop hook failed")
    log.info("server stopped", extra={"port": port})


class _RpcMetrics:
    """Counts RPCs by method and status code and records their latency (both servers)."""

    def __init__(self, service: str) -> None:
        from lada import metrics

        self._requests = metrics.RPC_REQUESTS
        self._latency = metrics.RPC_LATENCY
        self._service = service
        # labelled children, looked up once per (method, code): labels() takes a lock and
        # builds a key on every call, and this runs on every RPC
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[str, Any] = {}

    def observe(self, method: str, code: Any, started: float, failed: bool) -> None:
        """`code`: what the context says (a StatusCode, or None when the handler set none)."""
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


def _wrap_handler(handler: grpc.RpcMethodHandler, wrap_unary: Any, wrap_stream: Any) -> Any:
    """`handler` with its behaviour wrapped, whichever of the four shapes it has."""
    if handler.unary_unary:
        return handler._replace(unary_unary=wrap_unary(handler.unary_unary))
    if handler.stream_unary:
        return handler._replace(stream_unary=wrap_unary(handler.stream_unary))
    if handler.unary_stream:
        return handler._replace(unary_stream=wrap_stream(handler.unary_stream))
    return handler._replace(stream_stream=wrap_stream(handler.stream_stream))


class _MetricsInterceptor(grpc.ServerInterceptor):
    """_RpcMetrics around every handler of the threaded server."""

    def __init__(self, service: str) -> None:
        self._metrics = _RpcMetrics(service)

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return _wrap_handler(
            handler,
            lambda behaviour: self._wrap_unary(behaviour, method),
            lambda behaviour: self._wrap_stream(behaviour, method),
        )

    def _code(self, context: grpc.ServicerContext) -> Any:
        return context.code() if hasattr(context, "code") else None

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
                self._metrics.observe(method, self._code(context), started, failed)

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
                self._metrics.observe(method, self._code(context), started, failed)

        return wrapped


# gRPC's threaded server refuses a request it cannot deserialize with INTERNAL and this
# message; grpc.aio reports UNKNOWN "Unexpected DecodeError". Both servers answer the former.
UNDECODABLE_DETAILS = "Exception deserializing request!"
_UNDECODABLE = object()  # what the tolerant deserializer hands on for a corrupt request


class _AioInterceptor(grpc.aio.ServerInterceptor):
    """The aio server's metrics, refusal of corrupt requests (INTERNAL, as the threaded
    server) and rate limit in one layer: each method's handler is wrapped once and kept, so
    a call pays one lookup and one coroutine frame here instead of a chain of interceptors
    each rebuilding its wrappers per call (docs/bench/load.md: this runs on every RPC).
    The metrics see every refusal, the corrupt-request check comes before the rate limit's,
    as in the chain this replaces (_MetricsInterceptor, then corrupt requests, then limits)."""

    def __init__(self, service: str, limit: AioRateLimitInterceptor | None) -> None:
        self._metrics = _RpcMetrics(service)
        self._limit = limit
        # method -> (the handler as registered, it served, it refused by the rate limit)
        self._served: dict[str, tuple[Any, Any, Any]] = {}

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        served = self._served.get(method)
        if served is None or served[0] is not handler:
            refused = self._limit.refusing(handler) if self._limit is not None else None
            served = (
                handler,
                self._serving(handler, method),
                self._serving(refused, method) if refused is not None else None,
            )
            self._served[method] = served
        if self._limit is not None and not self._limit.allows(handler_call_details):
            return served[2]
        return served[1]

    def _serving(self, handler: grpc.RpcMethodHandler, method: str) -> Any:
        """`handler` with metrics around it and corrupt requests refused before it."""
        streamed = bool(handler.stream_unary or handler.stream_stream)
        if handler.request_deserializer is not None:
            handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
        return _wrap_handler(
            handler,
            lambda behaviour: self._coroutine(behaviour, method, streamed),
            lambda behaviour: (
                self._generator(behaviour, method, streamed)
                if inspect.isasyncgenfunction(behaviour)
                else self._coroutine(behaviour, method, streamed)
            ),
        )

    def _observe(self, method: str, context: Any, started: float, error: BaseException | None):
        code = (
            grpc.StatusCode.CANCELLED
            if isinstance(error, asyncio.CancelledError)
            else context.code()
        )
        self._metrics.observe(method, code, started, error is not None)

    def _coroutine(self, behaviour, method: str, streamed_requests: bool):  # type: ignore[no-untyped-def]
        async def wrapped(request, context):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                request = await _checked_request(request, context, streamed_requests)
                return await behaviour(request, context)
            except BaseException as exc:  # aborts and cancellations are counted, then go on
                error = exc
                raise
            finally:
                self._observe(method, context, started, error)

        return wrapped

    def _generator(self, behaviour, method: str, streamed_requests: bool):  # type: ignore[no-untyped-def]
        async def wrapped(request, context):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                request = await _checked_request(request, context, streamed_requests)
                async for response in behaviour(request, context):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._observe(method, context, started, error)

        return wrapped


def _tolerant(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`decode` that hands on _UNDECODABLE for a corrupt request instead of raising."""

    def tolerant(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception:
            return _UNDECODABLE

    return tolerant


async def _checked_request(request: Any, context: Any, streamed: bool) -> Any:
    """The request a handler may see: a corrupt unary one refused (INTERNAL, as the threaded
    server), a stream wrapped so that a corrupt message in it is refused when read."""
    if streamed:
        return _checked_stream(request, context)
    if request is _UNDECODABLE:
        await context.abort(grpc.StatusCode.INTERNAL, UNDECODABLE_DETAILS)
    return request


async def _checked_stream(requests: Any, context: Any) -> Any:
    """A request stream whose first corrupt message is refused (INTERNAL)."""
    async for message in requests:
        if message is _UNDECODABLE:
            await context.abort(grpc.StatusCode.INTERNAL, UNDECODABLE_DETAILS)
        yield message


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


def _interceptors(name: str, config: ServerConfig, aio: bool, extra: Iterable[Any]) -> list[Any]:
    """Metrics first (it sees every refusal too), then (aio) corrupt requests, then the rate
    limit, then `extra`; on aio the first three are one interceptor (_AioInterceptor)."""
    limited = config.rate_limit_per_s > 0
    if aio:
        limit = (
            AioRateLimitInterceptor(config.rate_limit_per_s, config.rate_limit_burst)
            if limited
            else None
        )
        return [_AioInterceptor(name, limit), *extra]
    chain: list[Any] = [_MetricsInterceptor(name)]
    if limited:
        chain.append(RateLimitInterceptor(config.rate_limit_per_s, config.rate_limit_burst))
    return [*chain, *extra]


def _mount(server: Any, bindings: list[ServiceBinding], health_servicer: Any) -> list[str]:
    """Health, the services and reflection over all of them; the services' full names."""
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in bindings:
        binding.add_to_server(binding.servicer, server)
    names = [b.full_name for b in bindings]
    # enable_server_reflection mounts the aio servicer on an aio server
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return names


def _bind(server: Any, name: str, config: ServerConfig) -> tuple[int, bool]:
    """Add the configured port (TLS when configured); the bound port and whether TLS."""
    address = f"{config.host}:{config.port}"
    credentials = server_credentials(config)
    port = (
        server.add_secure_port(address, credentials)
        if credentials
        else server.add_insecure_port(address)
    )
    if port == 0:
        raise OSError(f"{name}: cannot bind {address}")
    return port, credentials is not None


def _announce(
    name: str, config: ServerConfig, port: int, tls: bool, names: list[str]
) -> int | None:
    """Start the metrics endpoint and log that the server serves; the metrics port."""
    from lada import metrics

    metrics_port = metrics.start_endpoint(config.metrics_port, config.host)
    log.info(
        "serving",
        extra={
            "service": name,
            "port": port,
            "tls": tls,
            "metrics_port": metrics_port,
            "rpcs": names,
        },
    )
    return metrics_port


def start_server(
    name: str,
    bindings: Iterable[ServiceBinding],
    config: ServerConfig,
    interceptors: Iterable[grpc.ServerInterceptor] = (),
) -> RunningServer:
    """Start a gRPC server with health, reflection and metrics; return once it listens."""
    configure_logging(config.log_level, config.log_json, service=name)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix=name),
        options=grpc_options(config),
        interceptors=_interceptors(name, config, False, interceptors),
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    names = _mount(server, list(bindings), health_servicer)
    port, tls = _bind(server, name, config)
    server.start()
    for service_name in ["", *names]:
        health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    metrics_port = _announce(name, config, port, tls, names)
    return RunningServer(server, port, health_servicer, names, metrics_port, config.grace_seconds)


async def start_aio_server(
    name: str,
    bindings: Iterable[ServiceBinding],
    config: ServerConfig,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
) -> AioRunningServer:
    """As start_server, on grpc.aio in the running event loop; the bindings' servicers must
    be asyncio servicers (async def handlers, async generators for streams)."""
    configure_logging(config.log_level, config.log_json, service=name)
    server = grpc.aio.server(
        options=grpc_options(config),
        interceptors=_interceptors(name, config, True, interceptors),
    )
    health_servicer = health.aio.HealthServicer()
    names = _mount(server, list(bindings), health_servicer)
    port, tls = _bind(server, name, config)
    await server.start()
    for service_name in ["", *names]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    metrics_port = _announce(name, config, port, tls, names)
    return AioRunningServer(
        server, port, health_servicer, names, metrics_port, config.grace_seconds
    )


def stop_signals() -> threading.Event:
    """An event that SIGTERM/SIGINT set. Install it before the server starts: a signal that
    arrives once health says SERVING must not find the default action (or none) in place."""
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        _log_signal(signum)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop_requested


def run_until_signalled(
    running: RunningServer, stop_requested: threading.Event | None = None
) -> None:
    """Block until SIGTERM/SIGINT, then shut down gracefully (health first, then RPCs)."""
    stop_requested = stop_requested or stop_signals()
    # A timed wait: a signal the kernel delivers to one of gRPC's threads only flags it, and
    # the handler runs when the main thread next runs bytecode, which an untimed wait never
    # does (seen in CI: SIGTERM ignored for 30 s, then SIGKILL).
    while not stop_requested.wait(SIGNAL_POLL_S):
        pass
    running.stop()


def aio_stop_signals() -> asyncio.Event:
    """stop_signals for the running event loop: an asyncio.Event that SIGTERM/SIGINT set.
    Install it before start_aio_server, as stop_signals before start_server: a SIGTERM that
    arrives while the server starts must stop it, not be lost (seen in CI)."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal_in_loop, signum, stop_requested)
    return stop_requested


async def run_aio_until_signalled(
    running: AioRunningServer, stop_requested: asyncio.Event | None = None
) -> None:
    """run_until_signalled for an aio server, from the loop that serves it."""
    stop_requested = stop_requested or aio_stop_signals()
    await stop_requested.wait()
    await running.stop()


def _on_signal_in_loop(signum: int, stop_requested: asyncio.Event) -> None:
    _log_signal(signum)
    stop_requested.set()


def _log_signal(signum: int) -> None:
    log.info("signal received, shutting down", extra={"signal": signum})
