"""The allocator on grpc.aio (its default server mode) and on gRPC's threaded server (the
`server_mode: threaded` fallback), as real `lada allocator serve` processes on real Redis:
both play the round protocol and refuse bad input with the same status codes; on aio, open
WatchRounds streams cost no thread each, a watcher that goes away is let go, and SIGTERM
shuts the server down gracefully."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
import psutil
import pytest
import yaml

from allocator import main as allocator_main
from allocator.client import AgentClient, phase_name
from lada.config import SERVER_AIO, SERVER_MODES, SERVER_THREADED, AllocatorConfig
from lada.redis_conn import RedisHandle
from lada.v1 import allocator_pb2, allocator_pb2_grpc
from tests.fixtures_allocator import (
    AllocatorDeployment,
    allocator_run,
    play_round,
    register_agents,
    wait_for,
)
from tests.procs import LADA, REPO_ROOT, free_port, start_service

WATCHERS = 100


@dataclass
class OneRound:
    """A one-round run played to its end by three agents on one server mode."""

    mode: str
    address: str
    log: str
    clients: list[AgentClient]
    events: list[allocator_pb2.RoundEvent] = field(default_factory=list)
    filtered: list[allocator_pb2.RoundEvent] = field(default_factory=list)  # ALLOCATED only


@pytest.fixture(scope="module", params=SERVER_MODES)
def one_round(
    request: pytest.FixtureRequest,
    redis_handle: RedisHandle,
    tmp_path_factory: pytest.TempPathFactory,
    test_pool_fingerprint: str,
) -> Iterator[OneRound]:
    run_id = "test-" + uuid.uuid4().hex[:10]
    log_dir = tmp_path_factory.mktemp(f"one-round-{request.param}")
    with allocator_run(
        redis_handle, run_id, log_dir, rounds=1, server_mode=request.param
    ) as deployment:
        address = deployment.replicas[0].address
        clients = register_agents(address, test_pool_fingerprint, 3)
        result = OneRound(request.param, address, "", clients)
        watcher = threading.Thread(
            target=lambda: result.events.extend(clients[0].watch_rounds(1, timeout_s=120))
        )
        filtered = threading.Thread(
            target=lambda: result.filtered.extend(
                clients[1].watch_rounds(1, timeout_s=120, phases=["ALLOCATED"])
            )
        )
        watcher.start()
        filtered.start()
        with deployment.operator() as operator:
            play_round(clients, operator, 1)
        watcher.join(timeout=60)
        filtered.join(timeout=60)
        result.log = deployment.replicas[0].service.log()
        yield result


def test_the_allocator_says_which_server_mode_it_runs(one_round: OneRound) -> None:
    assert f'"server_mode": "{one_round.mode}"' in one_round.log


def test_either_server_mode_streams_a_whole_round_then_the_run_end(one_round: OneRound) -> None:
    phases = [(e.round, phase_name(e.phase)) for e in one_round.events if not e.run_finished]
    assert phases[:2] == [(1, "OPEN"), (1, "ALLOCATED")]
    assert one_round.events[-1].run_finished


def test_either_server_mode_streams_a_watcher_only_its_phases_and_the_run_end(
    one_round: OneRound,
) -> None:
    seen = [(e.round, phase_name(e.phase), e.run_finished) for e in one_round.filtered]
    assert seen == [(1, "ALLOCATED", False), (1, "CLOSED", True)]


def _code(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_either_server_mode_refuses_a_negative_from_round_as_invalid(
    one_round: OneRound,
) -> None:
    client = one_round.clients[0]
    assert _code(lambda: list(client.watch_rounds(-1, timeout_s=10))) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )


@pytest.mark.parametrize("phase", [0, 42], ids=["unspecified", "unknown"])
def test_either_server_mode_refuses_a_watch_of_no_real_phase_naming_phases(
    one_round: OneRound, phase: int
) -> None:
    client = one_round.clients[0]
    request = allocator_pb2.WatchRoundsRequest(agent_id=client.agent_id, phases=[2, phase])
    with pytest.raises(grpc.RpcError) as caught:
        next(iter(client.stub.WatchRounds(request, timeout=10, metadata=client.metadata())))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"phases: {phase} is not a round phase")


def test_either_server_mode_refuses_an_empty_report_stream_as_invalid(
    one_round: OneRound,
) -> None:
    client = one_round.clients[0]
    assert _code(
        lambda: client.stub.ReportStats(iter(()), timeout=10, metadata=client.metadata())
    ) is (grpc.StatusCode.INVALID_ARGUMENT)


def test_either_server_mode_refuses_a_corrupt_report_message_as_internal(
    one_round: OneRound,
) -> None:
    client = one_round.clients[0]
    report = client.channel.stream_unary(
        "/lada.v1.Allocator/ReportStats",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    first = allocator_pb2.ReportStatsRequest(agent_id=client.agent_id, round=1)
    with pytest.raises(grpc.RpcError) as caught:
        report(iter([first.SerializeToString(), b"\xff\xff\xff"]), metadata=client.metadata())
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert "deserializing" in (caught.value.details() or "")


def test_either_server_mode_refuses_a_bad_token_as_unauthenticated(one_round: OneRound) -> None:
    client = AgentClient(one_round.address)
    client.use_identity(one_round.clients[0].agent_id, "not-the-token")
    with client:
        assert _code(client.heartbeat) is grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: list(client.watch_rounds(1, timeout_s=10))) is (
            grpc.StatusCode.UNAUTHENTICATED
        )


# ---- aio only ---------------------------------------------------------------------------------
@dataclass
class Watchers:
    """WATCHERS agents registered over one channel, and the allocator process serving them."""

    deployment: AllocatorDeployment
    channel: grpc.Channel
    stub: allocator_pb2_grpc.AllocatorStub
    agents: list[tuple[str, str]]  # (agent_id, token)

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.deployment.replicas[0].service.proc.pid)

    def watch(self, agent_id: str, token: str) -> Any:
        return self.stub.WatchRounds(
            allocator_pb2.WatchRoundsRequest(agent_id=agent_id, from_round=1),
            timeout=120,
            metadata=(("authorization", f"Bearer {token}"),),
        )


@pytest.fixture
def watchers(
    allocator_deployment: Callable[..., AllocatorDeployment], test_pool_fingerprint: str
) -> Iterator[Watchers]:
    deployment = allocator_deployment(min_agents=WATCHERS, rounds=1, server_mode=SERVER_AIO)
    channel = grpc.insecure_channel(deployment.replicas[0].address)
    stub = allocator_pb2_grpc.AllocatorStub(channel)
    agents = []
    for i in range(WATCHERS):
        reply = stub.RegisterAgent(
            allocator_pb2.RegisterAgentRequest(
                name=f"watcher-{i}",
                capacity=1,
                pool_fingerprint=test_pool_fingerprint,
                enrollment_secret=f"secret-{i}-{uuid.uuid4().hex}",
            ),
            timeout=30,
        )
        agents.append((reply.agent_id, reply.token))
    yield Watchers(deployment, channel, stub, agents)
    channel.close()


def test_a_hundred_open_watch_streams_hold_no_thread_each(watchers: Watchers) -> None:
    before = watchers.process.num_threads()
    streams = [watchers.watch(agent_id, token) for agent_id, token in watchers.agents]
    # every stream is served: each has its round-1 OPEN event
    assert {(e.round, phase_name(e.phase)) for e in (next(s) for s in streams)} == {(1, "OPEN")}
    during = watchers.process.num_threads()
    for stream in streams:
        stream.cancel()
    # the one reader of round events is the only thread the watchers add (threaded: 100+)
    assert during <= before + 1, (before, during)


def test_watchers_that_go_away_release_their_watch(watchers: Watchers) -> None:
    before = watchers.process.num_threads()
    streams = [watchers.watch(agent_id, token) for agent_id, token in watchers.agents]
    for stream in streams:
        next(stream)
    assert watchers.process.num_threads() == before + 1  # the reader of round events
    for stream in streams:
        stream.cancel()
    # with no subscriber left, the reader stops after its current poll (watch_block_ms)
    wait_for(lambda: watchers.process.num_threads() == before, 10, "the event reader to stop")


def test_sigterm_with_an_open_watch_shuts_down_gracefully(
    allocator_deployment: Callable[..., AllocatorDeployment], test_pool_fingerprint: str
) -> None:
    deployment = allocator_deployment(
        min_agents=1,
        server_mode=SERVER_AIO,
        server={"metrics_port": -1, "log_level": "INFO", "grace_seconds": 1.0},
    )
    service = deployment.replicas[0].service
    (client,) = register_agents(deployment.replicas[0].address, test_pool_fingerprint, 1)
    stream = client.watch_rounds(1, timeout_s=120)
    assert phase_name(next(stream).phase) == "OPEN"
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(30) == 0
    assert time.monotonic() - started < 15  # grace 1 s, then the driver's stop
    with pytest.raises(grpc.RpcError):  # the stream ends with the server, it does not hang
        list(stream)
    log = service.log()
    assert log.index("signal received, shutting down") < log.index("server stopped")
    client.close()


def test_an_unknown_server_mode_is_refused_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "LADA_ALLOCATOR_SERVER_MODE": "fibers"}
    result = subprocess.run(
        [*LADA, "allocator", "serve", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"lada allocator: server_mode: 'fibers' is not one of {SERVER_AIO}, {SERVER_THREADED}"
    )


def test_the_aio_allocator_installs_its_signal_handlers_before_it_starts_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGTERM that arrives while the server starts must find the handler, not the default
    action (which would kill the process with no graceful stop): installed before start."""

    class Starting(Exception):
        pass

    async def starting(*_args: Any, **_kwargs: Any) -> Any:
        seen.append(signal.getsignal(signal.SIGTERM))
        raise Starting

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    seen: list[Any] = []
    monkeypatch.setattr(allocator_main, "start_aio_server", starting)
    try:
        with pytest.raises(Starting):
            asyncio.run(allocator_main._serve_aio(AllocatorConfig(), cast(Any, None), None, None))
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    assert seen and seen[0] not in (signal.SIG_DFL, signal.SIG_IGN, None)


def test_sigterm_right_after_the_port_opens_stops_the_aio_allocator_cleanly(
    allocator_deployment: Callable[..., AllocatorDeployment], tmp_path: Path
) -> None:
    deployment = allocator_deployment(start=False, server_mode=SERVER_AIO)
    config_path = tmp_path / "sigterm.yaml"
    config_path.write_text(yaml.safe_dump({"allocator": deployment.settings}))
    port = free_port()
    service = start_service(
        ["allocator", "serve", "--config", str(config_path), "--port", str(port)],
        port,
        tmp_path,
        "sigterm",
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and service.proc.poll() is None:
        with socket.socket() as sock:  # a bare connect: the earliest sign the server is up
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.002)
    else:
        pytest.fail(f"the allocator did not open its port:\n{service.log()[-4000:]}")
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(30) == 0, service.log()[-4000:]
    assert "signal received, shutting down" in service.log()
