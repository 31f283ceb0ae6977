"""A registration is all or nothing: the allocator is killed (kill -9) the moment its
registration write reaches Redis, before Redis could answer. Redis then holds a whole agent
(name, record, token, the invitation's use) or none of it, and the organisation, retrying
with the same invitation against a restarted allocator, ends up as exactly one agent.

A Redis-side TCP proxy makes the moment deterministic: it forwards the allocator's commands
at once, holds Redis's replies, and tells the test when a command naming `agent_names` (the
registration) went through."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
import yaml

from allocator.client import AgentClient, OperatorClient
from lada import state
from lada.redis_conn import RedisHandle
from lada.state import InvitationState, StateStore, hash_token, now_ms
from tests.fixtures_allocator import OPERATOR_TOKEN, default_settings
from tests.netproxy import TcpProxy
from tests.procs import ServiceProcess, free_port, start_service

pytestmark = [pytest.mark.slow]

RUN_ID = "registration-crash"
ORG = "crash-org"


def redis_proxy(handle: RedisHandle) -> tuple[TcpProxy, str]:
    """A proxy in front of the test Redis and the URL that reaches Redis through it."""
    parts = urlsplit(handle.url)
    db = handle.client.connection_pool.connection_kwargs.get("db", 0)
    if parts.scheme == "unix":
        proxy = TcpProxy(0, target_unix=parts.path).start()
    else:
        proxy = TcpProxy(parts.port or 6379).start()
    return proxy, f"redis://{proxy.address}/{db}"


def start_allocator(log_dir: Path, name: str, redis_url: str) -> ServiceProcess:
    port = free_port()
    config = log_dir / f"{name}.yaml"
    settings = default_settings(RUN_ID, open_enrollment=False, min_agents=1000)
    config.write_text(yaml.safe_dump({"allocator": settings}))
    args = ["allocator", "serve", "--config", str(config), "--port", str(port)]
    allocator = start_service([*args, "--redis-url", redis_url], port, log_dir, name)
    allocator.wait_serving(timeout=120)
    return allocator


def whole_or_nothing(store: StateStore) -> str:
    """'whole' or 'nothing' for the one invitation's agent; fails on anything in between."""
    (invitation,) = store.invitations()
    agents = store.list_agents()
    names = {
        k.decode(): v.decode() for k, v in store.redis.hgetall(store.key("agent_names")).items()
    }
    tokens = {v.decode() for v in store.redis.hgetall(store.key("tokens")).values()}
    if invitation.state(now_ms()) is InvitationState.PENDING:
        assert (agents, names, tokens) == ([], {}, set()), "a half-written registration"
        return "nothing"
    (agent,) = agents
    assert invitation.agent_id == agent.agent_id and names == {ORG: agent.agent_id}
    assert tokens == {agent.agent_id}
    assert agent.name == ORG and agent.capacity == 4 and agent.status.value == "ACTIVE"
    return "whole"


def test_an_allocator_killed_mid_registration_leaves_a_whole_agent_or_none(
    redis_handle: RedisHandle, tmp_path: Path, test_pool_fingerprint: str
) -> None:
    store = StateStore(redis_handle.client, RUN_ID)
    store.wipe()
    redis_handle.client.script_load(state._REGISTER_LUA)  # EVALSHA runs, never NOSCRIPT
    proxy, proxied_url = redis_proxy(redis_handle)
    allocator = start_allocator(tmp_path, "allocator-1", proxied_url)
    try:
        with OperatorClient(allocator.address, OPERATOR_TOKEN) as operator:
            secret = operator.invite(ORG).enrollment_secret
        proxy.watch_for, proxy.reply_delay_s = b"agent_names", 3.0
        caller = AgentClient(allocator.address, timeout_s=20)
        outcome: list[grpc.StatusCode] = []

        def register() -> None:
            try:
                caller.register(ORG, 4, test_pool_fingerprint, enrollment_secret=secret)
                outcome.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                outcome.append(exc.code())

        thread = threading.Thread(target=register)
        thread.start()
        assert proxy.seen.wait(30), "the registration never reached Redis"
        allocator.kill()
        thread.join(30)
        assert outcome == [grpc.StatusCode.UNAVAILABLE]  # the caller never got a reply
    finally:
        allocator.kill()
        proxy.close()
    assert whole_or_nothing(store) == "whole"
    assert hash_token(secret) in {
        k.decode() for k in store.redis.hgetall(store.key("invite_secrets"))
    }
    restarted = start_allocator(tmp_path, "allocator-2", redis_handle.url)
    try:
        retry = AgentClient(restarted.address).register(
            ORG, 4, test_pool_fingerprint, enrollment_secret=secret
        )
        assert retry.resumed
        assert [a.agent_id for a in store.list_agents()] == [retry.agent_id]
    finally:
        restarted.stop()
        store.wipe()
