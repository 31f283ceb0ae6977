"""LLM-service settings that lada.config.LLMServiceConfig does not carry yet.

Kept here until the lead moves them into LLMServiceConfig; `from_env` reads
`LADA_LLM_<FIELD>` so a process can be tuned without code changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from lada.config import lada_home


@dataclass
class LLMServiceExtras:
    """Absorb defaults, cache size, engine limits and where adapters are kept."""

    state_dir: str = ""  # empty: $LADA_HOME/llm/<hash of the model path>
    cache_entries: int = 4096  # (sample, version, sampling) entries in the path LRU
    max_model_len: int = 1024  # context cap (min with the model's own)
    max_lora_rank: int = 32  # engine-wide LoRA rank ceiling (vLLM: 8/16/32/64/...)
    absorb_epochs: int = 4
    absorb_learning_rate: float = 5e-3
    absorb_lora_rank: int = 8
    absorb_batch_size: int = 4
    max_absorb_contributions: int = 4096

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LLMServiceExtras:
        source = os.environ if env is None else env
        extras = cls()
        for item in dataclasses.fields(cls):
            raw = source.get(f"LADA_LLM_{item.name.upper()}")
            if raw is not None:
                setattr(extras, item.name, type(getattr(extras, item.name))(raw))
        return extras

    def resolved_state_dir(self, model: str) -> Path:
        if self.state_dir:
            return Path(self.state_dir)
        digest = hashlib.sha256(str(Path(model).resolve()).encode()).hexdigest()[:12]
        return lada_home() / "llm" / digest
