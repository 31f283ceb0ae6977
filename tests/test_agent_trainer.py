"""LocalTrainer and the round function on the micro zoo's real models (no network)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lada.config import LadaHyperParams
from lada.tasks import Problem, format_prompt, format_target, is_correct, load_dataset
from lada.tasks.verifier import extract_answer
from lada.zoo import ZooManifest
from slm_agent.losses import PathSet, make_loss
from slm_agent.rounds import (
    AllocatedSample,
    LLMPath,
    RoundOutcome,
    build_path_sets,
    pick_contributions,
    run_round,
    sample_weights,
)
from slm_agent.trainer import (
    OWN_PRIVATE_FILE,
    LocalTrainer,
    TrainerSettings,
    private_examples,
    solved_examples,
)
from tests.fixtures_agent import LocalLLM, torch_threads_one

torch_threads_one()


def trainer_for(
    zoo: ZooManifest, name: str, loss: str, private: list[Problem], **settings: object
) -> LocalTrainer:
    # One epoch unless a test asks for more, so step counts read directly off the batch sizes.
    defaults: dict[str, object] = {"max_new_tokens": 48, "own_paths_per_sample": 1, "epochs": 1}
    return LocalTrainer.from_path(
        zoo.slms[name], make_loss(loss), private, TrainerSettings(**(defaults | settings))
    )


def wrong_path(problem: Problem) -> str:
    """The reference path with a wrong final answer."""
    body, _, answer = problem.reference.rpartition("#### ")
    return f" {body}#### {int(answer) + 7}"


def contrast_set(problem: Problem) -> PathSet:
    return PathSet(
        format_prompt(problem.question),
        [" " + problem.reference, wrong_path(problem)],
        [-0.4, -0.6],
        [True, False],
    )


def margin(trainer: LocalTrainer, path_set: PathSet) -> float:
    right, wrong = trainer.score([path_set.prompt] * 2, path_set.llm_paths)
    return right - wrong


def test_a_repeated_path_is_scored_once_and_its_gradient_counts_per_occurrence(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    trainer = trainer_for(micro_zoo, "slm-rates", "contrastive", private_rates)
    short, long = sorted(private_rates[:2], key=lambda p: len(p.reference))
    prompts = [format_prompt(p.question) for p in (long, short, long)]
    completions = [" " + p.reference for p in (long, short, long)]
    scored_rows: list[int] = []
    hook = trainer.model.register_forward_hook(
        lambda _m, _a, kwargs, _o: scored_rows.append(kwargs["input_ids"].shape[0]),
        with_kwargs=True,
    )
    rows = trainer.scorer.token_logprobs(prompts, completions)
    hook.remove()
    assert rows[0] is rows[2]  # the repeated pair shares one row
    assert sum(scored_rows) == 2
    alone = [
        trainer.scorer.token_logprobs([p], [c])[0]
        for p, c in zip(prompts, completions, strict=True)
    ]
    for batched, single in zip(rows, alone, strict=True):
        assert batched.detach().numpy() == pytest.approx(single.detach().numpy(), abs=1e-5)

    trainer.model.zero_grad()
    torch.stack([r.sum() for r in rows]).sum().backward()
    together = [p.grad.clone() for p in trainer.model.parameters()]
    trainer.model.zero_grad()
    (2 * alone[0].sum() + alone[1].sum()).backward()
    for got, want in zip(together, trainer.model.parameters(), strict=True):
        assert got.numpy() == pytest.approx(want.grad.numpy(), abs=1e-5)


@pytest.mark.parametrize("name", ["slm-rates", "slm-purchases"])
def test_differentiable_scores_equal_the_reported_scores(
    micro_zoo: ZooManifest, private_rates: list[Problem], name: str
) -> None:
    trainer = trainer_for(micro_zoo, name, "contrastive", private_rates)
    prompts = [format_prompt(p.question) for p in private_rates[:3]]
    completions = [" " + p.reference for p in private_rates[:3]]
    with torch.no_grad():
        differentiable = trainer.scorer.normalized_logprobs(prompts, completions).tolist()
    assert differentiable == pytest.approx(trainer.score(prompts, completions), abs=1e-5)
    assert all(v < 0 for v in differentiable)


def test_contrastive_training_raises_correct_paths_over_incorrect_ones(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    """The contrast alone (no anchor) widens the margin of the correct path."""
    trainer = LocalTrainer.from_path(
        micro_zoo.slms["slm-rates"],
        make_loss("contrastive", LadaHyperParams(anchor_gamma=0.0)),
        [],
        TrainerSettings(max_new_tokens=48, own_paths_per_sample=1, epochs=4, learning_rate=1e-2),
    )
    sets = [contrast_set(p) for p in private_rates[:4]]
    before = [margin(trainer, s) for s in sets]
    report = trainer.train_round(sets, round_number=1)
    after = [margin(trainer, s) for s in sets]
    assert report.steps == 4  # 4 epochs x 1 step of 4 samples
    assert np.mean(after) > np.mean(before) + 0.1


def test_contrastive_training_with_the_anchor_raises_the_correct_path_itself(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    """The default loss lifts the correct path's likelihood (measured +0.95 nats/token on
    this micro model) and does not narrow its margin over the incorrect one."""
    trainer = trainer_for(micro_zoo, "slm-rates", "contrastive", [], learning_rate=1e-2, epochs=4)
    sets = [contrast_set(p) for p in private_rates[:4]]
    prompts, right = [s.prompt for s in sets], [s.llm_paths[0] for s in sets]
    margin_before = np.mean([margin(trainer, s) for s in sets])
    right_before = np.mean(trainer.score(prompts, right))
    trainer.train_round(sets, round_number=1)
    assert np.mean(trainer.score(prompts, right)) > right_before + 0.5
    assert np.mean([margin(trainer, s) for s in sets]) > margin_before


def test_sft_training_raises_the_likelihood_of_the_best_correct_path(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    trainer = trainer_for(micro_zoo, "slm-percentages", "sft", [], learning_rate=3e-3, epochs=3)
    sets = [contrast_set(p) for p in private_rates[:4]]
    before = trainer.score([s.prompt for s in sets], [s.llm_paths[0] for s in sets])
    trainer.train_round(sets, round_number=1)
    after = trainer.score([s.prompt for s in sets], [s.llm_paths[0] for s in sets])
    assert np.mean(after) > np.mean(before) + 0.1


def displacement(trainer: LocalTrainer, sets: list[PathSet]) -> float:
    """How far one round moves the weights (L2 norm of the change)."""
    start = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_round(sets, round_number=1)
    params = trainer.model.parameters()
    moved = [(p.detach() - s).pow(2).sum() for p, s in zip(params, start, strict=True)]
    return float(torch.stack(moved).sum().sqrt())


def test_a_linear_schedule_decays_the_rate_over_the_rounds_steps(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    """Four steps at x1, x0.75, x0.5, x0.25 of the rate move the weights about 5/8 as far as
    four steps at the full rate (Adam's step is about the rate per parameter)."""
    sets = [contrast_set(p) for p in private_rates[:4]]
    moves = {}
    for schedule in ("constant", "linear"):
        trainer = trainer_for(
            micro_zoo, "slm-rates", "sft", [], samples_per_step=1, lr_schedule=schedule
        )
        moves[schedule] = displacement(trainer, sets)
    assert 0.45 < moves["linear"] / moves["constant"] < 0.8


def test_an_unknown_schedule_is_refused_when_the_trainer_starts(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    with pytest.raises(ValueError, match="lr_schedule: 'cosine-ish'"):
        trainer_for(micro_zoo, "slm-rates", "sft", [], lr_schedule="cosine-ish")


def test_a_batch_with_nothing_correct_trains_on_private_data_alone(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    trainer = trainer_for(micro_zoo, "slm-rates", "contrastive", private_rates)
    unlearnable = PathSet("Q: x\nA:", [" 1"], [-1.0], [False])
    report = trainer.train_round([unlearnable], round_number=1)
    assert report.steps == 1
    assert report.mean_parts["distill"] == 0.0
    assert report.mean_parts["total"] == report.mean_parts["sft_private"] > 0.0


def test_an_empty_allocation_means_no_training_step(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    trainer = trainer_for(micro_zoo, "slm-rates", "contrastive", private_rates)
    assert trainer.train_round([], round_number=1).steps == 0


def test_models_above_the_lora_threshold_train_only_an_adapter(
    micro_zoo: ZooManifest, private_rates: list[Problem], tmp_path: Path
) -> None:
    trainer = trainer_for(
        micro_zoo, "slm-rates", "contrastive", private_rates, lora_threshold_params=1000
    )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    frozen = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad
    }
    trainer.train_round([contrast_set(p) for p in private_rates[:4]], round_number=1)
    assert trainer.uses_lora
    assert 0 < trainable < trainer.base_parameters / 2
    assert all(
        torch.equal(p, frozen[n]) for n, p in trainer.model.named_parameters() if n in frozen
    )
    trainer.save(tmp_path)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("threshold", [50_000_000, 1000], ids=["full", "lora"])
def test_saved_weights_reload_to_the_same_scores(
    micro_zoo: ZooManifest, private_rates: list[Problem], tmp_path: Path, threshold: int
) -> None:
    trainer = trainer_for(
        micro_zoo, "slm-purchases", "sft", private_rates, lora_threshold_params=threshold,
        learning_rate=3e-3,
    )  # fmt: skip
    sets = [contrast_set(p) for p in private_rates[:4]]
    base = trainer.score([sets[0].prompt] * 2, sets[0].llm_paths)
    trainer.train_round(sets, round_number=1)
    trained = trainer.score([sets[0].prompt] * 2, sets[0].llm_paths)
    trainer.save(tmp_path)
    reloaded = LocalTrainer.from_path(
        micro_zoo.slms["slm-purchases"], make_loss("sft"), private_rates,
        TrainerSettings(lora_threshold_params=threshold), checkpoint=tmp_path,
    )  # fmt: skip
    assert trained != pytest.approx(base, abs=1e-4)
    assert reloaded.score([sets[0].prompt] * 2, sets[0].llm_paths) == pytest.approx(
        trained, abs=1e-5
    )


def test_own_incorrect_paths_join_as_negatives_and_correct_ones_do_not(
    agent_pool: dict[str, Problem],
) -> None:
    problem = next(iter(agent_pool.values()))
    llm = {problem.id: [LLMPath(" x #### 1", -0.5, False)]}
    own = [[wrong_path(problem), " " + problem.reference, "   "]]
    (built,) = build_path_sets([problem], llm, own, {problem.id: 2.5})
    assert built.own_negatives == [wrong_path(problem)]
    assert built.llm_paths == [" x #### 1"] and built.weight == 2.5


def test_sample_weight_is_the_weight_of_its_cluster() -> None:
    allocation = [AllocatedSample("a", 0), AllocatedSample("b", 2), AllocatedSample("c", 1)]
    weights = sample_weights(allocation, np.array([0.25, 1.0, 4.0]))
    assert weights == {"a": 0.25, "b": 4.0, "c": 1.0}
    assert sample_weights(allocation, None) == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_a_round_reports_every_path_of_every_allocated_sample(
    micro_zoo: ZooManifest, private_rates: list[Problem], local_llm: LocalLLM,
    agent_pool: dict[str, Problem],
) -> None:  # fmt: skip
    trainer = trainer_for(micro_zoo, "slm-rates", "contrastive", private_rates, samples_per_step=4)
    allocation = [AllocatedSample(i, 0, "base") for i in list(agent_pool)[:6]]
    paths = local_llm.reasoning_paths(allocation, n=2, temperature=0.8, max_tokens=48)
    outcome = run_round(trainer, 1, allocation, agent_pool, paths)
    assert [s.sample_id for s in outcome.stats] == [a.sample_id for a in allocation]
    for stat in outcome.stats:
        llm_paths = paths[stat.sample_id]
        assert len(stat.paths) == len(llm_paths) == 3
        assert [p.llm_normalized_logprob for p in stat.paths] == [
            p.normalized_logprob for p in llm_paths
        ]
        assert [p.correct for p in stat.paths] == [p.correct for p in llm_paths]
        prompt = format_prompt(agent_pool[stat.sample_id].question)
        now = trainer.score([prompt] * 3, [p.text for p in llm_paths])
        assert [p.slm_normalized_logprob_after for p in stat.paths] == pytest.approx(now, abs=1e-5)
        spoken = [p for p, path in zip(stat.paths, llm_paths, strict=True) if path.text]
        assert all(p.slm_normalized_logprob_before < 0 for p in spoken)  # empty paths score 0
    assert outcome.train.steps == 2  # 6 samples, 4 per step
    assert outcome.correct_path_nlp_after > outcome.correct_path_nlp_before
    # where the round's time went, step by step, kept with the outcome
    steps = ["own paths", "score before", "greedy before", "train", "score after", "greedy after"]
    assert list(outcome.seconds) == steps and all(v >= 0 for v in outcome.seconds.values())
    assert RoundOutcome.from_json(outcome.to_json()).seconds == outcome.seconds


def test_contributions_are_sound_paths_the_agent_wrote_for_its_own_domains() -> None:
    def problem(sample_id: str, domain: str) -> Problem:
        return Problem(sample_id, "q", "2+2=4\n#### 4", "4", domain, 1)

    problems = [problem("greedy-right", "rates"), problem("sampled-right", "rates")]
    problems += [problem("lucky-only", "rates"), problem("other-domain", "purchases")]
    greedy = [" 2+2=4\n#### 4", " #### 5", " 6+3=2\n#### 4", " 2+2=4\n#### 4"]
    sampled = [[" #### 4"], [" #### 4", " 1+3=4\n#### 4"], [" 5-2=4\n#### 4"], [" #### 4"]]
    picked = pick_contributions(problems, greedy, sampled, {"rates"})
    assert picked == {"greedy-right": " 2+2=4\n#### 4", "sampled-right": " 1+3=4\n#### 4"}


def test_training_targets_end_with_eos_as_the_zoo_trained_them(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    """SFT targets include EOS after the path (else fine-tuning unlearns stopping); path
    scores (nlp) stay EOS-free, as the LLM service computes them."""
    trainer = trainer_for(micro_zoo, "slm-rates", "sft", private_rates)
    scorer = trainer.scorer
    prompt, path = format_prompt(private_rates[0].question), " " + private_rates[0].reference
    with torch.no_grad():
        (plain,) = scorer.token_logprobs([prompt], [path])
        (ended,) = scorer.token_logprobs([prompt], [path], end=True)
        nll = scorer.token_nll([prompt], [path])
    assert ended.numel() == plain.numel() + 1
    assert torch.allclose(ended[:-1], plain, atol=1e-5)
    assert float(nll) == pytest.approx(-float(ended.mean()), abs=1e-5)
    assert trainer.score([prompt], [path])[0] == pytest.approx(float(plain.mean()), abs=1e-5)


def private_drift(trainer: LocalTrainer, sets: list[PathSet]) -> float:
    """Mean |change| of nlp_S on the trainer's private paths over one round."""
    prompts = [e.prompt for e in trainer.private]
    paths = [e.completion for e in trainer.private]
    before = trainer.score(prompts, paths)
    trainer.train_round(sets, round_number=1)
    after = trainer.score(prompts, paths)
    return float(np.mean(np.abs(np.subtract(after, before))))


def test_the_private_kl_term_holds_the_private_paths_near_the_rounds_start(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    """Same round at a high rate: KL weight 30 moves the private paths' scores under half
    as far as no KL term does (measured: 0.08 against 0.60 nats), and reports the term."""
    sets = [contrast_set(p) for p in private_rates[4:12]]
    drift, parts = {}, {}
    for weight in (0.0, 30.0):
        trainer = trainer_for(
            micro_zoo,
            "slm-rates",
            "sft",
            private_rates[:4],
            learning_rate=3e-3,
            samples_per_step=2,
            private_per_step=2,
            private_kl_weight=weight,
        )
        drift[weight] = private_drift(trainer, sets)
        parts[weight] = trainer.train_round(sets, round_number=2).mean_parts
    assert drift[30.0] < 0.5 * drift[0.0]
    assert "private_kl" not in parts[0.0] and parts[30.0]["private_kl"] > 0.0


@pytest.mark.parametrize("weight", [-1.0, float("nan")])
def test_a_negative_or_nan_private_kl_weight_is_refused_when_the_trainer_starts(
    micro_zoo: ZooManifest, private_rates: list[Problem], weight: float
) -> None:
    with pytest.raises(ValueError, match="private_kl_weight: .* finite number >= 0"):
        trainer_for(micro_zoo, "slm-rates", "sft", [], private_kl_weight=weight)


# ---- distill_route gate: an expert learns the allocation, a gate routes each prompt --------
FOREIGN = load_dataset("synthetic:domains=purchases,n=16,seed=41")  # the home is rates


def gated_trainer(zoo: ZooManifest, private: list[Problem], **settings: object) -> LocalTrainer:
    return trainer_for(
        zoo, "slm-rates", "sft", private, distill_route="gate", expert_learning_rate=3e-3,
        expert_epochs=3, **settings,
    )  # fmt: skip


def test_under_the_gate_the_student_trains_as_without_it_and_answers_home_prompts(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    sets = [contrast_set(p) for p in FOREIGN[:8]]
    home = [format_prompt(p.question) for p in private_rates[:40]]
    plain = trainer_for(micro_zoo, "slm-rates", "sft", private_rates[:40])
    gated = gated_trainer(micro_zoo, private_rates[:40])
    plain.train_round(sets, round_number=1)
    report = gated.train_round(sets, round_number=1)
    assert gated.routes(home) == [False] * 40
    paths = [" " + p.reference for p in private_rates[:40]]
    assert gated.score(home, paths) == pytest.approx(plain.score(home, paths), abs=1e-6)
    assert report.steps == 1 + 3  # the student's one epoch, the expert's three
    assert "expert_total" in report.mean_parts


def test_under_the_gate_the_expert_learns_the_allocation_and_answers_prompts_like_it(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    sets = [contrast_set(p) for p in FOREIGN[:8]]
    held_out = [format_prompt(p.question) for p in FOREIGN[8:]]
    gated = gated_trainer(micro_zoo, private_rates[:40])
    before = gated.score([s.prompt for s in sets], [s.llm_paths[0] for s in sets])
    gated.train_round(sets, round_number=1)
    after = gated.score([s.prompt for s in sets], [s.llm_paths[0] for s in sets])
    assert gated.routes([s.prompt for s in sets]) == [True] * 8
    assert sum(gated.routes(held_out)) >= 7  # unseen foreign prompts: at least 7 of 8
    assert np.mean(after) > np.mean(before) + 0.1


def test_the_expert_and_its_gate_reload_from_a_checkpoint(
    micro_zoo: ZooManifest, private_rates: list[Problem], tmp_path: Path
) -> None:
    sets = [contrast_set(p) for p in FOREIGN[:8]]
    gated = gated_trainer(micro_zoo, private_rates[:40])
    gated.train_round(sets, round_number=1)
    gated.save(tmp_path)
    reloaded = LocalTrainer.from_path(
        micro_zoo.slms["slm-rates"], make_loss("sft"), private_rates[:40],
        TrainerSettings(distill_route="gate"), checkpoint=tmp_path,
    )  # fmt: skip
    prompts = [s.prompt for s in sets] + [format_prompt(p.question) for p in private_rates[:4]]
    paths = [s.llm_paths[0] for s in sets] + [" " + p.reference for p in private_rates[:4]]
    assert reloaded.routes(prompts) == gated.routes(prompts)
    assert reloaded.score(prompts, paths) == pytest.approx(gated.score(prompts, paths), abs=1e-5)


def test_under_the_gate_samples_the_student_solved_stay_with_it(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    """The gate's known side is the private prompts and the allocated prompts the student
    answered right before the round; its taught side is the rest."""
    sets = [contrast_set(p) for p in FOREIGN[:8]]
    gated = gated_trainer(micro_zoo, private_rates[:40])
    gated.train_round(sets, round_number=1, solved=[True] * 3 + [False] * 5)
    prompts = [s.prompt for s in sets]
    assert gated.solved_prompts == prompts[:3]
    assert gated.expert_prompts == prompts[3:]
    assert gated.gate is not None
    assert gated.gate.known == [format_prompt(p.question) for p in private_rates[:40]] + prompts[:3]


def test_a_sample_the_expert_answered_right_is_not_counted_as_the_students(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    sets = [contrast_set(p) for p in FOREIGN[:8]]
    gated = gated_trainer(micro_zoo, private_rates[:40])
    gated.train_round(sets, round_number=1, solved=[False] * 8)
    routed = gated.routes([s.prompt for s in sets])
    gated.train_round(sets, round_number=2, solved=[True] * 8)
    prompts = [s.prompt for s in sets]
    assert gated.expert_prompts == [p for p, hit in zip(prompts, routed, strict=True) if hit]
    assert gated.solved_prompts == [p for p, hit in zip(prompts, routed, strict=True) if not hit]


def test_a_round_the_student_solved_entirely_routes_nothing_to_the_expert(
    micro_zoo: ZooManifest, private_rates: list[Problem], tmp_path: Path
) -> None:
    sets = [contrast_set(p) for p in FOREIGN[:8]]
    gated = gated_trainer(micro_zoo, private_rates[:40])
    gated.train_round(sets, round_number=1, solved=[True] * 8)
    gated.save(tmp_path)
    reloaded = LocalTrainer.from_path(
        micro_zoo.slms["slm-rates"], make_loss("sft"), private_rates[:40],
        TrainerSettings(distill_route="gate"), checkpoint=tmp_path,
    )  # fmt: skip
    held_out = [format_prompt(p.question) for p in FOREIGN[8:]]
    assert gated.routes(held_out) == reloaded.routes(held_out) == [False] * 8
    assert reloaded.solved_prompts == [s.prompt for s in sets]


def test_solved_flags_must_match_the_allocation(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    gated = gated_trainer(micro_zoo, private_rates[:40])
    with pytest.raises(ValueError, match="solved: 2 flags for 8 samples"):
        gated.train_round([contrast_set(p) for p in FOREIGN[:8]], 1, solved=[True, False])


def test_an_unknown_distill_route_is_refused_naming_the_allowed_values(
    micro_zoo: ZooManifest,
) -> None:
    with pytest.raises(ValueError, match="distill_route: 'experts' is not one of all, gate"):
        trainer_for(micro_zoo, "slm-rates", "sft", [], distill_route="experts")


def test_the_gate_is_refused_for_a_model_that_trains_through_lora(micro_zoo: ZooManifest) -> None:
    with pytest.raises(ValueError, match="distill_route: gate trains a full copy"):
        trainer_for(
            micro_zoo, "slm-rates", "sft", [], distill_route="gate", lora_threshold_params=1000
        )


def test_a_gated_checkpoint_is_evaluated_as_the_agent_answers(
    micro_zoo: ZooManifest, private_rates: list[Problem], tmp_path: Path
) -> None:
    """The report's accuracy of a checkpoint with an expert: each test problem answered by
    the model its gate routes it to, as the agent's own greedy answers."""
    from lada.cluster import write_jsonl
    from lada.report import accuracy_on

    gated = gated_trainer(micro_zoo, private_rates[:32], max_new_tokens=128)
    gated.train_round([contrast_set(p) for p in FOREIGN[:8]], round_number=1)
    gated.save(tmp_path)
    test = FOREIGN[8:] + private_rates[32:]  # unseen foreign, then unseen home
    spec = write_jsonl(test, tmp_path / "test.jsonl")
    routed = gated.routes([format_prompt(p.question) for p in test])
    correct = gated.greedy_correct(test)
    scores = accuracy_on(tmp_path / "model", spec)
    assert sum(routed) >= 7 and not any(routed[8:])
    references = gated.score(
        [format_prompt(p.question) for p in test], [format_target(p.reference) for p in test]
    )
    assert scores["purchases"] == np.mean(correct[:8])
    assert scores["rates"] == np.mean(correct[8:])
    assert scores["purchases_nlp"] == pytest.approx(np.mean(references[:8]), abs=1e-5)
    assert scores["rates_nlp"] == pytest.approx(np.mean(references[8:]), abs=1e-5)
    right = [p for p, c in zip(test, correct, strict=True) if c]
    for domain in ("purchases", "rates"):
        assert scores["correct"][domain] == sorted(p.id for p in right if p.domain == domain)


def test_solved_examples_keep_only_the_paths_that_reach_the_final_answer(
    private_rates: list[Problem],
) -> None:
    right, wrong = private_rates[:2]
    examples = solved_examples([right, wrong], [right.reference, wrong_path(wrong)])
    assert [(e.prompt, e.completion) for e in examples] == [
        (format_prompt(right.question), format_target(right.reference))
    ]


def answered_as_the_model_does(trainer: LocalTrainer, problems: list[Problem]) -> list[Problem]:
    """Ten problems answered as the model's greedy paths end, alternating with ten it gets
    wrong: a private set the model half solves (the micro models solve none as given)."""
    answers = trainer.greedy_answers([p.question for p in problems])
    solvable = [
        replace(p, answer=str(extract_answer(a)))
        for p, a in zip(problems, answers, strict=True)
        if extract_answer(a) is not None and is_correct(a, str(extract_answer(a)))
    ]
    unsolved = [p for p, a in zip(problems, answers, strict=True) if not is_correct(a, p.answer)]
    return [p for pair in zip(solvable[:10], unsolved[-10:], strict=True) for p in pair]


def test_under_own_private_paths_the_private_term_trains_on_the_paths_the_model_solved(
    micro_zoo: ZooManifest, private_rates: list[Problem]
) -> None:
    reference = trainer_for(micro_zoo, "slm-rates", "sft", [])
    private = answered_as_the_model_does(reference, private_rates[:60])
    own = trainer_for(micro_zoo, "slm-rates", "sft", private, private_paths="own")
    answers = own.greedy_answers([p.question for p in private])
    assert own.private == solved_examples(private, answers)
    assert len(own.private) == 10  # the ten it answers as its answers, not the reference's
    assert {e.prompt for e in own.private} == {format_prompt(p.question) for p in private[::2]}
    assert {e.completion for e in own.private} == {format_target(a) for a in answers[::2]}
    assert own.private_prompts == [format_prompt(p.question) for p in private]


def test_own_private_paths_reload_from_a_checkpoint_without_a_new_greedy_pass(
    micro_zoo: ZooManifest, private_rates: list[Problem], tmp_path: Path, monkeypatch
) -> None:
    private = answered_as_the_model_does(
        trainer_for(micro_zoo, "slm-rates", "sft", []), private_rates[:20]
    )
    own = trainer_for(micro_zoo, "slm-rates", "sft", private, private_paths="own")
    own.train_round([contrast_set(p) for p in FOREIGN[:4]], round_number=1)
    own.save(tmp_path)
    monkeypatch.setattr(LocalTrainer, "greedy_answers", lambda *_: pytest.fail("regenerated"))
    reloaded = LocalTrainer.from_path(
        micro_zoo.slms["slm-rates"], make_loss("sft"), private,
        TrainerSettings(private_paths="own"), checkpoint=tmp_path,
    )  # fmt: skip
    assert len(own.private) == 10
    assert reloaded.private == own.private


def test_reference_private_paths_write_no_own_paths_file(
    micro_zoo: ZooManifest, private_rates: list[Problem], tmp_path: Path
) -> None:
    trainer = trainer_for(micro_zoo, "slm-rates", "sft", private_rates[:8])
    trainer.save(tmp_path)
    assert not (tmp_path / OWN_PRIVATE_FILE).exists()
    assert trainer.private == private_examples(private_rates[:8])


def test_an_unknown_private_paths_is_refused_naming_the_allowed_values(
    micro_zoo: ZooManifest,
) -> None:
    with pytest.raises(ValueError, match="private_paths: 'answers' is not one of reference, own"):
        trainer_for(micro_zoo, "slm-rates", "sft", [], private_paths="answers")
