"""The `lada` CLI: every subcommand explains itself; bad usage is one line and exit 2."""

from __future__ import annotations

import json
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
    ["agent", "invite"],
    ["agent", "invitations"],
    ["agent", "uninvite"],
    ["run", "extend"],
    ["up"],
    ["status"],
    ["allocation"],
    ["models", "build"],
    ["eval"],
    ["experiment", "run"],
    ["experiment", "choices"],
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


def test_models_build_micro_links_every_model(tmp_path) -> None:
    result = lada("models", "build", "--profile", "micro", "--out", str(tmp_path / "zoo"))
    assert result.returncode == 0, result.stderr[-2000:]
    links = sorted(p.name for p in (tmp_path / "zoo" / "micro").iterdir())
    assert links == ["llm", "slm-percentages", "slm-purchases", "slm-rates"]
    assert all((tmp_path / "zoo" / "micro" / name / "config.json").is_file() for name in links)


def test_eval_prints_a_table_and_writes_json(micro_zoo, tmp_path) -> None:
    out = tmp_path / "eval.json"
    result = lada(
        "eval",
        "--model",
        str(micro_zoo.llm),
        "--data",
        "synthetic:domains=all,n=8,seed=3",
        "--pass-k",
        "2",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "|" in result.stdout
    report = json.loads(out.read_text())
    assert report["n"] == 8
    assert set(report["by_domain"]) <= {"purchases", "rates", "percentages", "comparisons"}


def test_eval_of_a_model_dir_missing_files_is_one_line(tmp_path) -> None:
    (tmp_path / "broken").mkdir()
    result = lada("eval", "--model", str(tmp_path / "broken"), "--data", "synthetic:n=2")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "config.json" in result.stderr


def test_eval_with_an_unknown_data_source_lists_the_valid_ones(micro_zoo) -> None:
    result = lada("eval", "--model", str(micro_zoo.llm), "--data", "hub:gsm8k")
    assert result.returncode == 1
    assert "synthetic" in result.stderr and "jsonl" in result.stderr


def test_a_probe_trainer_override_with_an_unknown_field_is_one_line_naming_it() -> None:
    result = lada("models", "probe", "--trainer", "distill_rout=gate", "--doc", "")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "--trainer" in result.stderr and "distill_rout" in result.stderr


def test_an_unknown_allocator_role_in_the_config_is_one_line_naming_the_field(tmp_path) -> None:
    config = tmp_path / "allocator.yaml"
    config.write_text("allocator:\n  role: sidecar\n")
    result = lada("allocator", "serve", "--port", "0", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "role: 'sidecar' is not one of all, rpc, driver" in result.stderr
