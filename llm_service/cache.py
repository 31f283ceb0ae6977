"""Path caches: an in-process LRU, and behind it a Redis cache every replica shares.

`LRUCache` holds generated paths keyed by (sample or prompt, model version, sampling) in
this process. `SharedPathCache` sits behind it when the service has a Redis URL: entries
keyed by (model identity, sample or prompt, model version, sampling) in Redis (keys owned
by `lada.state.PathCacheStore`), so every LLM-service replica and every restart reuses
paths another one generated. The model identity (`model_identity`) is a digest of the
model directory's files plus the backend, dtype, LaDa version and `CACHE_SCHEMA`, so two
different models (or two backends, whose seeded samples differ) never share entries; a
non-base version is named with its adapter's digest, since two replicas may each have
trained their own `v1`. Entries expire `path_cache_ttl_s` (7 days) after their last write.

A Redis failure never fails a generation: the shared cache logs once, treats every lookup
as a miss and skips Redis for `RETRY_AFTER_S`, then tries again (and logs the recovery).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

import redis

from lada import __version__ as lada_version
from lada.redis_conn import redact_url
from lada.state import PATH_CACHE_TTL_S, PathCacheStore
from llm_service.types import PathResult, SampleResult

log = logging.getLogger("lada.llm.cache")
CACHE_SCHEMA = 1  # bump when what a cached entry means changes (stop rules, correctness)
RETRY_AFTER_S = 30.0  # after a Redis error, the shared cache is skipped this long
REDIS_TIMEOUT_S = 2.0  # connect and socket timeout of the cache's Redis client

V = TypeVar("V")


class LRUCache(Generic[V]):
    """Thread-safe bounded mapping; `get` refreshes recency, `put` evicts the oldest."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            if key not in self._items:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]

    def put(self, key: Hashable, value: V) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


# ---- the shared (Redis) cache ------------------------------------------------------------
def encode_result(result: SampleResult) -> bytes:
    """SampleResult -> JSON bytes; floats use repr, so `decode_result` is exact."""
    payload = {
        "schema": CACHE_SCHEMA,
        "sample_id": result.sample_id,
        "prompt": result.prompt,
        "cache_hit": result.cache_hit,
        "paths": [
            [
                p.text,
                p.token_count,
                p.joint_logprob,
                p.normalized_logprob,
                p.finish_reason,
                p.correct,
            ]
            for p in result.paths
        ],
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_result(data: bytes) -> SampleResult:
    """The inverse of `encode_result`; ValueError for another schema or a malformed entry."""
    payload = json.loads(data.decode("utf-8"))
    if not isinstance(payload, dict) or payload.get("schema") != CACHE_SCHEMA:
        raise ValueError("path cache entry: unknown schema")
    paths = [
        PathResult(str(text), int(count), float(joint), float(norm), str(reason), bool(ok))
        for text, count, joint, norm, reason, ok in payload["paths"]
    ]
    return SampleResult(
        str(payload["sample_id"]), str(payload["prompt"]), paths, bool(payload["cache_hit"])
    )


def _files(root: Path) -> list[Path]:
    """Regular files under `root`, sorted, skipping hidden ones (`.cache/` of downloads)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def directory_digest(root: Path) -> str:
    """sha256 over every non-hidden file under `root` (relative path and content)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    digest = hashlib.sha256()
    for path in _files(root):
        digest.update(str(path.relative_to(root)).encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def model_digest(model: Path, memo: Path | None = None) -> str:
    """`directory_digest` of a model directory, remembered in `memo` (a JSON file) while
    no file's size or mtime changed, so a restart does not hash the weights again."""
    files = _files(model)
    stamp = [[str(p.relative_to(model)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    if memo is not None and memo.is_file():
        try:
            saved = json.loads(memo.read_text())
            if saved.get("model") == str(model) and saved.get("files") == stamp:
                return str(saved["digest"])
        except (ValueError, OSError, AttributeError):
            pass
    digest = directory_digest(model)
    if memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_suffix(".tmp")
            tmp.write_text(json.dumps({"model": str(model), "files": stamp, "digest": digest}))
            os.replace(tmp, memo)
        except OSError:
            log.warning("cannot remember the model digest", extra={"memo": str(memo)})
    return digest


def model_identity(model_digest_hex: str, backend: str, dtype: str) -> str:
    """What the shared cache keys by: the weights plus what else changes the samples."""
    parts = [model_digest_hex, backend, dtype, lada_version, CACHE_SCHEMA]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


class SharedPathCache:
    """SampleResults in Redis (`PathCacheStore`), surviving Redis errors.

    `get_many` and `put_many` never raise for Redis trouble: an error is logged once per
    outage, lookups count as misses and Redis is skipped for `RETRY_AFTER_S`.
    """

    def __init__(self, store: PathCacheStore, where: str = "") -> None:
        self.store = store
        self.where = where
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self._down_until = 0.0
        self._down = False
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, model_id: str, ttl_s: int = PATH_CACHE_TTL_S) -> SharedPathCache:
        """A client for `url` (not connected until first use, so a down Redis is no error)."""
        client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        return cls(PathCacheStore(client, model_id, ttl_s), where=redact_url(url))

    @property
    def model_id(self) -> str:
        return self.store.model_id

    def key(self, version: str, entry: object) -> str:
        return self.store.key(version, entry)

    def get_many(self, keys: Sequence[str]) -> list[SampleResult | None]:
        """Cached results of `keys` (None: absent, unreadable, or Redis unavailable)."""
        if not keys or not self._available():
            return [None] * len(keys)
        try:
            raw = self.store.get_many(list(keys))
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            return [None] * len(keys)
        self._recovered()
        found: list[SampleResult | None] = []
        for key, data in zip(keys, raw, strict=True):
            result = None
            if data is not None:
                try:
                    result = decode_result(data)
                except (ValueError, KeyError, TypeError):
                    log.warning("unreadable path cache entry (ignored)", extra={"key": key})
            found.append(result)
        with self._lock:
            hits = sum(r is not None for r in found)
            self.hits += hits
            self.misses += len(found) - hits
        return found

    def put_many(self, results: dict[str, SampleResult]) -> None:
        if not results or not self._available():
            return
        try:
            self.store.put_many({k: encode_result(r) for k, r in results.items()})
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._recovered()

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self.errors += 1
            self._down_until = time.monotonic() + RETRY_AFTER_S
            first = not self._down
            self._down = True
        if first:
            log.warning(
                "shared path cache unavailable; generating without it",
                extra={"redis": self.where, "error": str(exc), "retry_after_s": RETRY_AFTER_S},
            )

    def _recovered(self) -> None:
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                log.info("shared path cache available again", extra={"redis": self.where})
