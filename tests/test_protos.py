"""The wire format: stubs match the protos, enums start UNSPECIFIED, every field is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lada import protogen

PROTOS = protogen.proto_files()


def test_generated_stubs_are_not_stale(tmp_path: Path) -> None:
    fresh = protogen.generate(tmp_path)
    committed = Path(protogen.REPO_ROOT / protogen.STUB_PACKAGE)
    stale = [p.name for p in fresh if p.read_bytes() != (committed / p.name).read_bytes()]
    assert fresh, "protoc produced nothing"
    assert not stale, f"stale stubs (run `make protos`): {stale}"


def test_there_is_a_proto_per_service() -> None:
    assert {p.stem for p in PROTOS} >= {"allocator", "llm_service", "agent", "common"}


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: p.name)
def test_every_enum_starts_with_unspecified_zero(proto: Path) -> None:
    text = proto.read_text()
    for name, body in re.findall(r"enum (\w+) \{(.*?)\}", text, flags=re.S):
        first = re.search(r"(\w+)\s*=\s*0;", body)
        assert first and first.group(1).endswith("_UNSPECIFIED"), f"{proto.name}: enum {name}"


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: p.name)
def test_every_field_has_a_comment(proto: Path) -> None:
    lines = proto.read_text().splitlines()
    field = re.compile(r"^\s*(repeated\s+|optional\s+)?[\w.]+\s+\w+\s*=\s*\d+;")
    undocumented = [
        f"{proto.name}:{i + 1}: {line.strip()}"
        for i, line in enumerate(lines)
        if field.match(line) and not lines[i - 1].strip().startswith("//")
    ]
    assert not undocumented, "\n".join(undocumented)


@pytest.mark.parametrize("proto", PROTOS, ids=lambda p: p.name)
def test_each_rpc_has_its_own_request_and_response(proto: Path) -> None:
    rpcs = re.findall(
        r"rpc (\w+)\((?:stream )?(\w+)\) returns \((?:stream )?(\w+)\)", proto.read_text()
    )
    for name, request, response in rpcs:
        assert (request, response) == (f"{name}Request", f"{name}Response") or (
            name == "WatchRounds" and response == "RoundEvent"
        ), name
