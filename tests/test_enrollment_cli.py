"""The operator's and the organisation's side of joining, as a user types it: `lada agent
invite`, `lada agent invitations`, `lada run extend`, and RegisterAgent from grpcurl (a
real outside client that knows the service only through server reflection)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures_allocator import OPERATOR_TOKEN, AllocatorDeployment
from tests.procs import REPO_ROOT

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def lada(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lada.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LADA_OPERATOR_TOKEN": OPERATOR_TOKEN},
    )


def grpcurl(address: str, method: str, body: dict[str, object]) -> dict[str, object]:
    done = subprocess.run(
        [GRPCURL, "-plaintext", "-d", json.dumps(body), address, f"lada.v1.Allocator/{method}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def allocator(allocator_deployment: Callable[..., AllocatorDeployment]) -> AllocatorDeployment:
    return allocator_deployment(open_enrollment=False)


def test_invite_writes_a_private_secret_file_and_keeps_it_on_a_second_run(
    allocator: AllocatorDeployment, tmp_path: Path
) -> None:
    address = allocator.replicas[0].address
    first = lada(
        "agent", "invite", "clinic-z", "--secret-dir", str(tmp_path), "--allocator", address
    )
    assert first.returncode == 0, first.stderr
    secret_file = tmp_path / "clinic-z.secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret_file.read_text().startswith("lada-inv-")
    assert secret_file.read_text() not in first.stdout
    again = lada(
        "agent", "invite", "clinic-z", "--secret-dir", str(tmp_path), "--allocator", address
    )
    assert again.returncode == 0 and again.stdout.startswith(f"kept {secret_file}")
    listed = json.loads(lada("agent", "invitations", "--allocator", address, "--json").stdout)
    assert [(row["name"], row["state"]) for row in listed] == [("clinic-z", "PENDING")]


def test_a_bad_expiry_is_one_line_and_invites_nobody(allocator: AllocatorDeployment) -> None:
    done = lada(
        "agent", "invite", "x", "--expires", "5q", "--allocator", allocator.replicas[0].address
    )
    assert done.returncode == 1
    assert done.stderr == "lada: error: --expires: cannot read '5q' (e.g. 90m, 24h, 7d)\n"
    assert allocator.store.invitations() == []


def test_grpcurl_registers_with_an_invitation_and_a_retry_returns_the_same_agent(
    allocator: AllocatorDeployment, test_pool_fingerprint: str
) -> None:
    address = allocator.replicas[0].address
    invited = json.loads(
        lada("agent", "invite", "clinic-g", "--allocator", address, "--json").stdout
    )
    request = {
        "name": "clinic-g",
        "capacity": 8,
        "pool_fingerprint": test_pool_fingerprint,
        "enrollment_secret": invited[0]["enrollment_secret"],
    }
    first = grpcurl(address, "RegisterAgent", request)
    retry = grpcurl(address, "RegisterAgent", request)
    assert retry["agent_id"] == first["agent_id"] and retry["resumed"] is True
    assert "resumed" not in first  # proto3 JSON leaves out false
    assert retry["token"] != first["token"]


def test_run_extend_reports_the_new_length(allocator: AllocatorDeployment) -> None:
    done = lada("run", "extend", "--rounds", "0", "--allocator", allocator.replicas[0].address)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "run: until stopped (now at round 0)\n"
    assert allocator.store.total_rounds() == 0
