"""`lada agent run` with bad input: refused before registering, clear log line, non-zero exit."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from allocator.client import AgentClient
from lada.zoo import ZooManifest
from slm_agent.audit import AuditLog
from slm_agent.main import EXIT_BAD_INPUT, EXIT_NO_ROUND_LEFT, EXIT_REFUSED, EXIT_UNREACHABLE
from tests.fixtures_agent import AGENT_POOL, PRIVATE_RATES, start_agent
from tests.fixtures_allocator import (
    AllocatorDeployment,
    finish_one_round_run,
    synthetic_stats,
    wait_for,
    wait_phase,
)
from tests.procs import ServiceProcess, free_port

FAST_GIVE_UP = {"LADA_AGENT_CONNECT_DEADLINE_S": "3"}


def run_to_exit(
    tmp_path: Path,
    zoo: ZooManifest,
    private_data: str,
    allocator: str = "",
    llm: str = "",
    env: dict[str, str] | None = None,
) -> tuple[int, ServiceProcess, float]:
    started = time.monotonic()
    process = start_agent(
        tmp_path, "clinic", zoo.slms["slm-rates"], allocator or f"127.0.0.1:{free_port()}",
        llm or f"127.0.0.1:{free_port()}", private_data, tmp_path / "state", env=env,
    )  # fmt: skip
    code = process.proc.wait(120)
    return code, process, time.monotonic() - started


def sent_nothing(tmp_path: Path) -> bool:
    return AuditLog(tmp_path / "state" / "audit.jsonl").read() == []


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("", "private_data: empty dataset spec"),
        ("synthetic:n=abc", "private_data: synthetic:n=abc: n must be an integer"),
        ("nowhere:x", "private_data: unknown dataset source 'nowhere'"),
        ("jsonl:/does/not/exist.jsonl", "private_data: data file not found"),
        ("synthetic:n=0", "private_data: 'synthetic:n=0' holds no samples"),
    ],
)
def test_bad_private_data_is_refused_before_anything_is_sent(
    micro_zoo: ZooManifest, tmp_path: Path, spec: str, why: str
) -> None:
    code, process, _ = run_to_exit(tmp_path, micro_zoo, spec)
    assert code == EXIT_BAD_INPUT
    assert why in process.log()
    assert sent_nothing(tmp_path)


@pytest.mark.parametrize("rate", ["0", "-1e-4", "nan"])
def test_a_learning_rate_that_is_not_positive_is_refused_before_anything_is_sent(
    micro_zoo: ZooManifest, tmp_path: Path, rate: str
) -> None:
    env = {"LADA_AGENT_LEARNING_RATE": rate}
    code, process, _ = run_to_exit(tmp_path, micro_zoo, PRIVATE_RATES, env=env)
    assert code == EXIT_BAD_INPUT
    assert "learning_rate: " in process.log() and "must be a finite number > 0" in process.log()
    assert sent_nothing(tmp_path)


def test_a_malformed_private_file_names_its_line(micro_zoo: ZooManifest, tmp_path: Path) -> None:
    data = tmp_path / "private.jsonl"
    data.write_text('{"question": "Q1?", "answer": "3"}\n{"question": 5}\n')
    code, process, _ = run_to_exit(tmp_path, micro_zoo, f"jsonl:{data}")
    assert code == EXIT_BAD_INPUT
    assert f"private_data: {data}:2:" in process.log()


def test_an_unreachable_allocator_is_retried_then_given_up_with_exit_3(
    micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    code, process, seconds = run_to_exit(tmp_path, micro_zoo, PRIVATE_RATES, env=FAST_GIVE_UP)
    log = process.log()
    assert code == EXIT_UNREACHABLE
    assert log.count("unreachable; retrying in") >= 2
    assert "giving up: allocator at 127.0.0.1:" in log and "unreachable after 3s" in log
    assert log.index("agent service listening") < log.index("unreachable; retrying")
    assert 3.0 <= seconds < 60.0
    assert sent_nothing(tmp_path)


def test_an_unreachable_llm_service_stops_the_agent_before_it_registers(
    allocator_deployment: Callable[..., AllocatorDeployment],
    micro_zoo: ZooManifest,
    tmp_path: Path,
) -> None:
    deployment = allocator_deployment(public_pool=AGENT_POOL, min_agents=1)
    code, process, _ = run_to_exit(
        tmp_path, micro_zoo, PRIVATE_RATES, allocator=deployment.replicas[0].address,
        env=FAST_GIVE_UP,
    )  # fmt: skip
    assert code == EXIT_UNREACHABLE
    assert "giving up: LLM service at" in process.log()
    assert deployment.store.list_agents() == []
    assert sent_nothing(tmp_path)


def test_a_public_pool_other_than_the_allocators_is_refused_with_exit_4(
    allocator_deployment: Callable[..., AllocatorDeployment],
    micro_zoo: ZooManifest,
    tmp_path: Path,
) -> None:
    deployment = allocator_deployment(public_pool=AGENT_POOL, min_agents=1)
    llm_stand_in = deployment.replicas[0].address  # any live endpoint: nothing reaches it
    code, process, _ = run_to_exit(
        tmp_path, micro_zoo, PRIVATE_RATES, allocator=deployment.replicas[0].address,
        llm=llm_stand_in, env={"LADA_AGENT_PUBLIC_POOL": "synthetic:domains=all,n=50,seed=3"},
    )  # fmt: skip
    assert code == EXIT_REFUSED
    assert "refused: FAILED_PRECONDITION: pool_fingerprint:" in process.log()
    assert deployment.store.list_agents() == []
    assert [r.rpc for r in AuditLog(tmp_path / "state" / "audit.jsonl").read()] == [
        "/lada.v1.Allocator/RegisterAgent"
    ]


def test_an_agent_without_an_invitation_is_refused_with_exit_4(
    allocator_deployment: Callable[..., AllocatorDeployment],
    micro_zoo: ZooManifest,
    tmp_path: Path,
) -> None:
    deployment = allocator_deployment(public_pool=AGENT_POOL, min_agents=1, open_enrollment=False)
    address = deployment.replicas[0].address
    code, process, _ = run_to_exit(tmp_path, micro_zoo, PRIVATE_RATES, address, address)
    assert code == EXIT_REFUSED
    assert (
        "refused: UNAUTHENTICATED: enrollment_secret: no invitation matches this secret"
        in process.log()
    )
    assert deployment.store.list_agents() == []


def test_an_unreadable_enrollment_secret_file_is_bad_input(
    micro_zoo: ZooManifest, tmp_path: Path
) -> None:
    code, process, _ = run_to_exit(
        tmp_path, micro_zoo, PRIVATE_RATES,
        env={"LADA_AGENT_ENROLLMENT_SECRET_FILE": str(tmp_path / "missing.secret")},
    )  # fmt: skip
    assert code == EXIT_BAD_INPUT
    assert "bad input: enrollment_secret_file: cannot read" in process.log()
    assert sent_nothing(tmp_path)


def test_an_agent_joining_a_finished_run_says_so_and_exits_5(
    allocator_deployment: Callable[..., AllocatorDeployment],
    micro_zoo: ZooManifest,
    tmp_path: Path,
) -> None:
    deployment = allocator_deployment(public_pool=AGENT_POOL, rounds=1, min_agents=1)
    finish_one_round_run(deployment)
    address = deployment.replicas[0].address
    code, process, _ = run_to_exit(tmp_path, micro_zoo, PRIVATE_RATES, address, address)
    assert code == EXIT_NO_ROUND_LEFT
    (line,) = [line for line in process.log().splitlines() if "no round left" in line]
    assert "finished, last round 1" in line and "lada run extend" in line
    assert [a.name for a in deployment.store.list_agents()] == ["early"]


def test_an_agent_whose_run_ends_before_its_first_round_says_so_and_exits_5(
    allocator_deployment: Callable[..., AllocatorDeployment],
    micro_zoo: ZooManifest,
    tmp_path: Path,
) -> None:
    deployment = allocator_deployment(public_pool=AGENT_POOL, rounds=2, min_agents=1)
    address = deployment.replicas[0].address
    early = AgentClient(address)
    early.register("early", 4, deployment.store.run_info()["pool_fingerprint"])
    with deployment.operator() as operator:
        wait_phase(operator, 1, "ALLOCATED")
        process = start_agent(
            tmp_path, "clinic", micro_zoo.slms["slm-rates"], address, address, PRIVATE_RATES,
            tmp_path / "state",
        )  # fmt: skip
        joined = wait_for(lambda: deployment.store.agent_id_by_name("clinic"), 120, "clinic")
        assert deployment.store.get_agent(joined).first_round == 2
        operator.set_total_rounds(1)  # the operator shortens the run under the new agent
        early.report_stats(1, synthetic_stats(early.get_allocation(1).samples))
        code = process.proc.wait(120)
    assert code == EXIT_NO_ROUND_LEFT
    (line,) = [line for line in process.log().splitlines() if "no round left" in line]
    assert "the run finished at round 1, before this agent's first round 2" in line
