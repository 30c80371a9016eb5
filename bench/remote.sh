#!/usr/bin/env bash
# Offsite backup benchmark: `stablehand backup` with an upload to an S3 endpoint against
# the same backup without one, side by side in one run (alternating), on the benchmark
# database (pgbench -s 30 + the messages fixture, ~700 MB) and a local S3 endpoint (moto
# on 127.0.0.1: loopback, so the network is not the limit). Also one encrypted run.
# Prints a table, the ratios and PASS/FAIL per target.
#
#   bash bench/remote.sh                  # ~3 min + build
#   BENCH_RUNS=N                          # runs per variant (default 3; median reported)
#
# Must run as root (initdb and pg_ctl run as the `postgres` user through runuser).
# Exits 0 even when a target is missed (see the output); non-zero only when the benchmark
# itself could not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
FIXTURE=${BENCH_FIXTURE:-/work/shared/fixtures/bench-messages.sql}
FIXTURE_ROWS=600000
RUNS=${BENCH_RUNS:-3}
MOTO=${MOTO:-/opt/stablehand-moto/bin/moto_server}

MAX_UPLOAD_VS_LOCAL=1.3 # backup with upload wall / backup without
MAX_RSS_MB=150          # peak RSS while uploading

source "$ROOT/bench/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root: initdb/pg_ctl are run as the postgres user through runuser"
[[ -x $MOTO ]] || die "moto_server not found at $MOTO (bash scripts/ensure-deps.sh installs it)"
[[ -x /usr/bin/time ]] || die "GNU time is required at /usr/bin/time (apt-get install time)"
[[ -r $FIXTURE ]] || die "fixture not found: $FIXTURE (set BENCH_FIXTURE)"
export PATH="$PGBIN:$PATH"

log "building the release binary (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet)
SH="$ROOT/target/release/stablehand"

MOTO_PID=
bench_cleanup_hook() { if [[ -n $MOTO_PID ]]; then kill "$MOTO_PID" 2>/dev/null || true; fi; }
bench_setup stablehand-bench-remote

S3_PORT=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$S3_PORT/" >/dev/null && break; sleep 0.2; done
curl -fs -X PUT "http://127.0.0.1:$S3_PORT/bench" >/dev/null || die "moto did not start (see $WORK/moto.log)"

load_dataset bench_large 30 "$FIXTURE_ROWS"
log "dataset: $(mb "$(db_bytes bench_large)") MB"

# Two app directories: the same backup settings, one with a remote.
mkdir -p "$WORK/local" "$WORK/remote" "$WORK/encrypted"
common='[database]
mode = "direct"
[backup]
keep_last = 50
keep_within = "0s"'
remote_cfg="
[[backup.remote]]
name = \"s3\"
url = \"s3://bench/app\"
endpoint = \"http://127.0.0.1:$S3_PORT\"
allow_http = true
region = \"us-east-1\"
keep_last = 50"
printf '%s\n' "$common" >"$WORK/local/stablehand.toml"
printf '%s\n%s\n' "$common" "$remote_cfg" >"$WORK/remote/stablehand.toml"
printf '%s\n[backup.encryption]\nrecipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]\n%s\n' \
  "$common" "${remote_cfg//s3:\/\/bench\/app/s3://bench/enc}" >"$WORK/encrypted/stablehand.toml"
export DATABASE_URL="postgresql://postgres@127.0.0.1:$PORT/bench_large"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench

declare -A WALLS RSSES
run() { # VARIANT
  local t0 out
  t0=$EPOCHREALTIME
  (cd "$WORK/$1" && /usr/bin/time -f '%M' -o "$WORK/time.out" "$SH" --quiet backup >"$WORK/out.txt" 2>"$WORK/err.txt") ||
    { cat "$WORK/err.txt" >&2; die "stablehand backup ($1) failed"; }
  out=$(secs_since "$t0")
  WALLS[$1]+="$out "
  RSSES[$1]+="$(cat "$WORK/time.out") "
  log "  $1: $out s, peak RSS $(cat "$WORK/time.out") KB"
}
note_load "before timing"
for i in $(seq 1 "$RUNS"); do
  log "run $i/$RUNS"
  run local
  run remote
done
run encrypted
note_load "after timing"

# What the remote holds: every run's copy, complete (with its manifest).
copies=$(cd "$WORK/remote" && "$SH" --json backup list --remote s3 | grep -c '"id"' || true)
size=$(cd "$WORK/remote" && "$SH" --json backup list | awk -F': ' '/"size_bytes"/ { gsub(/,/, "", $2); print $2; exit }')

med() { median ${1}; }
l=$(med "${WALLS[local]}") r=$(med "${WALLS[remote]}") e=$(med "${WALLS[encrypted]}")
rss_r=$(printf '%s\n' ${RSSES[remote]} ${RSSES[encrypted]} | sort -g | tail -1)
rss_l=$(printf '%s\n' ${RSSES[local]} | sort -g | tail -1)
rss_mb=$(awk -v k="$rss_r" 'BEGIN { printf "%.1f", k / 1024 }')
ratio_r=$(ratio "$r" "$l")
ratio_e=$(ratio "$e" "$l")

echo
echo "## Offsite backup benchmark ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
echo
echo "- database: bench_large, $(mb "$(db_bytes bench_large)") MB on disk; backup file $(mb "${size:-0}") MB"
echo "- remote: moto_server (S3 API) on 127.0.0.1, multipart parts of 8 MiB, 3 in flight"
echo "- runs: $RUNS per variant, alternating, median reported; peak RSS = GNU time %M (stablehand or pg_dump, whichever is larger)"
echo "- copies listed on the remote afterwards: $copies (each with its manifest)"
echo
echo "| variant | wall s (median) | runs | peak RSS MB |"
echo "| --- | --- | --- | --- |"
echo "| backup, local only | $l | ${WALLS[local]}| $(awk -v k="$rss_l" 'BEGIN { printf "%.1f", k / 1024 }') |"
echo "| backup + upload (same pass) | $r | ${WALLS[remote]}| $rss_mb |"
echo "| backup + encrypted upload (age) | $e | ${WALLS[encrypted]}| - |"
echo
echo "| target | measured | limit | verdict |"
echo "| --- | --- | --- | --- |"
echo "| backup with upload / without | $ratio_r | <= $MAX_UPLOAD_VS_LOCAL | $(verdict le "$ratio_r" "$MAX_UPLOAD_VS_LOCAL") |"
echo "| backup with encrypted upload / without (informational) | $ratio_e | - | info |"
echo "| peak RSS while uploading, MB | $rss_mb | < $MAX_RSS_MB | $(verdict lt "$rss_mb" "$MAX_RSS_MB") |"
