"""Absorb modes without an engine: the cumulative contributions a version records, their
file, the `absorb_mode` setting and the versions file that records it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lada.config import ConfigError, LLMServiceConfig
from llm_service.absorbed import (
    CONTRIBUTIONS_FILE,
    cumulative,
    read_contributions,
    write_contributions,
)
from llm_service.main import build_core
from llm_service.settings import LLMServiceExtras
from llm_service.types import Contribution
from llm_service.versions import VersionRegistry

OLD = [Contribution("syn-1", " 1+1=2\n#### 2"), Contribution("syn-2", " 2+2=4\n#### 4")]


def test_cumulative_puts_the_new_contributions_before_the_parents() -> None:
    new = [Contribution("syn-3", " 3\n#### 3")]
    assert cumulative(OLD, new) == new + OLD


def test_cumulative_keeps_each_distinct_sample_and_path_once() -> None:
    new = [
        Contribution("syn-1", " 1+1=2\n#### 2", "agent-b"),  # the parent's pair, another agent
        Contribution("syn-1", " 2-0=2\n#### 2"),  # the same sample, another path
        Contribution("syn-1", " 2-0=2\n#### 2"),
    ]
    assert cumulative(OLD, new) == [
        Contribution("syn-1", " 1+1=2\n#### 2"),
        Contribution("syn-1", " 2-0=2\n#### 2"),
        OLD[1],
    ]


def test_cumulative_of_a_first_absorb_is_its_distinct_contributions() -> None:
    assert cumulative([], [OLD[0], OLD[1], OLD[0]]) == OLD


def test_contributions_round_trip_through_their_file(tmp_path: Path) -> None:
    odd = [*OLD, Contribution("syn-9", ' "quoted" \\ é\n\n#### 9')]
    write_contributions(tmp_path, odd)
    assert read_contributions(tmp_path) == odd


def test_the_file_holds_one_sample_id_and_path_object_per_line(tmp_path: Path) -> None:
    write_contributions(tmp_path, [Contribution("syn-1", " 2\n#### 2", "agent-a")])
    lines = (tmp_path / CONTRIBUTIONS_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"sample_id": "syn-1", "path": " 2\n#### 2"}]


def test_a_directory_without_the_file_has_no_recorded_contributions(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_contributions(tmp_path)


def test_rebase_is_the_default_absorb_mode() -> None:
    assert LLMServiceExtras().absorb_mode == "rebase"
    assert LLMServiceExtras.from_env({}).absorb_mode == "rebase"


def test_absorb_mode_is_read_from_the_environment() -> None:
    extras = LLMServiceExtras.from_env({"LADA_LLM_ABSORB_MODE": "continue"})
    assert extras.absorb_mode == "continue"
    extras.check()


def test_an_unknown_absorb_mode_is_rejected_naming_the_allowed_values() -> None:
    extras = LLMServiceExtras.from_env({"LADA_LLM_ABSORB_MODE": "merge"})
    with pytest.raises(ConfigError, match=r"absorb_mode: 'merge' is not one of rebase, continue"):
        extras.check()


def test_the_service_rejects_an_unknown_absorb_mode_before_loading_a_model(tmp_path) -> None:
    config = LLMServiceConfig(model=str(tmp_path / "no-model"), backend="transformers")
    with pytest.raises(ConfigError, match="absorb_mode"):
        build_core(config, LLMServiceExtras(state_dir=str(tmp_path), absorb_mode="Rebase"))


def test_a_versions_file_written_before_absorb_mode_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "versions.json"
    v1 = {"version": "v1", "parent": "base", "adapter_dir": "a", "absorbed_ids": ["syn-1"]}
    path.write_text(json.dumps({"serving": "v1", "versions": [{"version": "base"}, v1]}))
    registry = VersionRegistry(path)
    info = registry.get("v1")
    assert registry.serving == "v1" and info is not None
    assert (info.absorb_mode, info.absorbed_ids) == ("", ["syn-1"])
