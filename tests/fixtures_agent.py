"""Pytest fixtures for the agent tests (registered in conftest.py via pytest_plugins).

Agents here use the micro zoo's real models. `LocalLLM` is the LLMPort a simulation uses:
the real micro LLM in-process (transformers), standing in for the gRPC LLM service in
loop tests that are about the agent, not the service.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lada.cluster import write_jsonl
from lada.modeling import generate, load_causal_lm, score_completions
from lada.tasks import Problem, format_prompt, is_correct, load_dataset
from lada.zoo import ZooManifest
from slm_agent.rounds import AllocatedSample, LLMPath
from tests.fixtures_llm import LLMServiceHandle, start_llm_service
from tests.procs import ServiceProcess, free_port, start_service

AGENT_POOL = "synthetic:domains=all,n=240,seed=7"  # the allocator tests' TEST_POOL
PRIVATE_RATES = "synthetic:domains=rates,n=40,seed=101"
PRIVATE_PURCHASES = "synthetic:domains=purchases,n=40,seed=102"
# Small, fast agent settings for tests (LADA_AGENT_* environment of agent processes).
AGENT_TEST_ENV = {
    "LADA_AGENT_PUBLIC_POOL": AGENT_POOL,
    "LADA_AGENT_TORCH_THREADS": "1",
    "LADA_AGENT_HEARTBEAT_INTERVAL_S": "1",
    "LADA_AGENT_LLM_MAX_TOKENS": "64",
    "LADA_AGENT_TRAINER__MAX_NEW_TOKENS": "64",
    "LADA_AGENT_TRAINER__OWN_PATHS_PER_SAMPLE": "1",
}


@dataclass
class LocalLLM:
    """LLMPort over the real micro LLM in this process; paths cached per sample like the
    service does. The reference path is appended as a correct path so that every sample
    has something correct to learn (the micro LLM rarely gets one right)."""

    model_dir: Path
    pool: dict[str, Problem]
    add_reference: bool = True
    calls: list[list[str]] = field(default_factory=list)
    _cache: dict[str, list[LLMPath]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model, self.tokenizer = load_causal_lm(self.model_dir)

    def reasoning_paths(
        self, samples: Sequence[AllocatedSample], n: int, temperature: float, max_tokens: int
    ) -> dict[str, list[LLMPath]]:
        ids = [s.sample_id for s in samples]
        self.calls.append(ids)
        key = f"{n}|{temperature}|{max_tokens}|"  # cached per sampling, like the service
        fresh = [i for i in ids if key + i not in self._cache]
        if fresh:
            prompts = [format_prompt(self.pool[i].question) for i in fresh]
            outputs = generate(
                self.model,
                self.tokenizer,
                prompts,
                max_tokens,
                greedy=False,
                temperature=temperature,
                n=n,
                seed=1,
            )
            for sample_id, prompt, texts in zip(fresh, prompts, outputs, strict=True):
                problem = self.pool[sample_id]
                if self.add_reference:
                    texts = [*texts, " " + problem.reference]
                scores = score_completions(self.model, self.tokenizer, [prompt] * len(texts), texts)
                self._cache[key + sample_id] = [
                    LLMPath(t, s.normalized, is_correct(t, problem.answer))
                    for t, s in zip(texts, scores, strict=True)
                ]
        return {i: self._cache[key + i] for i in ids}


@pytest.fixture(scope="session")
def agent_pool() -> dict[str, Problem]:
    return {p.id: p for p in load_dataset(AGENT_POOL)}


@pytest.fixture(scope="session")
def private_rates() -> list[Problem]:
    return load_dataset(PRIVATE_RATES)


@pytest.fixture(scope="session")
def local_llm(micro_zoo: ZooManifest, agent_pool: dict[str, Problem]) -> LocalLLM:
    return LocalLLM(micro_zoo.llm, agent_pool)


@pytest.fixture(scope="session")
def agents_llm(
    request: pytest.FixtureRequest, micro_zoo: ZooManifest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LLMServiceHandle]:
    """The shared vLLM `llm_service`; LADA_TEST_AGENT_LLM_BACKEND=transformers starts a
    transformers-backed one instead (for machines where the vLLM engine cannot run)."""
    backend = os.environ.get("LADA_TEST_AGENT_LLM_BACKEND", "vllm")
    if backend == "vllm":
        yield request.getfixturevalue("llm_service")
        return
    handle = start_llm_service(
        Path(micro_zoo.llm),
        tmp_path_factory.mktemp("agents-llm"),
        "agents-llm",
        backend,
    )
    yield handle
    handle.process.stop(timeout=60)


def start_agent(
    log_dir: Path,
    name: str,
    model: Path,
    allocator: str,
    llm: str,
    private_data: str,
    state_dir: Path,
    loss: str = "contrastive",
    capacity: int = 8,
    contribute: bool = False,
    env: dict[str, str] | None = None,
) -> ServiceProcess:
    """A real `lada agent run` process (its Agent service on a fresh port)."""
    port = free_port()
    args = [
        "agent", "run", "--port", str(port), "--metrics-port", "-1",
        "--allocator", allocator, "--llm", llm, "--model", str(model),
        "--private-data", private_data, "--name", name, "--capacity", str(capacity),
        "--loss", loss, "--state-dir", str(state_dir),
        "--contribute" if contribute else "--no-contribute",
    ]  # fmt: skip
    full_env = {**AGENT_TEST_ENV, **(env or {})}
    return start_service(args, port, log_dir, name, env=full_env)


def capture_env(path: Path) -> dict[str, str]:
    """Environment that makes an agent write every outgoing message's raw bytes to `path`."""
    from slm_agent.audit import CAPTURE_ENV

    return {CAPTURE_ENV: str(path)}


def torch_threads_one() -> None:
    """Tests share two CPU cores with other engineers: one thread per process."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


class RecordingProxy:
    """A loopback TCP proxy that keeps every byte the client sent (client -> server only)."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, outgoing: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if outgoing:
                    with self._lock:
                        self.sent.extend(chunk)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self._server.close()


def write_private_jsonl(problems: Sequence[Problem], path: Path) -> str:
    """Private data as a JSONL file (ids kept); returns its dataset spec."""
    return write_jsonl(list(problems), path)


def private_only(problems: Sequence[Problem], public: Sequence[Problem]) -> list[Problem]:
    """Drop private problems whose question or reference also exists in the public pool."""
    questions = {p.question for p in public}
    references = {p.reference for p in public}
    return [p for p in problems if p.question not in questions and p.reference not in references]
