"""The shared server bootstrap: TLS, mTLS, rate limits, metrics, graceful stop, on both of
its servers (gRPC's threaded one and grpc.aio)."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lada.config import ClientTLS, ServerConfig
from lada.server import (
    AioRunningServer,
    ServiceBinding,
    channel_credentials,
    start_aio_server,
    start_server,
)
from tests.certs import Issued, TestCA

PING = "/lada.test.Echo/Ping"


async def _echo_async(request: bytes, context: Any) -> bytes:
    return request


def _echo_binding(aio: bool = False) -> ServiceBinding:
    """A one-method service to exercise the interceptors (health is exempt from limits)."""
    handler = grpc.method_handlers_generic_handler(
        "lada.test.Echo",
        {
            "Ping": grpc.unary_unary_rpc_method_handler(
                _echo_async if aio else (lambda request, context: request),
                request_deserializer=bytes,
                response_serializer=bytes,
            )
        },
    )
    return ServiceBinding(
        lambda _servicer, server: server.add_generic_rpc_handlers((handler,)),
        None,
        "lada.test.Echo",
    )


class _AioServer:
    """An AioRunningServer on an event loop of its own thread, driven like a RunningServer."""

    def __init__(self, config: ServerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._running: AioRunningServer = self._run(
            start_aio_server("bootstrap-test", [_echo_binding(aio=True)], config)
        )
        self.port = self._running.port

    def _run(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=30)

    def stop(self) -> None:
        self._run(self._running.stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture(params=["threaded", "aio"])
def serve(request: pytest.FixtureRequest) -> Iterator:
    running: list[Any] = []

    def start(**overrides: object) -> Any:
        config = ServerConfig(port=0, metrics_port=-1, log_json=False, **overrides)
        if request.param == "aio":
            server: Any = _AioServer(config)
        else:
            server = start_server("bootstrap-test", [_echo_binding()], config)
        running.append(server)
        return server

    yield start
    for server in running:
        getattr(server, "close", server.stop)()


def _health(channel: grpc.Channel) -> str:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _tls_channel(port: int, ca: TestCA, client: Issued | None = None) -> grpc.Channel:
    """A channel as agents make them: lada.server.channel_credentials from ClientTLS."""
    tls = ClientTLS(
        ca=str(ca.files.cert),
        cert=str(client.cert) if client else "",
        key=str(client.key) if client else "",
    )
    credentials = channel_credentials(tls)
    assert credentials is not None
    return grpc.secure_channel(f"localhost:{port}", credentials)


def test_tls_server_answers_a_client_that_trusts_its_ca(serve, tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("localhost", server=True)
    server = serve(tls_cert=str(issued.cert), tls_key=str(issued.key))
    with _tls_channel(server.port, ca) as channel:
        assert _health(channel) == "SERVING"


def test_tls_server_refuses_plaintext_clients(serve, tmp_path: Path) -> None:
    issued = TestCA(tmp_path).issue("localhost", server=True)
    server = serve(tls_cert=str(issued.cert), tls_key=str(issued.key))
    with (
        grpc.insecure_channel(f"localhost:{server.port}") as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        _health(channel)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_client_certificate(serve, tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("localhost", server=True)
    server = serve(
        tls_cert=str(issued.cert), tls_key=str(issued.key), tls_client_ca=str(ca.files.cert)
    )
    with _tls_channel(server.port, ca) as channel, pytest.raises(grpc.RpcError) as caught:
        _health(channel)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    with _tls_channel(server.port, ca, ca.issue("agent-1", server=False)) as channel:
        assert _health(channel) == "SERVING"


def test_rate_limit_refuses_beyond_the_burst_with_resource_exhausted(serve) -> None:
    server = serve(rate_limit_per_s=0.5, rate_limit_burst=3)
    codes: list[grpc.StatusCode] = []
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        ping = channel.unary_unary(PING, request_serializer=bytes, response_deserializer=bytes)
        for _ in range(6):
            try:
                ping(b"x", timeout=5, metadata=[("authorization", "Bearer agent-a")])
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                assert "rate limit" in exc.details()
        other = ping(b"y", timeout=5, metadata=[("authorization", "Bearer agent-b")])
        assert _health(channel) == "SERVING"  # health checks are never limited
    assert codes[:3] == [grpc.StatusCode.OK] * 3
    assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
    assert other == b"y"  # another caller has its own bucket


def test_metrics_endpoint_counts_rpcs(serve) -> None:
    from lada import metrics

    port = metrics.start_endpoint(0)
    server = serve()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        channel.unary_unary(PING, request_serializer=bytes, response_deserializer=bytes)(
            b"x", timeout=5
        )
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'lada_rpc_requests_total{code="OK",method="/lada.test.Echo/Ping"' in body


def test_stop_is_idempotent_and_closes_the_port(serve) -> None:
    server = serve()
    server.stop()
    server.stop()
    with (
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        _health(channel)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_corrupt_request_is_refused_as_internal(serve) -> None:
    server = serve()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        with pytest.raises(grpc.RpcError) as caught:
            check(b"\xff\xff\xff", timeout=5)  # not a HealthCheckRequest
        assert caught.value.code() is grpc.StatusCode.INTERNAL
        assert "deserializing" in caught.value.details()
        assert _health(channel) == "SERVING"
