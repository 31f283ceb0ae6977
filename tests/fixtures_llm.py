"""Pytest fixtures for the LLM service (registered in conftest.py via pytest_plugins).

`llm_service`: ONE real `lada llm serve --backend vllm` process per test session, on the
micro zoo LLM, with the allocator tests' public pool. Never absorbed into (tests that
absorb start their own process with `start_llm_service`), so it always serves `base`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lada.zoo import ZooManifest
from tests.procs import ServiceProcess, free_port, start_service

LLM_POOL = "synthetic:domains=all,n=240,seed=7"  # == tests.fixtures_allocator.TEST_POOL
ENGINE_START_TIMEOUT_S = 420.0  # vLLM on shared CPUs: engine start takes 30-120 s


@dataclass
class LLMServiceHandle:
    """A running LLM service process: where it listens and what it serves."""

    process: ServiceProcess
    model: Path
    pool_spec: str
    backend: str
    state_dir: Path

    @property
    def address(self) -> str:
        return self.process.address

    def log(self) -> str:
        return self.process.log()


def start_llm_service(
    model: Path,
    log_dir: Path,
    name: str = "llm",
    backend: str = "vllm",
    pool_spec: str = LLM_POOL,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> LLMServiceHandle:
    """Start `lada llm serve` and wait until SERVING; on failure the log is in the error.

    A fixed `port` lets a test restart the service at the same address.
    """
    port = port or free_port()
    state_dir = log_dir / f"{name}-state"
    args = [
        "llm",
        "serve",
        "--port",
        str(port),
        "--metrics-port",
        "-1",
        "--backend",
        backend,
        "--model",
        str(model),
        "--public-pool",
        pool_spec,
    ]
    # The Redis path cache is shared across processes and sessions; tests that are not
    # about it keep each service to its own in-process cache (tests/test_llm_path_cache.py).
    full_env = {"LADA_LLM_STATE_DIR": str(state_dir), "LADA_LLM_PATH_CACHE_TTL_S": "0"}
    full_env.update(env or {})
    process = start_service(args, port, log_dir, name, env=full_env)
    try:
        process.wait_serving(timeout=ENGINE_START_TIMEOUT_S)
    except Exception:
        process.stop()
        raise
    return LLMServiceHandle(process, model, pool_spec, backend, state_dir)


@pytest.fixture(scope="session")
def llm_service(
    micro_zoo: ZooManifest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LLMServiceHandle]:
    """The shared vLLM-backed LLM service on the micro zoo LLM (address, pool_spec)."""
    log_dir = tmp_path_factory.mktemp("llm-service")
    handle = start_llm_service(Path(micro_zoo.llm), log_dir)
    yield handle
    code = handle.process.stop(timeout=60)
    if code != 0:
        print(f"llm service exited {code}:\n{handle.log()[-4000:]}")
