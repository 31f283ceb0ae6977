"""The shared (Redis) path cache: store, serialization, the core, two real LLM services."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lada.config import LLMServiceConfig
from lada.redis_conn import RedisHandle
from lada.state import PathCacheStore
from lada.tasks import load_dataset
from llm_service.cache import (
    SharedPathCache,
    decode_result,
    directory_digest,
    encode_result,
    model_identity,
)
from llm_service.client import LLMClient
from llm_service.core import LLMCore
from llm_service.main import build_core
from llm_service.settings import LLMServiceExtras
from llm_service.types import PathResult, SampleResult, Sampling
from llm_service.versions import VersionInfo
from tests.fixtures_llm import LLM_POOL, start_llm_service

POOL = "synthetic:domains=all,n=64,seed=3"


def _result(cache_hit: bool = False) -> SampleResult:
    return SampleResult(
        "syn-0123456789ab",
        "Q: what is 0.1 + 0.2? ünïcode \u2603\nA:",
        [
            PathResult(
                " 0.30000000000000004 \u00e9", 7, -12.345678901234567, -1.7636684, "stop", True
            ),
            PathResult("", 0, 0.0, 0.0, "length", False),
            PathResult(" x" * 40, 40, -1e4, -250.00000000000003, "length", False),
            PathResult("tiny", 1, -5e-324, -2.2250738585072014e-308, "stop", False),
        ],
        cache_hit,
    )


@pytest.fixture
def model_id() -> str:
    return "test-" + uuid.uuid4().hex[:12]


@pytest.fixture
def path_store(redis_handle: RedisHandle, model_id: str) -> Iterator[PathCacheStore]:
    store = PathCacheStore(redis_handle.client, model_id, ttl_s=600)
    yield store
    store.wipe()


# ---- unit level: store, serialization, isolation ------------------------------------------
def test_a_sample_result_round_trips_exactly(path_store) -> None:
    for original in (_result(False), _result(True)):
        assert decode_result(encode_result(original)) == original
    shared = SharedPathCache(path_store)
    key = shared.key("base", ["sample", "syn-0123456789ab", "prompt", [2, 0.8, 1.0], [32, 7]])
    shared.put_many({key: _result()})
    assert shared.get_many([key]) == [_result()]
    assert (shared.hits, shared.misses, shared.errors) == (1, 0, 0)


def test_the_store_round_trips_bytes_with_a_ttl(path_store, redis_handle) -> None:
    key = path_store.key("base", ["sample", "s1", [1, 2]])
    assert key.startswith(f"lada:pathcache:{path_store.model_id}:base:")
    assert path_store.key("base", ["sample", "s1", [1, 2]]) == key
    assert path_store.key("base", ["sample", "s1", [1, 3]]) != key
    assert path_store.key("v1-abc", ["sample", "s1", [1, 2]]) != key
    assert path_store.get_many([key]) == [None]
    path_store.put_many({key: b"\x00payload\xff"})
    assert path_store.get_many([key, key + "x"]) == [b"\x00payload\xff", None]
    assert 0 < redis_handle.client.ttl(key) <= 600
    assert path_store.wipe() == 1 and path_store.get_many([key]) == [None]


def test_two_models_never_share_entries(redis_handle, path_store) -> None:
    other = PathCacheStore(redis_handle.client, path_store.model_id + "-other", ttl_s=600)
    entry = ["sample", "s1", "prompt", [2, 0.8, 1.0], [32, 7]]
    path_store.put_many({path_store.key("base", entry): b"mine"})
    assert other.key("base", entry) != path_store.key("base", entry)
    assert other.get_many([other.key("base", entry)]) == [None]
    other.put_many({other.key("base", entry): b"theirs"})
    assert path_store.get_many([path_store.key("base", entry)]) == [b"mine"]
    assert other.wipe() == 1
    assert path_store.get_many([path_store.key("base", entry)]) == [b"mine"]


def test_the_model_identity_follows_the_weights_backend_and_dtype(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights-1")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "download.metadata").write_text("a timestamp")
    first = directory_digest(tmp_path)
    (tmp_path / ".cache" / "download.metadata").write_text("another timestamp")
    assert directory_digest(tmp_path) == first  # hidden download metadata is not the model
    (tmp_path / "model.safetensors").write_bytes(b"weights-2")
    assert directory_digest(tmp_path) != first
    ids = {
        model_identity(first, "transformers", "float32"),
        model_identity(first, "vllm", "float32"),
        model_identity(first, "transformers", "bfloat16"),
        model_identity(directory_digest(tmp_path), "transformers", "float32"),
    }
    assert len(ids) == 4 and all(":" not in i for i in ids)


def test_a_redis_error_is_a_miss_logged_once(caplog) -> None:
    shared = SharedPathCache.from_url("redis://127.0.0.1:1/0", "test-down")
    with caplog.at_level(logging.WARNING, logger="lada.llm.cache"):
        key = shared.key("base", ["sample", "s1"])
        assert shared.get_many([key]) == [None]
        shared.put_many({key: _result()})
        assert shared.get_many([key, key]) == [None, None]
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and shared.errors == 1  # later calls skip Redis for a while


# ---- the core: a restart (or another replica) reuses the paths ----------------------------
def _core(model: Path, state_dir: Path, redis_url: str, **extras: int) -> LLMCore:
    config = LLMServiceConfig(
        model=str(model), backend="transformers", public_pool=POOL, redis_url=redis_url
    )
    return build_core(config, LLMServiceExtras(state_dir=str(state_dir), **extras))


def test_a_restarted_core_serves_its_paths_from_redis(micro_zoo, tmp_path, redis_handle) -> None:
    first = _core(Path(micro_zoo.llm), tmp_path / "a", redis_handle.url)
    try:
        assert first.shared is not None
        first.shared.store.wipe()
        ids = list(first.pool)[:3]
        prompts = ["Q: 1 + 1 = ?\nA:"]
        sampling = Sampling(n=2, temperature=0.9, max_tokens=12, seed=101)
        made = first.generate(ids, prompts, sampling)
        assert first.generate_calls == 1
        assert not any(r.cache_hit for r in made.results)
    finally:
        first.close()
    second = _core(Path(micro_zoo.llm), tmp_path / "b", redis_handle.url)
    try:
        assert second.shared is not None and second.shared.model_id == first.shared.model_id

        def no_generation(*args, **kwargs):
            raise AssertionError("the backend generated although Redis held the paths")

        second.backend.generate = no_generation  # type: ignore[method-assign]
        again = second.generate(ids, prompts, sampling)
        assert [r.cache_hit for r in again.results] == [True] * 4
        assert [r.paths for r in again.results] == [r.paths for r in made.results]
        assert [(r.sample_id, r.prompt) for r in again.results] == [
            (r.sample_id, r.prompt) for r in made.results
        ]
        assert second.generate_calls == 0 and second.shared.hits == 4
        assert len(second.cache) == 4  # the LRU in front now holds them too
        assert second.generate(ids[:1], [], sampling).results[0].cache_hit
        assert second.shared.hits == 4  # served by the LRU, Redis not asked again
    finally:
        second.close()


def test_without_a_redis_url_the_core_is_in_process_only(micro_zoo, tmp_path) -> None:
    core = _core(Path(micro_zoo.llm), tmp_path / "state", "")
    try:
        assert core.shared is None
        sample = list(core.pool)[0]
        sampling = Sampling(n=1, max_tokens=8, seed=5)
        assert not core.generate([sample], [], sampling).results[0].cache_hit
        assert core.generate([sample], [], sampling).results[0].cache_hit
        assert core.generate_calls == 1
    finally:
        core.close()


def test_the_shared_cache_is_off_with_the_path_cache_or_a_zero_ttl(
    micro_zoo, tmp_path, redis_handle
) -> None:
    for extras in ({"cache_entries": 0}, {"path_cache_ttl_s": 0}):
        core = _core(Path(micro_zoo.llm), tmp_path / "state", redis_handle.url, **extras)
        try:
            assert core.shared is None
        finally:
            core.close()


def test_an_absorbed_version_is_keyed_by_its_adapters_digest(micro_zoo, tmp_path) -> None:
    core = _core(Path(micro_zoo.llm), tmp_path / "state", "redis://127.0.0.1:1/0")
    try:
        adapters = {}
        for name, weights in (("v1", b"adapter-a"), ("v2", b"adapter-b"), ("v3", b"adapter-a")):
            adapters[name] = tmp_path / name
            adapters[name].mkdir()
            (adapters[name] / "adapter_model.safetensors").write_bytes(weights)
            core.versions.add_and_serve(VersionInfo(name, adapter_dir=str(adapters[name])))
        keys = {v: core._version_key(v) for v in ("base", "v1", "v2", "v3")}
        assert keys["base"] == "base"
        assert keys["v1"] and keys["v1"].startswith("v1-") and keys["v2"].startswith("v2-")
        assert keys["v1"][3:] != keys["v2"][3:]  # other weights, other digest
        assert keys["v1"][3:] == keys["v3"][3:]  # same weights, same digest
        core.versions.add_and_serve(VersionInfo("v4", adapter_dir=str(tmp_path / "gone")))
        assert core._version_key("v4") is None  # unreadable: the shared cache is skipped
    finally:
        core.close()


def test_an_unreachable_redis_does_not_fail_generation(micro_zoo, tmp_path) -> None:
    core = _core(Path(micro_zoo.llm), tmp_path / "state", "redis://127.0.0.1:1/0")
    try:
        assert core.shared is not None
        result = core.generate(list(core.pool)[:2], [], Sampling(n=2, max_tokens=8, seed=6))
        assert [len(r.paths) for r in result.results] == [2, 2]
        assert core.generate_calls == 1 and core.shared.errors == 1
    finally:
        core.close()


# ---- two real LLM-service processes on one Redis --------------------------------------------
def _generated_lines(log: str) -> list[dict]:
    records = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("logger") != "lada.llm.core":
            continue
        if record.get("msg") == "generated":
            records.append(record)
    return records


def test_a_second_service_serves_the_first_services_paths_without_generating(
    micro_zoo, tmp_path, redis_handle
) -> None:
    env = {"REDIS_URL": redis_handle.url, "LADA_LLM_PATH_CACHE_TTL_S": "600"}
    model = Path(micro_zoo.llm)
    ids: list[str] = []
    first = start_llm_service(model, tmp_path, "llm-a", backend="transformers", env=env)
    try:
        with LLMClient(first.address, timeout_s=120) as llm:
            ids = [p.id for p in load_dataset(LLM_POOL)[200:204]]
            made = llm.generate(ids, n=3, temperature=0.8, max_tokens=16, seed=4242)
        assert not any(r.cache_hit for r in made.results)
    finally:
        assert first.process.stop(timeout=60) == 0
    assert len(_generated_lines(first.log())) == 1, first.log()[-3000:]

    second = start_llm_service(model, tmp_path, "llm-b", backend="transformers", env=env)
    try:
        with LLMClient(second.address, timeout_s=120) as llm:
            served = llm.generate(ids, n=3, temperature=0.8, max_tokens=16, seed=4242)
            other = llm.generate(ids[:1], n=3, temperature=0.8, max_tokens=16, seed=4243)
    finally:
        assert second.process.stop(timeout=60) == 0
    assert [r.cache_hit for r in served.results] == [True] * 4
    assert [r.paths for r in served.results] == [r.paths for r in made.results]
    assert not other.results[0].cache_hit  # another seed is another entry
    # The second service's backend ran once: for the other seed only, not for the shared ones.
    lines = _generated_lines(second.log())
    assert [line["samples"] for line in lines] == [1], second.log()[-3000:]
