"""Errors the LLM core raises; the servicer maps each kind to one gRPC status code."""

from __future__ import annotations


class LLMError(Exception):
    """Base class: an expected failure with a message that names the offending field."""


class InvalidArgument(LLMError):
    """A request field is malformed or above a configured limit (INVALID_ARGUMENT)."""


class NotFound(LLMError):
    """A sample ID or model version does not exist (NOT_FOUND)."""


class FailedPrecondition(LLMError):
    """The service cannot do this in its current state (FAILED_PRECONDITION)."""


class ResourceExhausted(LLMError):
    """A single-slot resource (the absorb trainer) is busy (RESOURCE_EXHAUSTED)."""


class NonFiniteLogProb(LLMError):
    """The model produced NaN log-probs; never sent on the wire (INTERNAL)."""
