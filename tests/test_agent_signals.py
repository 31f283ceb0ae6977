"""Graceful shutdown: SIGTERM stops an agent cleanly, waiting or still loading its model."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from transformers import tokenization_utils_base

from lada.modeling import load_tokenizer
from lada.v1 import agent_pb2, agent_pb2_grpc
from lada.zoo import ZooManifest
from slm_agent import main as agent_main
from slm_agent.checkpoint import CheckpointStore
from tests.fixtures_agent import AGENT_POOL, PRIVATE_RATES, start_agent
from tests.fixtures_allocator import AllocatorDeployment, wait_for


def test_sigterm_stops_a_waiting_agent_with_exit_code_zero(
    allocator_deployment: Callable[..., AllocatorDeployment],
    micro_zoo: ZooManifest,
    tmp_path: Path,
) -> None:
    deployment = allocator_deployment(public_pool=AGENT_POOL, min_agents=2)  # never opens
    address = deployment.replicas[0].address
    process = start_agent(
        tmp_path, "clinic", micro_zoo.slms["slm-rates"], address, address, PRIVATE_RATES,
        tmp_path / "state",
    )  # fmt: skip
    process.wait_serving(60)

    def waiting() -> bool:
        with grpc.insecure_channel(process.address) as channel:
            reply = agent_pb2_grpc.AgentStub(channel).GetAgentStatus(
                agent_pb2.GetAgentStatusRequest(), timeout=2
            )
        return bool(reply.agent_id) and reply.activity == "waiting"

    wait_for(waiting, 60, "the agent waiting for round 1")
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(30) == 0
    log = process.log()
    assert "signal received, stopping" in log and "server stopped" in log
    identity = CheckpointStore(tmp_path / "state").load_identity()
    assert identity is not None
    assert [a.agent_id for a in deployment.store.list_agents()] == [identity.agent_id]


def test_sigterm_while_loading_a_tokenizer_unwinds_as_a_shutdown_not_a_load_error(
    micro_zoo: ZooManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers wraps tokenizer file lookups in `except Exception` and re-raises "Can't
    load tokenizer"; a signal arriving there must still reach the agent as a shutdown."""
    real_lookup = tokenization_utils_base.cached_file

    def lookup_then_signalled(directory: str, filename: str, *args: Any, **kwargs: Any) -> Any:
        if filename == "tokenizer.json":  # a vocab file: looked up inside that except
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lookup(directory, filename, *args, **kwargs)

    monkeypatch.setattr(tokenization_utils_base, "cached_file", lookup_then_signalled)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent_main._stop_on_signals()
        with pytest.raises(agent_main.ShutdownRequested):
            load_tokenizer(micro_zoo.slms["slm-rates"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
