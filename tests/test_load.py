"""The load run in its short CI form: simulated agents against a real allocator process.

The full version (200 agents x 10 rounds) is `lada bench load`; here 20 agents x 2 rounds
check the property that matters: every statistic sent is in Redis exactly once.
"""

from __future__ import annotations

import os

from lada.bench.load import run_load


def test_every_statistic_sent_is_stored_exactly_once(redis_handle) -> None:
    result, exactly_once = run_load(agents=20, rounds=2, redis_url=os.environ["REDIS_URL"])
    summary = result.summary()
    assert exactly_once == {"missing": 0, "extra": 0}
    assert summary["errors"] == {}
    assert summary["rpcs"]["RegisterAgent"]["calls"] == 20
    assert summary["rpcs"]["ReportStats"]["calls"] == 40
    assert summary["stats_sent"] == 20 * 2 * 16  # capacity 16 per agent per round
