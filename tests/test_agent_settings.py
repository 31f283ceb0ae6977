"""The agent's tuning from LADA_AGENT_* variables: applied where the environment owns a field,
refused (not silently outvoted) where the agent's config owns it."""

from __future__ import annotations

import pytest

from lada.config import (
    AgentConfig,
    ClusterAgentConfig,
    ClusterConfig,
    ConfigError,
    agent_for_cluster,
)
from slm_agent.settings import agent_settings


def test_a_trainer_variable_the_environment_owns_is_applied() -> None:
    settings = agent_settings(AgentConfig(), env={"LADA_AGENT_TRAINER__PRIVATE_PER_STEP": "12"})
    assert settings.trainer.private_per_step == 12


def test_the_config_owns_the_learning_rate_its_schedule_and_epochs() -> None:
    config = AgentConfig(learning_rate=3e-5, lr_schedule="linear", epochs=2)
    trainer = agent_settings(config, env={}).trainer
    assert (trainer.learning_rate, trainer.lr_schedule, trainer.epochs) == (3e-5, "linear", 2)


@pytest.mark.parametrize(
    "field", ["LEARNING_RATE", "LR_SCHEDULE", "EPOCHS", "SEED", "LORA_THRESHOLD_PARAMS"]
)
def test_a_variable_naming_a_field_the_config_owns_is_refused_naming_both(field: str) -> None:
    with pytest.raises(ConfigError, match=f"LADA_AGENT_TRAINER__{field}: `{field.lower()}`"):
        agent_settings(AgentConfig(), env={f"LADA_AGENT_TRAINER__{field}": "1"})


def test_an_unknown_lr_schedule_is_refused_at_start_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="lr_schedule: 'cosine' is not one of"):
        agent_settings(AgentConfig(lr_schedule="cosine"), env={})


def test_a_cluster_sets_every_agent_s_learning_rate_and_schedule() -> None:
    cluster = ClusterConfig(agent_learning_rate=1e-4, agent_lr_schedule="linear")
    agent = agent_for_cluster(cluster, ClusterAgentConfig(name="a"), "m", "p.jsonl", "pool", "s")
    assert (agent.learning_rate, agent.lr_schedule) == (1e-4, "linear")
