"""`LADA_<SECTION>_*` variables: a name no class of its section reads, or a value its field
cannot take, is refused naming the variable; before, both were silently ignored."""

from __future__ import annotations

import pytest

from lada.config import (
    AGENT_CAPTURE_ENV,
    AgentConfig,
    AgentSettings,
    ClusterConfig,
    ConfigError,
    LLMServiceExtras,
    load_config,
)


def test_a_misspelt_trainer_variable_is_refused_naming_the_real_one() -> None:
    env = {"LADA_AGENT_TRAINER__PRIVAT_PATHS": "own"}
    with pytest.raises(ConfigError) as raised:
        load_config(AgentSettings, env=env, section="agent")
    assert str(raised.value) == (
        "LADA_AGENT_TRAINER__PRIVAT_PATHS: no agent setting of that name; "
        "did you mean LADA_AGENT_TRAINER__PRIVATE_PATHS?"
    )


def test_a_name_like_no_setting_is_refused_listing_the_section_s_settings() -> None:
    with pytest.raises(
        ConfigError, match=r"WIDGETS: no cluster .*known: .*LADA_CLUSTER_LADA__\*, "
    ):
        load_config(ClusterConfig, env={"LADA_CLUSTER_WIDGETS": "3"}, section="cluster")


def test_a_variable_another_class_of_the_section_reads_is_left_to_it() -> None:
    env = {"LADA_AGENT_EPOCHS": "3", "LADA_AGENT_TRAINER__PRIVATE_PER_STEP": "12"}
    settings = load_config(AgentSettings, env=env, section="agent")
    config = load_config(AgentConfig, env=env, section="agent")
    assert (config.epochs, settings.trainer.private_per_step) == (3, 12)


def test_a_value_its_field_cannot_take_is_refused_naming_the_variable() -> None:
    env = {"LADA_AGENT_TRAINER__MAX_NEW_TOKENS": "many"}
    with pytest.raises(ConfigError, match=r"cannot read 'many' as int \(LADA_AGENT_TRAINER__MAX"):
        load_config(AgentSettings, env=env, section="agent")


def test_a_misspelt_llm_variable_is_refused_where_the_extras_are_read() -> None:
    with pytest.raises(ConfigError, match="did you mean LADA_LLM_ABSORB_MODE"):
        LLMServiceExtras.from_env({"LADA_LLM_ABSORB_MOD": "continue"})


def test_a_section_variable_read_outside_the_settings_is_not_refused() -> None:
    env = {AGENT_CAPTURE_ENV: "/tmp/capture.jsonl"}
    assert load_config(AgentSettings, env=env, section="agent") == AgentSettings()
    assert load_config(AgentConfig, env=env, section="agent") == AgentConfig()


def test_variables_outside_every_section_are_not_settings() -> None:
    env = {"LADA_HOME": "/tmp/x", "LADA_OPERATOR_TOKEN": "t", "LADA_LLM_ABSORB_MODE": "continue"}
    assert load_config(AgentSettings, env=env, section="agent") == AgentSettings()
    assert LLMServiceExtras.from_env(env).absorb_mode == "continue"
