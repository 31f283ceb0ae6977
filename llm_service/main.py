"""`lada llm serve`: build the backend and core, then serve gRPC until SIGTERM."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from lada.config import LLMServiceConfig
from lada.logs import configure_logging
from lada.modeling import ModelDirError, check_model_dir
from lada.redis_conn import redact_url
from lada.server import run_until_signalled, start_server, stop_signals
from lada.tasks import DatasetSpecError, load_dataset
from llm_service.backends.base import BackendSettings, create_backend
from llm_service.cache import SharedPathCache, model_digest, model_identity
from llm_service.core import Limits, LLMCore
from llm_service.service import binding
from llm_service.settings import LLMServiceExtras

log = logging.getLogger("lada.llm.main")


def build_core(config: LLMServiceConfig, extras: LLMServiceExtras | None = None) -> LLMCore:
    """The in-process LLM: backend (starts the engine), public pool, limits, versions."""
    extras = extras or LLMServiceExtras.from_env()
    extras.check()  # before the engine starts
    model = check_model_dir(config.model)
    pool = load_dataset(config.public_pool)
    settings = BackendSettings(
        model=model,
        dtype=config.dtype,
        seed=config.seed,
        max_model_len=extras.max_model_len,
        memory_fraction=config.gpu_memory_utilization,
        max_lora_rank=extras.max_lora_rank,
    )
    backend = create_backend(config.backend, settings)
    limits = Limits(
        max_paths_per_request=config.max_paths_per_request,
        max_tokens_limit=config.max_tokens_limit,
        max_samples_per_request=config.max_samples_per_request,
        max_absorb_contributions=extras.max_absorb_contributions,
        max_lora_rank=extras.max_lora_rank,
    )
    state_dir = extras.resolved_state_dir(str(model))
    shared = None  # cache_entries = 0 turns path caching off, Redis included (benchmarks)
    if config.redis_url and extras.path_cache_ttl_s > 0 and extras.cache_entries > 0:
        try:
            shared = _shared_cache(config, extras, model, backend.name, state_dir)
        except Exception:
            backend.close()
            raise
    return LLMCore(backend, pool, limits, extras, state_dir, seed=config.seed, shared=shared)


def _shared_cache(
    config: LLMServiceConfig, extras: LLMServiceExtras, model: Path, backend: str, state: Path
) -> SharedPathCache:
    """The Redis path cache for this model; the digest is hashed once per model files."""
    digest = model_digest(model, memo=state / "model_digest.json")
    model_id = model_identity(digest, backend, config.dtype)
    shared = SharedPathCache.from_url(config.redis_url, model_id, extras.path_cache_ttl_s)
    log.info(
        "shared path cache",
        extra={
            "redis": redact_url(config.redis_url),
            "model_id": model_id,
            "ttl_s": extras.path_cache_ttl_s,
        },
    )
    return shared


def serve(config: LLMServiceConfig) -> int:
    """Start the engine, serve lada.v1.LLMService, block until SIGTERM/SIGINT; exit code."""
    configure_logging(config.server.log_level, config.server.log_json, service="llm")
    try:
        core = build_core(config)
    except (ModelDirError, DatasetSpecError, ValueError) as exc:
        message = str(exc) if config.model else "no model: pass --model PATH"
        log.error("cannot start", extra={"reason": message})
        print(f"lada: error: {message}", file=sys.stderr)
        return 1
    stop_requested = stop_signals()
    try:
        running = start_server("llm", [binding(core)], config.server)
    except Exception:
        core.close()
        raise
    running.add_stop_hook(core.close)
    log.info(
        "llm service ready",
        extra={
            "backend": core.backend.name,
            "model": str(Path(config.model)),
            "serving_version": core.serving_version,
            "port": running.port,
        },
    )
    run_until_signalled(running, stop_requested)
    return 0
