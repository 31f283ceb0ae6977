#!/usr/bin/env bash
# Run the test suite. Uses the Redis at REDIS_URL when set (the tests flush its database);
# embedded-Redis tests always run. pytest's "no tests collected" (exit 5) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check . && .venv/bin/ruff format --check . >/dev/null || { echo "[test] lint failed: run make format" >&2; exit 1; }
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
