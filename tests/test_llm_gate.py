"""The adapter gate (`absorb_route gate`, llm_service/gate.py): a version answers with its
adapter only the prompts that look like what it absorbed, and with the base model the
prompts that look like what the base already answered soundly."""

from __future__ import annotations

import json
import math
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from lada.config import ConfigError, LLMServiceConfig
from lada.gate import GATE_FILE, AdapterGate
from lada.tasks import CLIENT_DOMAINS, format_prompt, format_target, load_dataset
from llm_service.gate import replay_to_train, serving_routes
from llm_service.main import build_core
from llm_service.settings import LLMServiceExtras
from llm_service.types import AbsorbOverrides, Contribution, Sampling
from llm_service.versions import VersionInfo

CLIENT_ONLY = CLIENT_DOMAINS[0]
FIT = load_dataset("synthetic:domains=all+units,n=300,seed=21")
HELD_OUT = load_dataset("synthetic:domains=all+units,n=500,seed=22")


def _prompts(problems, client_only: bool) -> list[str]:
    return [format_prompt(p.question) for p in problems if (p.domain == CLIENT_ONLY) == client_only]


@pytest.fixture(scope="module")
def gate() -> AdapterGate:
    """Fitted as an absorb fits it: 60 absorbed client-only prompts, 240 known public ones."""
    return AdapterGate(_prompts(FIT, client_only=True), _prompts(FIT, client_only=False))


def test_the_gate_sends_held_out_client_only_prompts_to_the_adapter(gate) -> None:
    routed = gate.routes(_prompts(HELD_OUT, client_only=True))
    assert sum(routed) / len(routed) >= 0.95


def test_the_gate_keeps_held_out_public_prompts_on_the_base_model(gate) -> None:
    routed = gate.routes(_prompts(HELD_OUT, client_only=False))
    assert sum(routed) / len(routed) <= 0.02


def test_a_gate_routes_the_same_after_a_round_trip_through_its_file(gate, tmp_path) -> None:
    gate.save(tmp_path)
    loaded = AdapterGate.load(tmp_path)
    prompts = [format_prompt(p.question) for p in HELD_OUT]
    assert loaded is not None and loaded.routes(prompts) == gate.routes(prompts)


def test_only_the_replay_the_gate_sends_to_the_adapter_trains_it() -> None:
    """Client-only contributions: no replayed public path trains the adapter."""
    replay = [(prompt, "path") for prompt in _prompts(HELD_OUT, client_only=False)]
    gate = AdapterGate(_prompts(FIT, client_only=True), [prompt for prompt, _ in replay])
    assert replay_to_train(gate, replay, train_all=False) == []
    assert replay_to_train(gate, replay, train_all=True) == replay
    assert replay_to_train(None, replay, train_all=False) == replay


def _purchases_gate() -> tuple[AdapterGate, list]:
    """An S1-like absorb: 60 client-only and 20 purchases contributions; the replay is 400
    public paths, 100 of each public domain."""
    absorbed = (
        _prompts(FIT, client_only=True)
        + [format_prompt(p.question) for p in FIT if p.domain == "purchases"][:20]
    )
    held = [p for p in HELD_OUT if p.domain != CLIENT_ONLY]
    return AdapterGate(absorbed, [format_prompt(p.question) for p in held]), held


def test_replay_of_a_public_domain_the_adapter_absorbed_trains_it() -> None:
    """Contributions on purchases samples send purchases prompts to the adapter, so replayed
    purchases paths train it (it will answer such prompts), and no others."""
    gate, held = _purchases_gate()
    replay = [(format_prompt(p.question), p.domain) for p in held]
    domains = [domain for _, domain in replay_to_train(gate, replay, train_all=False)]
    assert set(domains) == {"purchases"}
    assert domains.count("purchases") >= 15


def test_held_out_routes_of_the_replay_track_the_gates_routes_of_unseen_prompts() -> None:
    """In-sample the gate keeps most of its own known purchases prompts from the adapter; a
    gate fitted without them routes them as it routes unseen purchases prompts."""
    gate, held = _purchases_gate()
    unseen = [p for p in load_dataset("synthetic:domains=purchases,n=200,seed=23")]

    def purchases_share(routed: list[bool], problems: list) -> float:
        hits = [r for r, p in zip(routed, problems, strict=True) if p.domain == "purchases"]
        return sum(hits) / len(hits)

    held_out = purchases_share(gate.known_routes_held_out(), held)
    in_sample = purchases_share(gate.routes(gate.known), held)
    on_unseen = purchases_share(gate.routes([format_prompt(p.question) for p in unseen]), unseen)
    assert abs(held_out - on_unseen) <= 0.1
    assert in_sample < held_out


def test_the_replay_routes_through_a_gate_fitted_on_it() -> None:
    replay = [(prompt, "path") for prompt in _prompts(HELD_OUT, client_only=False)]
    other = AdapterGate(_prompts(FIT, client_only=True), _prompts(FIT, client_only=False))
    with pytest.raises(ValueError, match="replayed prompts"):
        replay_to_train(other, replay, train_all=False)


def _base_answers(problems) -> list[tuple[str, bool]]:
    """The base model's answers as the demo LLM gives them: every client-only one wrong,
    one in twelve public ones wrong (the demo LLM answers 92-98% of each public domain)."""
    return [
        (format_prompt(p.question), p.domain != CLIENT_ONLY and i % 12 != 0)
        for i, p in enumerate(problems)
    ]


def _share(gate: AdapterGate, domain: str) -> float:
    unseen = load_dataset(f"synthetic:domains={domain},n=200,seed=24")
    routed = gate.routes([format_prompt(p.question) for p in unseen])
    return sum(routed) / len(routed)


def _s1_gate(base_answers: list[tuple[str, bool]]) -> AdapterGate:
    """As in S1 at the paper's scale (seed 1, round 5): 13 client-only and 6 purchases
    contributions absorbed, 3 replayed public paths per contribution."""
    absorbed = (
        _prompts(FIT, client_only=True)[:13]
        + [format_prompt(p.question) for p in FIT if p.domain == "purchases"][:6]
    )
    return AdapterGate(absorbed, _prompts(HELD_OUT, client_only=False)[:57], base_answers)


def test_a_gate_given_the_base_answers_keeps_a_domain_the_base_knows_from_the_adapter() -> None:
    """The S1 failure: 6 purchases contributions draw most purchases prompts to the adapter,
    though the base answers them; with the base's answers the gate keeps them on the base."""
    assert _share(_s1_gate([]), "purchases") >= 0.5
    assert _share(_s1_gate(_base_answers(FIT)), "purchases") <= 0.02


def test_the_base_check_still_sends_the_client_only_domain_to_the_adapter() -> None:
    assert _share(_s1_gate(_base_answers(FIT)), CLIENT_ONLY) >= 0.95


def test_a_base_right_wherever_it_was_asked_keeps_every_prompt() -> None:
    answers = [(prompt, True) for prompt in _prompts(FIT, client_only=False)]
    gate = AdapterGate(_prompts(FIT, client_only=True), _prompts(FIT, client_only=False), answers)
    assert gate.routes(_prompts(HELD_OUT, client_only=True)) == [False] * 100


def test_a_base_wrong_wherever_it_was_asked_leaves_the_routes_to_the_absorbed_side() -> None:
    answers = [(prompt, False) for prompt in _prompts(FIT, client_only=False)]
    plain = AdapterGate(_prompts(FIT, client_only=True), _prompts(FIT, client_only=False))
    checked = AdapterGate(plain.absorbed, plain.known, answers)
    prompts = [format_prompt(p.question) for p in HELD_OUT]
    assert checked.routes(prompts) == plain.routes(prompts)


def test_a_gate_keeps_its_base_answers_through_its_file(tmp_path: Path) -> None:
    gate, _ = _purchases_gate()
    checked = AdapterGate(gate.absorbed, gate.known, _base_answers(FIT))
    checked.save(tmp_path)
    loaded = AdapterGate.load(tmp_path)
    prompts = [format_prompt(p.question) for p in HELD_OUT]
    assert loaded is not None and loaded.base_answers == checked.base_answers
    assert loaded.routes(prompts) == checked.routes(prompts)


def test_a_gate_file_written_before_the_base_check_loads_without_it(tmp_path: Path) -> None:
    (tmp_path / GATE_FILE).write_text(
        json.dumps({"absorbed": ["Q: how many dozens"], "known": ["Q: how much money"]})
    )
    loaded = AdapterGate.load(tmp_path)
    assert loaded is not None and loaded.base_answers == []


def test_an_adapter_without_a_gate_file_has_no_gate(tmp_path: Path) -> None:
    assert AdapterGate.load(tmp_path) is None


def test_a_gate_with_no_known_prompts_sends_every_prompt_to_the_adapter() -> None:
    gate = AdapterGate(_prompts(FIT, client_only=True), [])
    assert gate.routes(_prompts(HELD_OUT, client_only=False)[:10]) == [True] * 10


def test_a_gate_needs_the_prompts_its_adapter_absorbed() -> None:
    with pytest.raises(ValueError, match="absorbed"):
        AdapterGate([], _prompts(FIT, client_only=False))


# ---- the setting ---------------------------------------------------------------------------
def test_the_gate_routes_by_default() -> None:
    assert LLMServiceExtras.from_env({}).absorb_route == "gate"


def test_absorb_route_is_read_from_the_environment() -> None:
    extras = LLMServiceExtras.from_env({"LADA_LLM_ABSORB_ROUTE": "all"})
    assert extras.absorb_route == "all"
    extras.check()


def test_an_unknown_absorb_route_is_rejected_naming_the_allowed_values() -> None:
    extras = LLMServiceExtras(absorb_route="router")
    with pytest.raises(ConfigError, match=r"absorb_route: 'router' is not one of all, gate"):
        extras.check()


def test_the_gate_without_replay_is_rejected_naming_the_replay_ratio() -> None:
    extras = LLMServiceExtras(absorb_route="gate", absorb_replay_ratio=0.0)
    with pytest.raises(ConfigError, match="absorb_replay_ratio > 0.*absorb_route all"):
        extras.check()


def test_replay_for_the_gate_alone_is_read_from_the_environment() -> None:
    extras = LLMServiceExtras.from_env({"LADA_LLM_ABSORB_REPLAY_TRAINS": "false"})
    assert extras.absorb_replay_trains is False
    extras.check()


def test_the_gates_base_check_is_on_by_default_and_read_from_the_environment() -> None:
    assert LLMServiceExtras.from_env({}).absorb_gate_base_check is True
    off = LLMServiceExtras.from_env({"LADA_LLM_ABSORB_GATE_BASE_CHECK": "false"})
    assert off.absorb_gate_base_check is False


def test_an_unreadable_replay_trains_value_is_rejected_naming_its_variable() -> None:
    with pytest.raises(ConfigError, match="LADA_LLM_ABSORB_REPLAY_TRAINS: cannot read 'maybe'"):
        LLMServiceExtras.from_env({"LADA_LLM_ABSORB_REPLAY_TRAINS": "maybe"})


def test_without_a_gate_the_replay_always_trains_the_adapter() -> None:
    assert LLMServiceExtras(absorb_route="all", absorb_replay_trains=False).replay_trains_adapter
    assert not LLMServiceExtras(absorb_route="gate").replay_trains_adapter


# ---- a gated version in the LLM service's core ---------------------------------------------
DEMO_LLM = Path(__file__).resolve().parents[1] / "zoo" / "demo" / "llm"  # committed weights
POOL = "synthetic:domains=all+units,n=80,seed=3"


@pytest.fixture(scope="module")
def gated_core(tmp_path_factory):
    """The demo LLM after one gated absorb of 8 client-only reference paths (2 replayed
    base paths per contribution teach the gate what the base knows)."""
    state = tmp_path_factory.mktemp("gated")
    extras = LLMServiceExtras(state_dir=str(state), absorb_route="gate", absorb_replay_ratio=2.0)
    config = LLMServiceConfig(model=str(DEMO_LLM), backend="transformers", public_pool=POOL)
    core = build_core(config, extras)
    units = [p for p in core.pool.values() if p.domain == CLIENT_ONLY]
    contributions = [Contribution(p.id, format_target(p.reference)) for p in units[:8]]
    info = core.absorb(contributions, AbsorbOverrides(epochs=2, learning_rate=1e-2))
    yield core, info, units[8:]
    core.close()


def test_a_gated_absorb_saves_its_gate_beside_the_adapter(gated_core) -> None:
    _, info, _ = gated_core
    gate = AdapterGate.load(Path(info.adapter_dir))
    assert info.absorb_route == "gate" and (Path(info.adapter_dir) / GATE_FILE).exists()
    assert gate is not None and len(gate.absorbed) == 8
    assert len(gate.known) == info.samples_replayed > 0


def test_a_gated_absorb_learns_the_base_answers_of_the_whole_pool(gated_core) -> None:
    """The demo LLM answers no client-only sample of the pool and most public ones."""
    core, info, _ = gated_core
    gate = AdapterGate.load(Path(info.adapter_dir))
    assert gate is not None and len(gate.base_answers) == len(core.pool) == 80
    by_prompt = {format_prompt(p.question): p.domain for p in core.pool.values()}
    right = [ok for prompt, ok in gate.base_answers if by_prompt[prompt] == CLIENT_ONLY]
    public = [ok for prompt, ok in gate.base_answers if by_prompt[prompt] != CLIENT_ONLY]
    assert sum(right) == 0 and sum(public) / len(public) >= 0.85


def test_a_gated_version_answers_public_samples_exactly_as_the_base_model(gated_core) -> None:
    """Generated by the base model under the version's name, then served again from the
    base's cache entries: no second backend call, the same paths."""
    core, info, _ = gated_core
    public = [p.id for p in core.pool.values() if p.domain != CLIENT_ONLY][:6]
    sampling = Sampling(n=2, temperature=1.0, max_tokens=48, seed=4)
    assert (
        core.routes([format_prompt(core.pool[i].question) for i in public], info.version)
        == ["base"] * 6
    )
    calls = core.generate_calls
    gated = core.generate(public, [], sampling, info.version)
    base = core.generate(public, [], sampling, "base")
    assert core.generate_calls == calls + 1
    assert [r.cache_hit for r in base.results] == [True] * 6
    assert [r.paths for r in gated.results] == [r.paths for r in base.results]
    assert (gated.model_version, base.model_version) == (info.version, "base")


def test_a_gated_version_generates_only_what_its_adapter_answers(gated_core) -> None:
    """Of a request mixing public and client-only samples, only the client-only ones the
    gate sends to the adapter reach the backend; the base's paths come from its cache."""
    core, info, held_out = gated_core
    public = [p.id for p in core.pool.values() if p.domain != CLIENT_ONLY][6:10]
    client_only = [p.id for p in held_out[:3]]
    sampling = Sampling(n=1, temperature=0.0, max_tokens=48)
    core.generate(public, [], sampling, "base")
    calls = core.generate_calls
    mixed = core.generate(public + client_only, [], sampling, info.version).results
    assert core.generate_calls == calls + 1  # the adapter's three, in one call
    assert [r.cache_hit for r in mixed] == [True] * 4 + [False] * 3


def test_a_gated_version_scores_client_only_paths_with_its_adapter(gated_core) -> None:
    core, info, held_out = gated_core
    sample = held_out[0]
    path = format_target(sample.reference)
    adapted = core.score("", [path], sample_id=sample.id, model_version=info.version)
    base = core.score("", [path], sample_id=sample.id, model_version="base")
    assert adapted.scores[0].joint_logprob > base.scores[0].joint_logprob + 0.1


def test_the_serving_versions_routes_are_read_from_the_state_directory(gated_core) -> None:
    """What `lada up` reports after the LLM service stopped."""
    core, info, held_out = gated_core
    public = [p for p in core.pool.values() if p.domain != CLIENT_ONLY][:10]
    prompts = [format_prompt(p.question) for p in held_out + public]
    routed = serving_routes(core.state_dir, prompts)
    assert routed == [version == info.version for version in core.routes(prompts, info.version)]
    assert routed == [True] * len(held_out) + [False] * 10


def test_a_service_that_serves_base_has_no_adapter_routes(tmp_path: Path) -> None:
    assert serving_routes(tmp_path, ["Q: 1+1?"]) is None


def test_a_run_records_the_share_of_each_domain_its_adapter_answered(gated_core) -> None:
    from lada.simulation import adapter_share

    core, info, _ = gated_core
    problems = load_dataset("synthetic:domains=all+units,n=100,seed=23")
    shares = adapter_share(core, info.version, problems)
    assert shares["units"] >= 0.95
    assert max(v for d, v in shares.items() if d != "units") <= 0.02
    assert set(adapter_share(core, "base", problems).values()) == {0.0}


def test_a_continued_version_gates_everything_its_chain_absorbed(micro_zoo, tmp_path) -> None:
    """In absorb_mode continue the adapter carries the parent's contributions too."""
    extras = LLMServiceExtras(state_dir=str(tmp_path), absorb_mode="continue")
    config = LLMServiceConfig(model=str(micro_zoo.llm), backend="transformers", public_pool=POOL)
    core = build_core(config, extras)
    try:
        first, second = list(core.pool.values())[:2], list(core.pool.values())[2:3]
        for batch in (first, second):
            references = [Contribution(p.id, format_target(p.reference)) for p in batch]
            info = core.absorb(references, AbsorbOverrides(epochs=1))
    finally:
        core.close()
    gate = AdapterGate.load(Path(info.adapter_dir))
    assert gate is not None
    assert gate.absorbed == [format_prompt(p.question) for p in second + first]


def _absorbs(
    extras: LLMServiceExtras, batches: list[tuple[int, AbsorbOverrides]], **config: Any
) -> list[VersionInfo]:
    """Successive absorbs into the demo LLM, each of the next `count` client-only reference
    paths of the pool, on a core built with `extras` and `config`."""
    settings = LLMServiceConfig(
        model=str(DEMO_LLM), backend="transformers", public_pool=POOL, **config
    )
    core = build_core(settings, extras)
    try:
        units = iter([p for p in core.pool.values() if p.domain == CLIENT_ONLY])
        return [
            core.absorb(
                [Contribution(p.id, format_target(p.reference)) for p in islice(units, count)],
                options,
            )
            for count, options in batches
        ]
    finally:
        core.close()


@pytest.mark.parametrize("replay_trains", [True, False])
def test_replay_trains_the_adapter_unless_it_is_kept_for_the_gate(
    tmp_path, replay_trains: bool
) -> None:
    """8 client-only contributions, 2 replayed paths each, batch 4, 2 epochs: the adapter
    trains on the contributions and the replay, or on the contributions alone (the gate
    sends none of the replayed public prompts to it); the gate knows the replay either way."""
    extras = LLMServiceExtras(
        state_dir=str(tmp_path), absorb_replay_ratio=2.0, absorb_replay_trains=replay_trains
    )
    (info,) = _absorbs(extras, [(8, AbsorbOverrides(epochs=2))])
    trained_pairs = 8 + (info.samples_replayed if replay_trains else 0)
    assert info.samples_replayed >= 12
    assert info.replay_trained == (info.samples_replayed if replay_trains else 0)
    assert info.train_steps == 2 * math.ceil(trained_pairs / 4)
    gate = AdapterGate.load(Path(info.adapter_dir))
    assert gate is not None and len(gate.known) == info.samples_replayed


def test_an_absorb_takes_at_least_its_minimum_steps_unless_it_asks_for_epochs(tmp_path) -> None:
    """8 client-only contributions at batch 4 are 2 steps an epoch (3 with a routed replayed
    path or more): a floor of 9 steps over 1 default epoch takes 5 epochs (10 steps), or 3
    (9); the next absorb asks for 2 epochs and gets just those over the chain's 16."""
    extras = LLMServiceExtras(
        state_dir=str(tmp_path), absorb_replay_ratio=1.0, absorb_epochs=1, absorb_min_steps=9
    )
    floored, asked = _absorbs(extras, [(8, AbsorbOverrides()), (8, AbsorbOverrides(epochs=2))])
    per_epoch = math.ceil((8 + floored.replay_trained) / 4)
    assert floored.train_steps == math.ceil(9 / per_epoch) * per_epoch
    assert asked.train_steps == 2 * math.ceil((16 + asked.replay_trained) / 4)


def test_an_absorb_writes_its_replay_in_requests_within_the_services_limit(tmp_path) -> None:
    """8 contributions at replay 2 draw 32 candidates; with a limit of 5 samples a request
    the replay is written in 7 requests, not refused."""
    extras = LLMServiceExtras(state_dir=str(tmp_path), absorb_replay_ratio=2.0)
    (info,) = _absorbs(extras, [(8, AbsorbOverrides(epochs=1))], max_samples_per_request=5)
    assert info.samples_replayed >= 12
