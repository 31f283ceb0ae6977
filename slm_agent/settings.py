"""Agent settings that lada.config.AgentConfig does not carry yet (proposed to the lead).

Read from `LADA_AGENT_<FIELD>` environment variables (nested: `LADA_AGENT_TRAINER__EPOCHS`)
through lada.config.load_config; fields AgentConfig already has win over these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lada.config import AgentConfig, AllocatorConfig, load_config
from slm_agent.trainer import TrainerSettings

DEFAULT_PUBLIC_POOL = AllocatorConfig().public_pool


@dataclass
class AgentSettings:
    """Extra agent knobs; each is a candidate field for lada.config.AgentConfig."""

    public_pool: str = DEFAULT_PUBLIC_POOL  # must match the allocator's (fingerprint check)
    heartbeat_interval_s: float = 5.0
    rpc_timeout_s: float = 30.0
    llm_timeout_s: float = 900.0
    llm_max_tokens: int = 128  # max tokens of each LLM reasoning path
    torch_threads: int = 0  # 0: torch's default
    trainer: TrainerSettings = field(default_factory=TrainerSettings)


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
