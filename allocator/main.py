"""`lada allocator serve`: connect Redis, load the public pool, start the servicer and the
round driver, block until SIGTERM."""

from __future__ import annotations

import logging
import sys

from allocator.core import AllocatorCore
from allocator.driver import RoundDriver
from allocator.llm_gateway import GrpcLLMGateway
from allocator.service import AllocatorServicer
from lada.config import AllocatorConfig, AllocatorSettings
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
    driver = RoundDriver(core, llm)
    running = start_server(
        "allocator",
        [
            ServiceBinding(
                allocator_pb2_grpc.add_AllocatorServicer_to_server,
                AllocatorServicer(core),
                "lada.v1.Allocator",
            )
        ],
        config.server,
    )
    running.add_stop_hook(driver.stop)
    if llm is not None:
        running.add_stop_hook(llm.close)
    driver.start()
    log.info(
        "allocator ready",
        extra={
            "port": running.port,
            "run_id": config.run_id,
            "policy": config.policy,
            "pool_size": len(core.problems),
            "driver": driver.owner,
        },
    )
    run_until_signalled(running)
    return 0
