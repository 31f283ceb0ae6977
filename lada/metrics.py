"""Prometheus metrics: the one place metric names are defined."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

from lada.netports import free_port

log = logging.getLogger("lada.metrics")

RPC_REQUESTS = Counter("lada_rpc_requests_total", "RPCs handled", ["service", "method", "code"])
RPC_LATENCY = Histogram("lada_rpc_latency_seconds", "RPC handling time", ["service", "method"])
SAMPLES_ALLOCATED = Counter("lada_samples_allocated_total", "Sample IDs allocated", ["policy"])
STATS_APPLIED = Counter("lada_sample_stats_applied_total", "Sample statistics applied")
TOKENS_GENERATED = Counter("lada_llm_tokens_generated_total", "Tokens generated", ["backend"])

_started_port: int | None = None


def start_endpoint(port: int, host: str = "127.0.0.1") -> int | None:
    """Serve /metrics over HTTP; port 0 picks a free one, -1 disables. Once per process."""
    global _started_port
    if port < 0:
        return None
    if _started_port is None:
        chosen = port or free_port(host)
        start_http_server(chosen, addr=host)
        _started_port = chosen
    return _started_port
