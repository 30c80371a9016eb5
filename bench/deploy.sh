#!/usr/bin/env bash
# From a failed health gate to a healthy stable release, side by side on one stack:
# PostgreSQL in a compose service (the host's binaries in a busybox image), a web app
# built from a Dockerfile whose entrypoint applies its migrations (as `prisma migrate
# deploy` does) and serves /health, a git work tree with a bare remote.
#
# Each run deploys a broken release v2 that also migrates (a new table, a new column):
#
#   stablehand:  `stablehand deploy`; the clock starts when the gate's failed verdict is
#                journaled and stops when production is healthy on v1 again
#   proposal:    the proposal's deploy (pg_dump | gzip -9, build, up), then from the
#                failed verdict its rollback (git reset --hard latest-stable; down;
#                sleep 5; build --pull; up -d; sleep 15; ps) and its database restore
#                script (stop backend; DROP/CREATE DATABASE; gunzip -c | psql; start;
#                sleep 10; ps)
#   stablehand --snapshot: the same with database.snapshot = true
#
# "Healthy on v1 again" is the same probe for all three, polled every 100 ms: /health
# answers 200, the app serves v1's version file, and the database is v1's (the
# migration's table is gone, every seeded row is there). Also printed: when each tool
# itself says it is done (stablehand after its health gate; the proposal after its
# sleeps and `ps` checks).
#
#   BENCH_RUNS=3 BENCH_ROWS=100000 bash bench/deploy.sh     (root; Docker with Compose)
#
# Targets (issue 6): stablehand >= 5x faster than the proposal without a snapshot; with
# a snapshot, the database part of the rollback under 1 s.
#
# First, the fixed costs (issue 17): good code-only deploys and `stablehand backup`
# runs, with every docker, docker-compose, git, psql, pg_dump and pg_restore process
# counted (a shim on PATH logs it and execs the real one). A deploy's fixed part is its
# wall time less its build and gate steps (the build's and the gate's own waiting).
# Targets: fixed part <= 3 s; a compose-mode backup of the demo database <= 1 s.
# BENCH_BEFORE_BIN=/path/to/an/older/stablehand measures it too, side by side.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-3}
ROWS=${BENCH_ROWS:-100000}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
MIN_SPEEDUP=5
MAX_SNAPSHOT_DB_MS=1000
MAX_FIXED_S=3
MAX_BACKUP_S=1
FIXED_RUNS=${BENCH_FIXED_RUNS:-3}
BEFORE=${BENCH_BEFORE_BIN:-}

source "$ROOT/bench/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root (the PostgreSQL data directory belongs to the postgres user)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $ROWS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROWS must be a positive integer"
[[ $FIXED_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_FIXED_RUNS must be a positive integer"
[[ -z $BEFORE || -x $BEFORE ]] || die "BENCH_BEFORE_BIN is not an executable: $BEFORE"
docker info >/dev/null 2>&1 || die "no Docker engine answers (scripts/ensure-deps.sh starts one)"
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 ||
  die "neither docker compose nor docker-compose is installed"
command -v curl >/dev/null || die "curl is required"
[[ -x $PGBIN/psql ]] || die "missing $PGBIN/psql (set PGBIN)"
id postgres >/dev/null 2>&1 || die "there is no postgres user"

log "building the release binary (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet)
SH="$ROOT/target/release/stablehand"

WORK=$(mktemp -d -t stablehand-deploy-bench.XXXXXX)
chmod 755 "$WORK"
PROJECT="shdbench$$"
source "$ROOT/examples/demo-app/stack.sh"

compose() { stack_compose "$@"; }
quiet_compose() { compose "$@" >/dev/null 2>&1; }
git_() { stack_git "$@"; }
psql_() { stack_psql "$@"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n ${POLL_PID:-} ]] && kill "$POLL_PID" 2>/dev/null
  stack_destroy
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

# --- the stack: examples/demo-app -------------------------------------------------------
stack_create
sed 's/^name = "appdb"$/name = "appdb"\nsnapshot = true/' "$APP/stablehand.toml" >"$APP/stablehand-snapshot.toml"
log "starting PostgreSQL in compose and seeding $ROWS rows"
stack_up_db "$ROWS"
DB_SIZE=$(psql_ "select pg_size_pretty(pg_database_size('appdb'))")

log "deploying v1 with stablehand (marked stable)"
(cd "$APP" && "$SH" -q deploy) >/dev/null || die "the first deploy failed"

# --- fixed costs: good code-only deploys and backups, subprocesses counted --------------
mkdir -p "$WORK/shims"
for t in docker docker-compose git psql pg_dump pg_restore; do
  real=$(command -v "$t" || true)
  [[ -n $real ]] || continue
  # Counts the process (one line, the tool's name) and becomes the real tool.
  printf '#!/bin/sh\necho %s >>"%s/calls"\nexec %s "$@"\n' "$t" "$WORK" "$real" >"$WORK/shims/$t"
  chmod +x "$WORK/shims/$t"
done
counts() { # the processes logged since the last reset, as "git N, docker N, ..."
  local t out=() n
  for t in git docker docker-compose psql pg_dump pg_restore; do
    n=$(grep -cx "$t" "$WORK/calls" 2>/dev/null || true)
    out+=("$t ${n:-0}")
  done
  out+=("total $(wc -l <"$WORK/calls" 2>/dev/null || echo 0)")
  local IFS=,
  echo "${out[*]}" | sed 's/,/, /g'
}
declare -A FIXED BACKUP_S CALLS_DEPLOY CALLS_BACKUP
fixed_costs() { # LABEL BINARY: FIXED_RUNS good deploys and backups
  local label=$1 bin=$2 i t0 t1 out="$WORK/fixed.json" fixed=() backup=()
  for ((i = 1; i <= FIXED_RUNS; i++)); do
    # Still v1 to the probes below: only a file they do not read changes.
    echo "$label $i" >"$DEV/app/www/build-note"
    stack_release v1 yes >/dev/null
    rm -f "$WORK/calls"
    t0=$EPOCHREALTIME
    (cd "$APP" && PATH="$WORK/shims:$PATH" "$bin" --json deploy >"$out" 2>"$WORK/fixed.err") ||
      { cat "$out" "$WORK/fixed.err" >&2; die "a good deploy ($label) failed"; }
    t1=$EPOCHREALTIME
    fixed+=("$(python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); steps = {s["name"]: s["took_ms"] for s in d["steps"]}
print("%.2f" % (float(sys.argv[3]) - float(sys.argv[2]) - (steps.get("build", 0) + steps.get("gate", 0)) / 1000))' "$out" "$t0" "$t1")")
    CALLS_DEPLOY[$label]=$(counts)
    rm -f "$WORK/calls"
    t0=$EPOCHREALTIME
    (cd "$APP" && PATH="$WORK/shims:$PATH" "$bin" -q backup >/dev/null 2>"$WORK/fixed.err") ||
      { cat "$WORK/fixed.err" >&2; die "stablehand backup ($label) failed"; }
    backup+=("$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')")
    CALLS_BACKUP[$label]=$(counts)
  done
  FIXED[$label]="$(median "${fixed[@]}") (runs ${fixed[*]})"
  BACKUP_S[$label]="$(median "${backup[@]}") (runs ${backup[*]})"
  log "  $label: deploy fixed part ${FIXED[$label]} s; backup ${BACKUP_S[$label]} s"
}
log "fixed costs: $FIXED_RUNS good code-only deploys and backups per binary"
if [[ -n $BEFORE ]]; then fixed_costs before "$BEFORE"; fi
fixed_costs stablehand "$SH"

# --- helpers -----------------------------------------------------------------------------
healthy_v1() { # the same probe for all three
  [[ $(curl -fsS --max-time 1 "http://127.0.0.1:$WEB_PORT/health" 2>/dev/null) == ok ]] || return 1
  [[ $(curl -fsS --max-time 1 "http://127.0.0.1:$WEB_PORT/version" 2>/dev/null) == v1 ]] || return 1
  # Not while the proposal's restore script runs: a probe's session would make its
  # DROP DATABASE fail (nothing can be healthy in that window anyway).
  [[ ! -e $WORK/restoring ]] || return 1
  [[ $(psql_ "select to_regclass('audit') is null and (select count(*) from messages where body like 'message %') = $ROWS" 2>/dev/null) == t ]]
}

start_poll() { # writes the epoch time of the first healthy_v1 to $1
  local out=$1
  rm -f "$out"
  (
    while ! healthy_v1; do sleep 0.1; done
    echo "$EPOCHREALTIME" >"$out"
  ) &
  POLL_PID=$!
}

wait_poll() { # waits up to 120 s for the poller
  local i
  for ((i = 0; i < 1200; i++)); do
    [[ -s $1 ]] && { wait "$POLL_PID" 2>/dev/null || true; POLL_PID=; return 0; }
    sleep 0.1
  done
  kill "$POLL_PID" 2>/dev/null || true
  POLL_PID=
  die "production never became healthy on v1 again"
}

broken_release() { # commits and pushes a broken v2 with a migration; prints its sha
  stack_release "v2 try $1" no 002_audit \
    "create table if not exists audit (id serial primary key, what text); alter table messages add column if not exists flagged boolean;"
}

wait_journal_failed() { # waits for the journaled failed verdict; prints its time
  local i j="$APP/.stablehand/journal.json"
  for ((i = 0; i < 3000; i++)); do
    if [[ -f $j ]] && grep -q '"failed_commit": "' "$j" 2>/dev/null; then
      echo "$EPOCHREALTIME"
      return 0
    fi
    sleep 0.05
  done
  die "the deploy never journaled a failed gate"
}

json_ms() { # KEY JSON-FILE: a number under "rollback"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[2])); print(d["rollback"][sys.argv[1]] or 0)' "$1" "$2"
}

step_ms() { # STEP JSON-FILE: took_ms of a named step
  python3 -c 'import json,sys; d=json.load(open(sys.argv[2])); print(next((s["took_ms"] for s in d["steps"] if s["name"]==sys.argv[1]), 0))' "$1" "$2"
}

declare -a P_HEALTHY P_DONE S_HEALTHY S_DONE S_DB N_HEALTHY N_DONE N_DB N_SWAP LOADS=()
note_load "before the runs"
for ((run = 1; run <= RUNS; run++)); do
  for mode in stablehand snapshot; do
    config="$APP/stablehand.toml"
    [[ $mode == snapshot ]] && config="$APP/stablehand-snapshot.toml"
    log "run $run/$RUNS: stablehand ($mode mode) deploy of a broken, migrating v2"
    broken_release "$run-$mode" >/dev/null
    out="$WORK/sh-$mode.json"
    (cd "$APP" && exec "$SH" --config "$config" --json deploy >"$out" 2>"$WORK/sh.err") &
    DEPLOY_PID=$!
    t0=$(wait_journal_failed)
    start_poll "$WORK/poll"
    code=0
    wait "$DEPLOY_PID" || code=$?
    t_done=$EPOCHREALTIME
    wait_poll "$WORK/poll"
    ((code == 11)) || { cat "$out" "$WORK/sh.err" >&2; die "stablehand exited $code, not 11"; }
    healthy=$(awk -v a="$t0" -v b="$(cat "$WORK/poll")" 'BEGIN { printf "%.2f", b - a }')
    done_s=$(awk -v a="$t0" -v b="$t_done" 'BEGIN { printf "%.2f", b - a }')
    db_ms=$(json_ms database_ms "$out")
    if [[ $mode == stablehand ]]; then
      S_HEALTHY+=("$healthy"); S_DONE+=("$done_s"); S_DB+=("$(awk -v m="$db_ms" 'BEGIN { printf "%.2f", m / 1000 }')")
    else
      N_HEALTHY+=("$healthy"); N_DONE+=("$done_s"); N_DB+=("$db_ms"); N_SWAP+=("$(step_ms database_swap "$out")")
    fi
  done

  log "run $run/$RUNS: the proposal's deploy of a broken, migrating v2, then its rollback and restore"
  V2=$(broken_release "$run-proposal")
  (cd "$APP" && git_ fetch -q origin && git_ reset -q --hard "$V2")
  compose exec -T postgres pg_dump --no-owner --no-acl -U app -d appdb | gzip -9 >"$WORK/backup.sql.gz"
  quiet_compose up -d --build web
  for _ in $(seq 1 300); do [[ $(psql_ "select to_regclass('audit') is not null") == t ]] && break; sleep 0.1; done
  [[ $(psql_ "select to_regclass('audit') is not null") == t ]] || die "the proposal's v2 did not migrate"
  # The failed health check: from here the clock runs.
  t0=$EPOCHREALTIME
  start_poll "$WORK/poll"
  (
    cd "$APP"
    git_ reset -q --hard latest-stable
    quiet_compose down --remove-orphans
    sleep 5
    quiet_compose build --pull
    quiet_compose up -d
    sleep 15
    compose ps web >/dev/null 2>&1
    # scripts/ops/restore-database-backup.sh
    touch "$WORK/restoring"
    quiet_compose stop web
    compose exec -T postgres psql -q -U app -d postgres >/dev/null <<SQL
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'appdb';
DROP DATABASE IF EXISTS appdb;
CREATE DATABASE appdb;
SQL
    gunzip -c "$WORK/backup.sql.gz" | compose exec -T postgres psql -q -U app -d appdb --set ON_ERROR_STOP=on >/dev/null
    quiet_compose start web
    rm -f "$WORK/restoring"
    sleep 10
    compose ps web >/dev/null 2>&1
  )
  t_done=$EPOCHREALTIME
  wait_poll "$WORK/poll"
  P_HEALTHY+=("$(awk -v a="$t0" -v b="$(cat "$WORK/poll")" 'BEGIN { printf "%.2f", b - a }')")
  P_DONE+=("$(awk -v a="$t0" -v b="$t_done" 'BEGIN { printf "%.2f", b - a }')")
done
note_load "after the runs"

PH=$(median "${P_HEALTHY[@]}"); PD=$(median "${P_DONE[@]}")
SHH=$(median "${S_HEALTHY[@]}"); SD=$(median "${S_DONE[@]}"); SDB=$(median "${S_DB[@]}")
NH=$(median "${N_HEALTHY[@]}"); ND=$(median "${N_DONE[@]}"); NDB=$(median "${N_DB[@]}"); NSW=$(median "${N_SWAP[@]}")
SPEEDUP=$(ratio "$PH" "$SHH")
echo
echo "from a failed health gate to a healthy stable release ($RUNS runs, medians, seconds;"
echo "database appdb: $ROWS rows, $DB_SIZE; ${COMPOSE[*]}):"
printf '  %-66s %8s %8s\n' "" "healthy" "says done"
printf '  %-66s %8s %8s\n' "proposal (down; sleep 5; build --pull; up; sleep 15; restore; sleep 10)" "$PH" "$PD"
printf '  %-66s %8s %8s\n' "stablehand (restore into a new database + swap)" "$SHH" "$SD"
printf '  %-66s %8s %8s\n' "stablehand with database.snapshot = true" "$NH" "$ND"
echo "  stablehand database part: restore + swap ${SDB}s; snapshot swap step ${NSW} ms (whole database part ${NDB} ms)"
echo "  runs: proposal ${P_HEALTHY[*]} | stablehand ${S_HEALTHY[*]} | snapshot ${N_HEALTHY[*]}"
echo "  (\"says done\" for stablehand includes its health gate: 2 good probes, then 5 s stable)"
printf '%s\n' "${LOADS[@]}"
echo
echo "fixed costs (medians of $FIXED_RUNS; a deploy's fixed part = wall - build - gate):"
for label in ${BEFORE:+before} stablehand; do
  echo "  $label: deploy fixed part ${FIXED[$label]} s; processes per deploy: ${CALLS_DEPLOY[$label]}"
  echo "  $label: stablehand backup ${BACKUP_S[$label]} s; processes per backup: ${CALLS_BACKUP[$label]}"
done
FIXED_NOW=${FIXED[stablehand]%% *}
BACKUP_NOW=${BACKUP_S[stablehand]%% *}
echo "deploy fixed part: ${FIXED_NOW} s (target <= ${MAX_FIXED_S} s)"
echo "compose-mode backup: ${BACKUP_NOW} s (target <= ${MAX_BACKUP_S} s)"
echo
echo "speedup to healthy, without a snapshot: ${SPEEDUP}x (target >= ${MIN_SPEEDUP}x)"
echo "speedup to healthy, with a snapshot: $(ratio "$PH" "$NH")x"
echo "snapshot swap step: ${NSW} ms (target < ${MAX_SNAPSHOT_DB_MS} ms)"
pass=1
awk -v a="$SPEEDUP" -v b="$MIN_SPEEDUP" 'BEGIN { exit !(a >= b) }' || pass=0
le "$NSW" "$MAX_SNAPSHOT_DB_MS" || pass=0
le "$FIXED_NOW" "$MAX_FIXED_S" || pass=0
le "$BACKUP_NOW" "$MAX_BACKUP_S" || pass=0
if ((pass)); then echo PASS; else echo FAIL; exit 1; fi
