"""`lada allocator serve`: connect Redis, load the public pool, start the servicer and the
round driver (or, by `role`, only one of them), block until SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

from allocator.core import AllocatorCore
from allocator.driver import RoundDriver
from allocator.llm_gateway import GrpcLLMGateway
from allocator.service import AioAllocatorServicer, AllocatorServicer
from lada.config import (
    ALLOCATOR_ROLES,
    ROLE_DRIVER,
    ROLE_RPC,
    SERVER_AIO,
    SERVER_MODES,
    AllocatorConfig,
    AllocatorSettings,
    ConfigError,
    check_choice,
)
from lada.redis_conn import connect
from lada.server import (
    AioRunningServer,
    RunningServer,
    ServiceBinding,
    aio_stop_signals,
    channel_credentials,
    run_aio_until_signalled,
    run_until_signalled,
    start_aio_server,
    start_server,
    stop_signals,
)
from lada.state import Conflict, StateStore
from lada.tasks import DatasetSpecError, load_dataset
from lada.v1 import allocator_pb2_grpc

log = logging.getLogger("lada.allocator")


def build_core(config: AllocatorConfig, settings: AllocatorSettings | None = None) -> AllocatorCore:
    """The allocator's core over the configured Redis and public pool (no server)."""
    handle = connect(config.redis_url or None)
    store = StateStore(handle.client, config.run_id)
    return AllocatorCore(
        store, config, load_dataset(config.public_pool), settings or config.settings
    )


def serve(config: AllocatorConfig) -> int:
    """Serve until signalled; 2 when the pool or run configuration is unusable."""
    try:
        check_choice("role", config.role, ALLOCATOR_ROLES)
        check_choice("server_mode", config.server_mode, SERVER_MODES)
    except ConfigError as exc:
        print(f"lada allocator: {exc}", file=sys.stderr)
        return 2
    try:
        core = build_core(config)
    except (DatasetSpecError, Conflict, ValueError) as exc:
        print(f"lada allocator: {exc}", file=sys.stderr)
        return 2
    llm = (
        GrpcLLMGateway(
            config.llm_address,
            core.settings.llm_timeout_s,
            credentials=channel_credentials(config.llm_tls),
        )
        if config.llm_address
        else None
    )
    driver = RoundDriver(core, llm) if config.role != ROLE_RPC else None
    _freeze_startup_objects()
    if config.server_mode == SERVER_AIO:
        asyncio.run(_serve_aio(config, core, driver, llm))
        return 0
    binding = ServiceBinding(
        allocator_pb2_grpc.add_AllocatorServicer_to_server,
        AllocatorServicer(core),
        "lada.v1.Allocator",
    )
    stop_requested = stop_signals()
    running = start_server(
        "allocator", [binding] if config.role != ROLE_DRIVER else [], config.server
    )
    _started(config, core, running, driver, llm)
    run_until_signalled(running, stop_requested)
    return 0


def _freeze_startup_objects() -> None:
    """Move what startup built (imports, the pool, its clustering: ~130k objects that live as
    long as the process) out of the cyclic collector's reach. Each full collection scanned
    them all and stalled the process ~50 ms, the event loop and every RPC on it included
    (seen under `lada bench load`); reference counting still frees them as before."""
    gc.collect()
    gc.freeze()


async def _serve_aio(
    config: AllocatorConfig,
    core: AllocatorCore,
    driver: RoundDriver | None,
    llm: GrpcLLMGateway | None,
) -> None:
    """Serve on grpc.aio in this loop (the driver keeps its own thread) until signalled."""
    binding = ServiceBinding(
        allocator_pb2_grpc.add_AllocatorServicer_to_server,
        AioAllocatorServicer(core),
        "lada.v1.Allocator",
    )
    stop_requested = aio_stop_signals()
    running = await start_aio_server(
        "allocator", [binding] if config.role != ROLE_DRIVER else [], config.server
    )
    _started(config, core, running, driver, llm)
    await run_aio_until_signalled(running, stop_requested)


def _started(
    config: AllocatorConfig,
    core: AllocatorCore,
    running: RunningServer | AioRunningServer,
    driver: RoundDriver | None,
    llm: GrpcLLMGateway | None,
) -> None:
    """Hook the driver and the LLM channel to the server's stop, start the driver, log."""
    if driver is not None:
        running.add_stop_hook(driver.stop)
    if llm is not None:
        running.add_stop_hook(llm.close)
    if driver is not None:
        driver.start()
    log.info(
        "allocator ready",
        extra={
            "port": running.port,
            "run_id": config.run_id,
            "policy": config.policy,
            "pool_size": len(core.problems),
            "role": config.role,
            "server_mode": config.server_mode,
            "driver": driver.owner if driver is not None else "",
        },
    )
