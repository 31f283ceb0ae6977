"""`lada allocator serve`: connect Redis, load the public pool, start the servicer and the
round driver (or, by `role`, only one of them), block until SIGTERM."""

from __future__ import annotations

import logging
import sys

from allocator.core import AllocatorCore
from allocator.driver import RoundDriver
from allocator.llm_gateway import GrpcLLMGateway
from allocator.service import AllocatorServicer
from lada.config import (
    ALLOCATOR_ROLES,
    ROLE_DRIVER,
    ROLE_RPC,
    AllocatorConfig,
    AllocatorSettings,
)
from lada.redis_conn import connect
from lada.server import ServiceBinding, channel_credentials, run_until_signalled, start_server
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
    if config.role not in ALLOCATOR_ROLES:
        print(
            f"lada allocator: role: {config.role!r} is not one of {', '.join(ALLOCATOR_ROLES)}",
            file=sys.stderr,
        )
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
    bindings = [
        ServiceBinding(
            allocator_pb2_grpc.add_AllocatorServicer_to_server,
            AllocatorServicer(core),
            "lada.v1.Allocator",
        )
    ]
    running = start_server(
        "allocator", bindings if config.role != ROLE_DRIVER else [], config.server
    )
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
            "driver": driver.owner if driver is not None else "",
        },
    )
    run_until_signalled(running)
    return 0
