"""`lada bench agent`: the SLM agent's local training and scoring speed."""

from slm_agent.bench import run

__all__ = ["run"]
