"""Learnability probe: runs end to end on the micro zoo and writes its tables into a doc."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lada.probe as probe
from lada.tasks import Problem, format_prompt, format_target, load_dataset
from lada.zoo import ZooManifest


def _reference_paths(
    _model: Any, _tok: Any, problems: list[Problem], m: int, _t: float, _seed: int
) -> dict[str, list[Any]]:
    """The micro LLM knows nothing: stand in its paths by the references (one wrong)."""
    from slm_agent.rounds import LLMPath

    return {
        p.id: [
            LLMPath(format_target(p.reference), -0.1 * (1 + i % 3), True)
            for i in range(max(1, m - 1))
        ]
        + [LLMPath(" 1+1=2\n#### 2", -2.0, p.answer == "2")]
        for p in problems
    }


def test_units_domain_is_client_only_and_selectable() -> None:
    units = load_dataset("synthetic:domains=units,n=30,seed=1")
    assert {p.domain for p in units} == {"units"}
    assert "units" not in {p.domain for p in load_dataset("synthetic:domains=all,n=50,seed=1")}
    both = load_dataset("synthetic:domains=all+units,n=50,seed=1")
    assert {p.domain for p in both} == {*probe.DOMAINS, "units"}
    assert all(
        p.reference.splitlines()[0].split("=")[0].endswith(("*12", "*2", "*7")) for p in units
    )


def test_probe_runs_on_micro_zoo(
    micro_zoo: ZooManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "llm_paths", _reference_paths)
    settings = probe.ProbeSettings(
        profile="micro",
        root=micro_zoo.path.parent if micro_zoo.path else None,
        test_spec="synthetic:domains=all+units,n=20,seed=7",
        pool_spec="synthetic:domains=all+units,n=200,seed=11",
        distill_samples=6,
        gap_samples_per_domain=3,
        private_size=8,
        cache_dir=tmp_path / "cache",
    )
    settings.trainer.max_new_tokens = 8
    result = probe.run_probe(settings, log=lambda _line: None)
    again = probe.run_probe(settings, log=lambda _line: None)  # from the cache
    assert again["accuracy"] == result["accuracy"]
    assert set(result["accuracy"]) == {"llm", *micro_zoo.slms}
    assert all(len(d["foreign"]["after"]) == 4 and d["train_steps"] > 0 for d in result["distill"])
    assert all(len(g["quintiles"]) == 5 for g in result["gaps"])
    assert "absorb" not in result  # the micro zoo has no client-only SLM
    names = {t["target"] for t in result["targets"]}
    assert "LLM >= 90% on purchases" in names and "LLM <= 20% on units (client-only)" in names
    doc = tmp_path / "zoo.md"
    doc.write_text("# Zoo\n\nintro\n")
    probe.write_docs(probe.render_markdown(result), doc)
    probe.write_docs(probe.render_markdown(result), doc)  # replaced, not appended twice
    text = doc.read_text()
    assert text.startswith("# Zoo\n\nintro") and text.count(probe.MARK_BEGIN) == 1
    assert "| `llm` |" in text and "**Targets**" in text


ROUTE_SET = load_dataset("synthetic:domains=all+units,n=200,seed=31")


def _pairs(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(format_prompt(p.question), format_target(p.reference)) for p in problems]


@pytest.mark.parametrize(("route", "public_routed"), [("all", 1.0), ("gate", 0.0)])
def test_the_absorb_probe_sends_test_problems_where_the_service_would(
    route: str, public_routed: float
) -> None:
    """Under the gate the base model answers the public domains; under `all`, the adapter."""
    units = [p for p in ROUTE_SET if p.domain == "units"]
    public = [p for p in ROUTE_SET if p.domain != "units"]
    test = load_dataset("synthetic:domains=all,n=40,seed=32")
    gate = probe._absorb_gate(route, _pairs(units), _pairs(public))
    routed = probe._adapter_routes(gate, test)
    assert sum(routed) / len(routed) == public_routed
