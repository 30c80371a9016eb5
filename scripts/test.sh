#!/usr/bin/env bash
# Everything CI runs: dependencies, formatting, lints, and all tests with a per-test
# timeout. The throwaway PostgreSQL cluster the tests start is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh

stop_test_cluster() {
  local data
  data=$(cat target/tmp/pg-datadir 2>/dev/null) || return 0
  if [ -f "$data/postmaster.pid" ]; then
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$data" -m fast stop >/dev/null 2>&1 || true
    else
      /usr/lib/postgresql/15/bin/pg_ctl -D "$data" -m fast stop >/dev/null 2>&1 || true
    fi
  fi
}
trap stop_test_cluster EXIT

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "==> cargo nextest run (profile ci)"
CI="${CI:-1}" cargo nextest run --profile ci
