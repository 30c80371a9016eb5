#!/usr/bin/env bash
# Zero-downtime deploys, measured side by side in one run (issue 18): the end-to-end test
# tests/it/zero_downtime.rs on the real stack (Docker engine, Compose, PostgreSQL in
# compose, git with a bare remote, `stablehand proxy run` in front of the demo app),
# with a steady load of 4 keep-alive clients on the public address that records every
# request (when it was sent and answered, its status, which release answered):
#   deploy       a good code-only release, blue/green: requests that failed;
#   failed-gate  a release whose gate fails beside the running one: requests that failed;
#   switch-back  a release that fails during its watch: requests that failed after the
#                switch back, and how long the switch took;
#   maintenance  a release whose migration the old code cannot run beside: answers other
#                than 503 inside the maintenance window, and the window's length;
#   stop-start   in the same deploy, a second load straight on the app's own port: what a
#                stop/start deploy (today's, and every tool that stops first) costs users.
# The test asserts the targets; this script runs it and prints its line.
#
#   bash bench/zero-downtime.sh      # or: make bench-zero-downtime
#
# Targets: the three `failed` 0, took < 1000 ms, non-503 0 (stop-start is the baseline).
# The last line reads exactly:
# zero-downtime: deploy failed=N, failed-gate failed=N, switch-back failed=N took=MS ms, maintenance non-503=N window=S s, stop-start failed=N
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

bash scripts/ensure-deps.sh >&2
log "running tests/it/zero_downtime.rs on the real stack"
out=$(CI=1 cargo test --quiet --test it zero_downtime -- --nocapture --test-threads 1 2>&1) || {
  printf '%s\n' "$out" | tail -40 >&2
  die "the zero-downtime test failed"
}
line=$(printf '%s\n' "$out" | grep '^zero-downtime: ' | tail -n 1)
[[ -n $line ]] || die "the test printed no zero-downtime line"
echo "$line"
