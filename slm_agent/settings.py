"""Reading the agent's tuning (lada.config.AgentSettings) from the environment.

Read from `LADA_AGENT_<FIELD>` environment variables (nested:
`LADA_AGENT_TRAINER__PRIVATE_PER_STEP`) through lada.config.load_config. The trainer fields
AgentConfig owns (learning rate, epochs, ...) come from it; a variable naming one is refused
rather than silently outvoted.
"""

from __future__ import annotations

import os

from lada.config import AgentConfig, AgentSettings, ConfigError, load_config
from slm_agent.trainer import check_lr_schedule

# trainer fields AgentConfig owns (same names there): the agent's config file or flags set them
CONFIG_OWNED_TRAINER_FIELDS = (
    "learning_rate",
    "lr_schedule",
    "epochs",
    "lora_threshold_params",
    "seed",
)


def agent_settings(config: AgentConfig, env: dict[str, str] | None = None) -> AgentSettings:
    """Settings from the environment, with AgentConfig's own fields copied in; ConfigError
    for a variable that names one of those fields."""
    env = dict(os.environ) if env is None else env
    for name in CONFIG_OWNED_TRAINER_FIELDS:
        variable = f"LADA_AGENT_TRAINER__{name.upper()}"
        if variable in env:
            raise ConfigError(
                f"{variable}: `{name}` is the agent config's field (agent.{name}); "
                "set it there, this variable would be ignored"
            )
    settings = load_config(AgentSettings, env=env, section="agent")
    settings.public_pool = str(getattr(config, "public_pool", "") or settings.public_pool)
    trainer = settings.trainer
    trainer.learning_rate = config.learning_rate
    trainer.lr_schedule = config.lr_schedule
    trainer.epochs = config.epochs
    trainer.lora_threshold_params = config.lora_threshold_params
    trainer.seed = config.seed
    check_lr_schedule(trainer.lr_schedule)
    return settings
