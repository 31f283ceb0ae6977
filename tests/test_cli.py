"""The `lada` CLI: every subcommand explains itself; bad usage is one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.procs import REPO_ROOT

SUBCOMMANDS = [
    ["version"],
    ["allocator", "serve"],
    ["llm", "serve"],
    ["agent", "run"],
    ["agent", "audit"],
    ["agent", "revoke"],
    ["up"],
    ["status"],
    ["allocation"],
    ["models", "build"],
    ["eval"],
    ["experiment", "run"],
    ["bench"],
]


def lada(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lada.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(command: list[str]) -> None:
    result = lada(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: lada " + " ".join(command) in result.stdout
    assert len(result.stdout.splitlines()) > 3


def test_version_prints_the_package_version() -> None:
    result = lada("version")
    assert result.returncode == 0
    assert result.stdout.startswith("lada 0.1.0")


def test_unknown_subcommand_is_one_line_and_exit_2() -> None:
    result = lada("frobnicate")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "No such command 'frobnicate'" in result.stderr


def test_bad_flag_is_one_line_and_exit_2() -> None:
    result = lada("allocator", "serve", "--no-such-flag")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--no-such-flag" in result.stderr


def test_bad_flag_value_is_one_line_and_exit_2() -> None:
    result = lada("allocator", "serve", "--port", "not-a-number")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--port" in result.stderr


def test_unreachable_redis_is_a_clear_error_not_a_traceback() -> None:
    result = lada("allocator", "serve", "--port", "0", "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.stderr
