"""The LLM service's tuning lives in lada.config (the one owner of configuration)."""

from lada.config import LLMServiceExtras

__all__ = ["LLMServiceExtras"]
