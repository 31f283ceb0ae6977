"""Reading the agent's tuning (lada.config.AgentSettings) from the environment.

Read from `LADA_AGENT_<FIELD>` environment variables (nested: `LADA_AGENT_TRAINER__EPOCHS`)
through lada.config.load_config; fields AgentConfig already has win over these.
"""

from __future__ import annotations

import os

from lada.config import AgentConfig, AgentSettings, load_config


def agent_settings(config: AgentConfig, env: dict[str, str] | None = None) -> AgentSettings:
    """Settings from the environment, with AgentConfig's own fields copied in."""
    settings = load_config(
        AgentSettings, env=dict(os.environ) if env is None else env, section="agent"
    )
    settings.public_pool = str(getattr(config, "public_pool", "") or settings.public_pool)
    trainer = settings.trainer
    trainer.learning_rate = config.learning_rate
    trainer.epochs = config.epochs
    trainer.lora_threshold_params = config.lora_threshold_params
    trainer.seed = config.seed
    return settings
