"""The run report (report.md) says what a user came to see: per agent the change in test
accuracy, beside it a baseline policy at the same budget, and the LLM per domain."""

from __future__ import annotations

import pytest

from lada.cluster import add_baseline_metrics, own_flips
from lada.report import (
    Flips,
    allocation_domains,
    flips,
    llm_accuracy_of,
    render_markdown,
    reward_terms_by_gap,
)
from lada.tasks import Problem, format_prompt
from lada.v1 import allocator_pb2

METRICS = {
    "run_id": "demo-1",
    "policy": "lada",
    "loss": "sft",
    "rounds": 3,
    "final_eval": {
        "agent-units": {
            "before": 0.25,
            "after": 0.30,
            "own_before": 0.70,
            "own_after": 0.68,
            "own_nlp_before": -0.03,
            "own_nlp_after": -0.02,
        }
    },
    "baseline": {
        "policy": "random",
        "mode": "simulation",
        "wall_seconds": 80.0,
        "final_eval": {
            "agent-units": {"before": 0.25, "after": 0.24, "own_before": 0.70, "own_after": 0.66}
        },
    },
    "llm_accuracy": {"base": 0.7, "v2": 0.75},
    "llm_accuracy_by_domain": {
        "base": {"all": 0.7, "purchases": 0.96, "units": 0.02},
        "v2": {"all": 0.75, "purchases": 0.95, "units": 0.30},
    },
}


def test_each_agent_row_shows_its_change_and_the_baseline_beside_it() -> None:
    text = render_markdown(METRICS)
    row = next(line for line in text.splitlines() if line.startswith("| agent-units"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "agent-units",
        "0.250 -> 0.300",
        "+5.0 pts",
        "0.700 -> 0.680",
        "-2.0 pts",
        "-0.030 -> -0.020",
        "0.240",
        "-1.0 pts",
        "0.660",
        "-4.0 pts",
    ]
    assert "after a `random` run at the same budget" in text


def test_flips_count_problems_newly_right_and_no_longer_right() -> None:
    assert flips(["a", "b", "c"], ["b", "c", "d", "e"]) == Flips(up=2, down=1, p=1.0)


def test_a_one_sided_split_is_unlikely_as_churn_and_an_even_one_is_not() -> None:
    """Exact McNemar: 6 up, 0 down is 2/64; 7 up, 5 down is 2 * 1586/4096."""
    assert flips([], list("abcdef")).p == pytest.approx(0.03125)
    twelve = [f"q{i}" for i in range(12)]
    assert flips(twelve[:5], twelve[5:]).p == pytest.approx(0.7744, abs=1e-4)
    assert flips(["a"], ["a"]) == Flips(up=0, down=0, p=1.0)


def test_the_own_change_shows_the_problems_behind_it_with_its_p_value() -> None:
    final = {**METRICS["final_eval"]["agent-units"], "own_up": 3, "own_down": 7, "own_p": 0.34375}
    text = render_markdown({**METRICS, "final_eval": {"agent-units": final}})
    row = next(line for line in text.splitlines() if line.startswith("| agent-units"))
    assert "| -2.0 pts (3 up, 7 down, p 0.34) |" in row
    assert "McNemar" in text


def test_the_baseline_is_paired_with_the_agents_own_starting_answers() -> None:
    metrics = {
        "final_eval": {
            "agent-units": {"before": 0.3, "own_before": 0.5, "own_correct_before": ["a", "b"]}
        }
    }
    baseline = {
        "policy": "random",
        "after": {"agent-units": {"all": 0.4, "own": 0.75, "own_correct": ["b", "c", "d"]}},
    }
    add_baseline_metrics(metrics, baseline)
    paired = metrics["baseline"]["final_eval"]["agent-units"]
    assert paired == {
        "before": 0.3,
        "after": 0.4,
        "own_before": 0.5,
        "own_after": 0.75,
        **own_flips(["a", "b"], ["b", "c", "d"]),
    }
    assert (paired["own_up"], paired["own_down"]) == (2, 1)


def test_the_llm_table_shows_the_client_only_domain_per_version() -> None:
    text = render_markdown(METRICS)
    assert "| version | all | purchases | units (client-only) |" in text
    assert "| v2 | 0.750 | 0.950 | 0.300 |" in text


def test_the_llm_table_shows_which_prompts_the_last_versions_adapter_answered() -> None:
    text = render_markdown(METRICS | {"llm_adapter_share": {"purchases": 0.0, "units": 1.0}})
    assert "| answered by v2's adapter | – | 0.000 | 1.000 |" in text


def test_llm_accuracy_is_measured_overall_and_per_domain() -> None:
    problems = [
        Problem("a", "2+2?", "2+2=4\n#### 4", "4", "purchases", 1),
        Problem("b", "3+3?", "3+3=6\n#### 6", "6", "purchases", 1),
        Problem("c", "1 dozen?", "1*12=12\n#### 12", "12", "units", 1),
    ]
    right = {format_prompt(p.question): f"#### {p.answer}" for p in problems}

    def answers(prompts: list[str], version: str) -> list[str]:
        return [right[p] if version == "v1" or "2+2" in p else "#### 0" for p in prompts]

    accuracy = llm_accuracy_of(answers, ["base", "v1"], problems)
    assert accuracy["base"] == {"all": 1 / 3, "purchases": 0.5, "units": 0.0}
    assert accuracy["v1"] == {"all": 1.0, "purchases": 1.0, "units": 1.0}


def test_llm_accuracy_asks_for_at_most_a_request_limit_of_prompts_at_a_time() -> None:
    """7 problems in requests of at most 3 (the service refuses larger ones): 3 + 3 + 1 per
    version, answers kept in order."""
    problems = [Problem(str(i), f"{i}+0?", f"#### {i}", str(i), "purchases", 1) for i in range(7)]
    sizes: list[int] = []

    def answers(prompts: list[str], version: str) -> list[str]:
        sizes.append(len(prompts))
        return [f"#### {p.split('+')[0].split()[-1]}" for p in prompts]

    accuracy = llm_accuracy_of(answers, ["base"], problems, chunk=3)
    assert sizes == [3, 3, 1]
    assert accuracy["base"] == {"all": 1.0, "purchases": 1.0}


def test_agents_are_reported_in_the_order_the_config_lists_them() -> None:
    from lada.config import ClusterAgentConfig, ClusterConfig
    from lada.report import in_config_order

    config = ClusterConfig(
        agents=[ClusterAgentConfig(name=n, model="m", domains=["rates"]) for n in ("b", "a")]
    )
    registered = {"a": [1], "stranger": [3], "b": [2]}
    assert list(in_config_order(registered, config)) == ["b", "a", "stranger"]


def _stats(sample_id: str, llm: float, before: float, after: float, correct: bool, flip: int):
    path = allocator_pb2.PathStats(
        llm_normalized_logprob=llm,
        correct=correct,
        slm_normalized_logprob_before=before,
        slm_normalized_logprob_after=after,
    )
    return allocator_pb2.SampleStats(
        sample_id=sample_id, paths=[path], correct_before=flip < 0, correct_after=flip > 0
    )


def test_each_samples_gap_comes_with_the_two_terms_of_its_reward() -> None:
    terms = reward_terms_by_gap(
        [
            _stats("s0", llm=-0.5, before=-2.0, after=-1.25, correct=True, flip=1),
            _stats("s1", llm=-0.2, before=-0.3, after=-0.35, correct=True, flip=-1),
            _stats("s2", llm=-0.4, before=-1.0, after=-0.5, correct=False, flip=1),
        ],
        {"s0": 3, "s1": 0, "s2": 1},
    )
    # s2 has no correct LLM path: no gap, so it is left out of all three lists alike
    assert terms["gaps"] == pytest.approx([1.5, 0.1])
    assert terms["nlp_progress"] == pytest.approx([0.75, -0.05])
    assert terms["greedy_flips"] == [1.0, -1.0]
    assert terms["gap_clusters"] == [3, 0]


def test_an_agents_samples_are_counted_by_domain_with_its_home_share() -> None:
    domain_of = {"a": "rates", "b": "rates", "c": "units", "d": "purchases"}
    given = allocation_domains(["a", "b", "c", "d"], domain_of, home=["rates"])
    assert given == {"domains": {"purchases": 1, "rates": 2, "units": 1}, "home_share": 0.5}


def test_an_agent_given_nothing_has_no_home_share() -> None:
    assert allocation_domains([], {}, home=["rates"]) == {"domains": {}, "home_share": None}
