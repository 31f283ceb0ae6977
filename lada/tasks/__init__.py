"""Reasoning tasks: problems, the prompt template, verifier, dataset loaders and splits."""

from lada.tasks.generator import (
    ALL_DOMAINS,
    CLIENT_DOMAINS,
    DOMAINS,
    MAX_STEPS,
    MIN_STEPS,
    generate_problems,
    make_problem,
)
from lada.tasks.loaders import (
    SOURCES,
    DatasetFormatError,
    DatasetSpecError,
    load_dataset,
    read_jsonl,
    reference_from_answer,
)
from lada.tasks.problem import ANSWER_MARK, Problem, content_id, format_prompt, format_target
from lada.tasks.splits import (
    AgentSplitSpec,
    FederatedSplit,
    SplitSpec,
    agent_mixture,
    make_split,
    pool_fingerprint,
)
from lada.tasks.verifier import (
    arithmetic_steps,
    extract_answer,
    is_correct,
    is_sound,
    normalize_answer,
)

__all__ = [
    "ALL_DOMAINS",
    "ANSWER_MARK",
    "CLIENT_DOMAINS",
    "DOMAINS",
    "MAX_STEPS",
    "MIN_STEPS",
    "SOURCES",
    "AgentSplitSpec",
    "DatasetFormatError",
    "DatasetSpecError",
    "FederatedSplit",
    "Problem",
    "SplitSpec",
    "agent_mixture",
    "content_id",
    "extract_answer",
    "format_prompt",
    "format_target",
    "generate_problems",
    "is_correct",
    "is_sound",
    "arithmetic_steps",
    "load_dataset",
    "make_problem",
    "make_split",
    "normalize_answer",
    "pool_fingerprint",
    "read_jsonl",
    "reference_from_answer",
]
