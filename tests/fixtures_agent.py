"""Pytest fixtures for the agent tests (registered in conftest.py via pytest_plugins).

Agents here use the micro zoo's real models. `LocalLLM` is the LLMPort a simulation uses:
the real micro LLM in-process (transformers), standing in for the gRPC LLM service in
loop tests that are about the agent, not the service.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lada.modeling import generate, load_causal_lm, score_completions
from lada.tasks import Problem, format_prompt, is_correct, load_dataset
from lada.zoo import ZooManifest
from slm_agent.rounds import AllocatedSample, LLMPath
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
        fresh = [i for i in ids if i not in self._cache]
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
                self._cache[sample_id] = [
                    LLMPath(t, s.normalized, is_correct(t, problem.answer))
                    for t, s in zip(texts, scores, strict=True)
                ]
        return {i: self._cache[i] for i in ids}


@pytest.fixture(scope="session")
def agent_pool() -> dict[str, Problem]:
    return {p.id: p for p in load_dataset(AGENT_POOL)}


@pytest.fixture(scope="session")
def private_rates() -> list[Problem]:
    return load_dataset(PRIVATE_RATES)


@pytest.fixture(scope="session")
def local_llm(micro_zoo: ZooManifest, agent_pool: dict[str, Problem]) -> LocalLLM:
    return LocalLLM(micro_zoo.llm, agent_pool)


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
