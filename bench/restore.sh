#!/usr/bin/env bash
# Restore and snapshot benchmark, side by side in one run on one throwaway PostgreSQL 15
# cluster and one dataset (the ~700 MB benchmark database of bench/backup.sh):
#
#   1. the proposal's restore: create an empty database, `gunzip -c x.sql.gz | psql`;
#   2. `stablehand restore latest --target-db NEW` (into a new database, whole command);
#   3. `stablehand restore latest --yes` (restore + swap): the swap window (`swap_ms`);
#   4. stablehand's snapshot (`Database::snapshot`, CREATE DATABASE ... TEMPLATE, through
#      examples/snapshot_bench.rs) against a plain `cp -r` of the database's directory,
#      plus CREATE DATABASE with both PostgreSQL 15 strategies through psql, and the swap
#      to the snapshot (`Database::swap_to_snapshot`).
#
# Prints a table, the ratios and PASS/FAIL per target.
#
#   bash bench/restore.sh                  # full run: the 712 MB dataset (~4.5 min + build)
#   BENCH_QUICK=1 bash bench/restore.sh    # smoke run: the small dataset only (~2.5 min + build)
#
# Must run as root (initdb and pg_ctl run as the `postgres` user through runuser; the
# file copy reads the cluster's data directory). All traffic goes to 127.0.0.1. The
# cluster and every file it makes live in one temp dir that is removed on exit; only
# that cluster is stopped. Exits 0 even when a target is missed (see the output);
# non-zero only when the benchmark itself could not run.
#
# Environment:
#   BENCH_QUICK=1             small dataset only (pgbench -s 3 + 60k messages)
#   BENCH_RUNS=N              timed runs per measurement (default 3; the median is reported)
#   BENCH_PROPOSAL_RUNS=N     runs of the proposal's gunzip | psql restore (default 3; ~7 s each)
#   BENCH_SWAP_RUNS=N         runs of `stablehand restore latest --yes` (default 3)
#   BENCH_RETRIES=N           a run disturbed by other work on the machine is discarded and
#                             run again, up to N times (default 2); every discard is reported
#   BENCH_IDLE_WAIT=S         before each run, wait up to S seconds (default 300) for the
#                             machine to be idle (3 s in a row under 10% busy); 0 = don't wait
#   BENCH_FIXTURE=PATH        the messages fixture (default /work/shared/fixtures/bench-messages.sql)
#   PGBIN=DIR                 PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
FIXTURE=${BENCH_FIXTURE:-/work/shared/fixtures/bench-messages.sql}
RUNS=${BENCH_RUNS:-3}
PROPOSAL_RUNS=${BENCH_PROPOSAL_RUNS:-3}
SWAP_RUNS=${BENCH_SWAP_RUNS:-3}
QUICK=${BENCH_QUICK:-0}
RETRIES=${BENCH_RETRIES:-2}
IDLE_WAIT=${BENCH_IDLE_WAIT:-300}
IDLE_MAX_PCT=10
# The fixture inserts this many messages; the small dataset keeps 10% of them.
FIXTURE_ROWS=600000
SMALL_ROWS=60000

# Targets.
MIN_PROPOSAL_VS_STABLEHAND=1.5 # proposal restore wall / stablehand restore --target-db wall
MAX_TARGET_VS_FLOOR=1.05       # stablehand restore --target-db wall / the pg_restore -jN floor
MAX_SWAP_MS=1000               # restore swap window (every run)
MAX_SNAPSHOT_VS_COPY=1.3       # snapshot time / plain file copy time (cp -r + sync)
MAX_SNAPSHOT_SWAP_MS=1000      # swap to snapshot window (every run)

# Helpers shared by the benchmarks (logging, ports, statistics, CPU accounting).
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- preflight
[[ $EUID -eq 0 ]] || die "run as root: initdb/pg_ctl are run as the postgres user through runuser"
for v in RUNS PROPOSAL_RUNS SWAP_RUNS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
[[ $RETRIES =~ ^[0-9]+$ ]] || die "BENCH_RETRIES must be a non-negative integer"
[[ $IDLE_WAIT =~ ^[0-9]+$ ]] || die "BENCH_IDLE_WAIT must be a non-negative integer (seconds)"
for t in initdb pg_ctl pg_dump pg_restore psql pgbench; do
  [[ -x $PGBIN/$t ]] || die "missing $PGBIN/$t (set PGBIN)"
done
[[ -x /usr/bin/time ]] || die "GNU time is required at /usr/bin/time (apt-get install time)"
for t in gzip zstd ss; do command -v "$t" >/dev/null || die "$t is required"; done
id postgres >/dev/null 2>&1 || die "there is no postgres user"
[[ -r $FIXTURE ]] || die "fixture not found: $FIXTURE (set BENCH_FIXTURE)"
[[ $(grep -c "generate_series(1, $FIXTURE_ROWS)" "$FIXTURE") == 1 ]] ||
  die "the fixture no longer has exactly one 'generate_series(1, $FIXTURE_ROWS)'; update this script"
# stablehand finds pg_dump/pg_restore/psql on PATH: make it the same PostgreSQL 15 as ours.
export PATH="$PGBIN:$PATH"

log "building the release binary and examples/snapshot_bench (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example snapshot_bench)
SH="$ROOT/target/release/stablehand"
SNAPBENCH="$ROOT/target/release/examples/snapshot_bench"
[[ -x $SH ]] || die "no binary at target/release/stablehand"
[[ -x $SNAPBENCH ]] || die "no binary at target/release/examples/snapshot_bench"
# What was measured: the binary is built from the working tree, which may hold edits.
BUILT_FROM="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n $(cd "$ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
  BUILT_FROM+=" + uncommitted changes in src/ or Cargo.*"
fi

# ---------------------------------------------------------------- cluster
bench_setup stablehand-restore-bench
q() { "${PSQL[@]}" -d postgres -Atc "$1"; } # one query on the maintenance database

# ---------------------------------------------------------------- helpers
json_num() { # KEY FILE: a top-level number from stablehand's / snapshot_bench's JSON
  grep -o "\"$1\": *[0-9.]*" "$2" | head -1 | grep -o '[0-9.]*$' || true
}
json_str() { # KEY FILE
  grep -o "\"$1\": *\"[^\"]*\"" "$2" | head -1 | sed 's/.*: *"\(.*\)"/\1/' || true
}

declare -A WALL CPU SRV OTHER JMS WALB
DB_BYTES=0
DB_ROWS=

# CPU accounting around each timed run (as in bench/backup.sh), read with shell builtins
# only (no forks inside the window): machine-wide busy ticks from /proc/stat, and the CPU
# of our PostgreSQL server (postmaster + its live children + the children it has
# reaped). "Other" CPU = machine busy - client tree - server: work by something else.
# Unlike the backup benchmark, these runs write hundreds of MB, so the kernel's
# writeback threads (kworker, jbd2: CPU spent flushing *our* writes) show up as "other"
# too. A scan of every process's CPU before and after the run separates them: kernel
# threads are reported apart, and a run counts as disturbed only when the CPU used by
# everything else (user-space processes that are not ours, and work that is not
# attributable to a process still alive at the end) is large.
CLK_TCK=$(getconf CLK_TCK)
exec {SLEEP_FD}<> <(:) # `read -t` on this never gets data: a sleep without a fork
settle_server() { # until only the postmaster's auxiliary processes are left (up to 2 s)
  local i
  for ((i = 0; i < 200; i++)); do
    pm_children
    ((PM_NKIDS > AUX_KIDS)) || return 0
    read -r -t 0.01 -u "$SLEEP_FD" _ || true
  done
}
# proc_scan SELF TREE: ticks of every process into SELF[pid] (utime+stime) and TREE[pid]
# (the same plus the CPU of the children it has reaped: a test runner's or cargo's
# short-lived children show up there); names and kernel-thread flags into PROC_COMM /
# PROC_KTHREAD / PROC_PPID. Builtins only.
declare -A PROC_COMM PROC_KTHREAD PROC_PPID
proc_scan() {
  local -n out=$1 tree=$2
  local f line pid rest comm
  local -a r
  out=()
  tree=()
  for f in /proc/[0-9]*/stat; do
    line=
    read -r line 2>/dev/null <"$f" || true
    [[ -n $line ]] || continue
    pid=${line%% *}
    rest=${line##*) }
    comm=${line#*(}
    comm=${comm%)*}
    read -r -a r <<<"$rest"
    ((${#r[@]} > 12)) || continue
    out[$pid]=$((r[11] + r[12]))
    tree[$pid]=$((r[11] + r[12] + r[13] + r[14]))
    PROC_COMM[$pid]=$comm
    PROC_PPID[$pid]=${r[1]}
    PROC_KTHREAD[$pid]=$(((r[6] & 0x00200000) != 0))
  done
}
declare -A PS0 PS1 PT0 PT1
begin_run() {
  settle_server
  proc_scan PS0 PT0
  cpu_snapshot
  B0=$SNAP_BUSY P0=$SNAP_PG T0=$EPOCHREALTIME
}
end_run() {
  T1=$EPOCHREALTIME
  settle_server
  cpu_snapshot
  B1=$SNAP_BUSY P1=$SNAP_PG
  proc_scan PS1 PT1
}
# After end_run: KTHREAD_TICKS (kernel threads) and FOREIGN_TOP (the user-space
# processes that are neither ours nor our cluster's and used the most CPU, themselves
# plus their reaped children, during the run: names for the "other" CPU).
attribute_other() {
  local pid d kt=0
  local -a top=()
  for pid in "${!PS1[@]}"; do
    if ((PROC_KTHREAD[$pid])); then
      d=$((PS1[$pid] - ${PS0[$pid]:-0}))
      ((d > 0)) && kt=$((kt + d))
      continue
    fi
    # Ours: this shell, our postmaster and its children (their CPU is "server").
    [[ $pid == "$$" || $pid == "$PM_PID" || ${PROC_PPID[$pid]} == "$PM_PID" ]] && continue
    d=$((PT1[$pid] - ${PT0[$pid]:-0}))
    ((d > 0)) && top+=("$d ${PROC_COMM[$pid]}")
  done
  KTHREAD_TICKS=$kt
  FOREIGN_TOP=
  ((${#top[@]})) || return 0
  FOREIGN_TOP=$(printf '%s\n' "${top[@]}" | sort -rn | head -3 |
    awk -v hz="$CLK_TCK" 'NF { printf "%s%s %.2f s", (NR > 1 ? ", " : ""), $2, $1 / hz }')
}

# A run's figures are held back (put) until the run is accepted (commit): measure()
# discards a disturbed run and runs it again, up to RETRIES times.
PENDING=()
put() { PENDING+=("$1" "$2" "$3"); } # ARRAY KEY VALUE
append() { local -n arr=$1; arr[$2]+="$3 "; }
commit() {
  local i
  for ((i = 0; i < ${#PENDING[@]}; i += 3)); do
    append "${PENDING[i]}" "${PENDING[i + 1]}" "${PENDING[i + 2]}"
  done
  PENDING=()
}

# record KEY TIMEFILE: one run's figures, from T0/T1/B0/B1/P0/P1 and TIMEFILE (GNU
# time's "%U %S": user/sys CPU of the timed process and the children it waited for).
record() {
  local key=$1 tf=$2 user sys wall client srv other kern unexplained
  read -r user sys <"$tf"
  attribute_other
  read -r wall client srv other kern unexplained < <(awk -v t0="$T0" -v t1="$T1" -v u="$user" -v s="$sys" \
    -v b="$((B1 - B0))" -v p="$((P1 - P0))" -v k="$KTHREAD_TICKS" -v hz="$CLK_TCK" 'BEGIN {
      c = u + s; o = (b - p) / hz - c; if (o < 0) o = 0
      kt = k / hz; x = o - kt; if (x < 0) x = 0
      printf "%.3f %.2f %.2f %.2f %.2f %.2f\n", t1 - t0, c, p / hz, o, kt, x }')
  put WALL "$key" "$wall"
  put CPU "$key" "$client"
  put SRV "$key" "$srv"
  put OTHER "$key" "$unexplained"
  log "  $key: ${wall} s, CPU client ${client} s, server ${srv} s, other ${other} s (kernel threads ${kern} s)"
  if awk -v o="$unexplained" -v w="$wall" 'BEGIN { exit !(o > 0.25 && o > 0.05 * w) }'; then
    RUN_DISTURBED=1
    RUN_NOTE="${unexplained} s of other CPU work (not kernel threads) during a ${wall} s run${FOREIGN_TOP:+; busiest other processes (with their exited children): $FOREIGN_TOP}"
    log "  warning: other work on the machine used ${unexplained} s of CPU during this run${FOREIGN_TOP:+ ($FOREIGN_TOP)}"
  fi
  return 0
}
DISTURBED=()
DISCARDED=()
IDLE_WAITED=0

# wait_idle: up to IDLE_WAIT seconds until the CPUs were under IDLE_MAX_PCT busy for 3
# one-second samples in a row (our cluster is idle between runs).
wait_idle() {
  ((IDLE_WAIT > 0)) || return 0
  local quiet=0 t0=$SECONDS busy said=0
  while ((quiet < 3)); do
    busy=$(cpu_busy_pct 1)
    if ((busy < IDLE_MAX_PCT)); then
      quiet=$((quiet + 1))
    else
      quiet=0
      ((said)) || log "  waiting for the machine to be idle (CPUs ${busy}% busy with other work)"
      said=1
    fi
    if ((SECONDS - t0 >= IDLE_WAIT)); then
      log "  the machine was not idle within ${IDLE_WAIT} s; measuring anyway"
      break
    fi
  done
  IDLE_WAITED=$((IDLE_WAITED + SECONDS - t0))
}

# measure LABEL FUNCTION ARGS...: one run, after waiting for an idle machine; a run
# disturbed by other work is discarded and run again (up to RETRIES times), and one
# still disturbed after that is kept and listed.
measure() {
  local label=$1 try
  shift
  for ((try = 0; ; try++)); do
    wait_idle
    PENDING=()
    RUN_DISTURBED=0
    RUN_NOTE=
    "$@"
    if ((RUN_DISTURBED && try < RETRIES)); then
      DISCARDED+=("$label, attempt $((try + 1)): $RUN_NOTE")
      log "  discarded (disturbed); running it again"
      PENDING=()
      continue
    fi
    ((RUN_DISTURBED)) && DISTURBED+=("$label: $RUN_NOTE (kept: $RETRIES retries used up)")
    commit
    return 0
  done
}
TF="$WORK/time.out"
TIMEFMT='%U %S'

# Other work on the machine skews every figure. While this script is idle, measure how
# busy the CPUs are anyway (2 s sample of /proc/stat) and report it with the results.
LOADS=()

# Between timed runs: no dirty data left from the previous one (a checkpoint writes the
# server's dirty buffers, sync the page cache's), so no run pays for its predecessor.
quiesce() {
  q "checkpoint" >/dev/null
  sync
}
drop_db() { # DB (without the NOTICE when it does not exist)
  "${PSQL[@]}" -d postgres -c "set client_min_messages = warning" -c "drop database if exists \"$1\" with (force)" >/dev/null
}
wal_lsn() { q "select pg_current_wal_lsn()"; }
wal_bytes_since() { q "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$1')::bigint"; }

# ---------------------------------------------------------------- dataset
# make_dataset DB SCALE ROWS: pgbench -i -s SCALE, then the messages fixture with its
# generate_series bound set to ROWS (the fixture itself when ROWS = FIXTURE_ROWS).
make_dataset() {
  local db=$1 t0=$EPOCHREALTIME
  load_dataset "$@"
  DB_BYTES=$(db_bytes "$db")
  DB_ROWS=$(row_counts "$db")
  log "dataset $db: $(mb "$DB_BYTES") MB in $(secs_since "$t0") s"
}
CHECKS=()
declare -A CHECKED
check_rows() { # DB WHAT: the database holds the dataset's row counts (once per WHAT)
  local got
  [[ -z ${CHECKED[$2]:-} ]] || return 0
  CHECKED[$2]=1
  got=$(row_counts "$1")
  if [[ $got == "$DB_ROWS" ]]; then
    CHECKS+=("$2: row counts match the dataset (pgbench_accounts, messages: $got)")
  else
    CHECKS+=("$2: ROW COUNTS DIFFER: $got, expected $DB_ROWS")
    log "warning: $2: row counts $got, expected $DB_ROWS"
  fi
}

# ---------------------------------------------------------------- measurements
PROPOSAL_DUMP="$WORK/proposal.sql.gz"
APP="$WORK/app"
sh_env() { env DATABASE_URL="postgresql://postgres@127.0.0.1:$PORT/$DB" "$@"; }

run_proposal() { # RUN: create an empty database, gunzip -c | psql into it
  local target=proposal_restore
  drop_db "$target"
  quiesce
  begin_run
  /usr/bin/time -f "$TIMEFMT" -o "$TF" bash -c '
    set -euo pipefail
    dump=$1 target=$2; shift 2
    "$@" -d postgres -c "create database $target"
    gunzip -c "$dump" | "$@" -d "$target" >/dev/null' _ "$PROPOSAL_DUMP" "$target" "${PSQL[@]}" ||
    die "the proposal restore failed"
  end_run
  record proposal "$TF"
  (($1 == 1)) && check_rows "$target" "proposal restore (gunzip | psql)"
  drop_db "$target"
}

run_floor() { # RUN: pg_restore -j2 from the decompressed dump, stablehand's settings
  local target=floor_restore jobs
  jobs=$(nproc)
  drop_db "$target"
  quiesce
  begin_run
  /usr/bin/time -f "$TIMEFMT" -o "$TF" bash -c '
    set -euo pipefail
    dump=$1 target=$2 jobs=$3; shift 3
    "$@" -d postgres -c "create database $target template template0"
    PGOPTIONS="-c maintenance_work_mem=256MB -c synchronous_commit=off" \
      pg_restore --exit-on-error --jobs="$jobs" -h 127.0.0.1 -p '"$PORT"' -U postgres \
      -d "$target" "$dump"' _ "$WORK/plain.dump" "$target" "$jobs" "${PSQL[@]}" ||
    die "pg_restore (reference) failed"
  end_run
  record floor "$TF"
  drop_db "$target"
}

run_zstd() { # zstd -dc of stablehand's backup file to /dev/null (one decompression)
  quiesce
  begin_run
  /usr/bin/time -f "$TIMEFMT" -o "$TF" zstd -q -dc "$BACKUP_FILE" -o /dev/null ||
    die "zstd -dc failed"
  end_run
  record zstd "$TF"
}

run_target() { # RUN: stablehand --json restore latest --target-db sh_restore
  local target=sh_restore out="$WORK/target-$1.json" rc=0
  drop_db "$target"
  quiesce
  begin_run
  (cd "$APP" && sh_env /usr/bin/time -f "$TIMEFMT" -o "$TF" \
    "$SH" --json restore latest --target-db "$target" >"$out" 2>>"$WORK/stablehand.err") || rc=$?
  end_run
  ((rc == 0)) || { cat "$out" "$WORK/stablehand.err" >&2; die "stablehand restore --target-db failed (exit $rc)"; }
  record target "$TF"
  put JMS target_restore "$(json_num restore_ms "$out")"
  put JMS target_total "$(json_num total_ms "$out")"
  log "    restore_ms $(json_num restore_ms "$out"), total_ms $(json_num total_ms "$out")"
  (($1 == 1)) && check_rows "$target" "stablehand restore --target-db"
  drop_db "$target"
}

run_swap() { # RUN: stablehand --json restore latest --yes, then drop the kept database
  local out="$WORK/swap-$1.json" rc=0 kept
  quiesce
  begin_run
  (cd "$APP" && sh_env /usr/bin/time -f "$TIMEFMT" -o "$TF" \
    "$SH" --json restore latest --yes >"$out" 2>>"$WORK/stablehand.err") || rc=$?
  end_run
  ((rc == 0)) || { cat "$out" "$WORK/stablehand.err" >&2; die "stablehand restore --yes failed (exit $rc)"; }
  record swap "$TF"
  put JMS swap_restore "$(json_num restore_ms "$out")"
  put JMS swap_total "$(json_num total_ms "$out")"
  put JMS swap_ms "$(json_num swap_ms "$out")"
  kept=$(json_str kept_as "$out")
  log "    swap_ms $(json_num swap_ms "$out"), restore_ms $(json_num restore_ms "$out"), total_ms $(json_num total_ms "$out"); kept $kept"
  [[ -n $kept ]] || die "stablehand restore --yes reported no kept database"
  (cd "$APP" && sh_env "$SH" -q db drop-kept "$kept" --yes >/dev/null 2>>"$WORK/stablehand.err") ||
    die "stablehand db drop-kept $kept failed"
  (($1 == SWAP_RUNS)) && check_rows "$DB" "live database after $SWAP_RUNS restore swap(s)"
  return 0
}

db_dir() { # DB: its directory under the data directory
  echo "$PGDIR/data/base/$(q "select oid from pg_database where datname = '$1'")"
}

run_copy() { # cp -r base/<oid> (timed), then sync (timed separately, same run)
  local src copy="$WORK/copy" tmid
  src=$(db_dir "$DB")
  rm -rf "$copy"
  quiesce
  begin_run
  /usr/bin/time -f "$TIMEFMT" -o "$TF" bash -c 'cp -r "$1" "$2"; printf "%s\n" "$EPOCHREALTIME" >"$3"; sync' \
    _ "$src" "$copy" "$WORK/tmid" || die "cp -r failed"
  end_run
  tmid=$(cat "$WORK/tmid")
  record copy_sync "$TF"
  put WALL copy "$(awk -v a="$T0" -v b="$tmid" 'BEGIN { printf "%.3f", b - a }')"
  COPY_BYTES=$(du -sb "$copy" | cut -f1)
  COPY_FILES=$(find "$copy" -type f | wc -l)
  rm -rf "$copy"
}

run_create() { # KEY STRATEGY_CLAUSE: CREATE DATABASE ... TEMPLATE through psql, then drop
  local key=$1 clause=$2 lsn
  drop_db snap_ref
  quiesce
  lsn=$(wal_lsn)
  begin_run
  /usr/bin/time -f "$TIMEFMT" -o "$TF" "${PSQL[@]}" -d postgres -c "create database snap_ref template \"$DB\"$clause" ||
    die "create database ($key) failed"
  end_run
  put WALB "$key" "$(wal_bytes_since "$lsn")"
  record "$key" "$TF"
  drop_db snap_ref
}

run_snapshot() { # RUN: examples/snapshot_bench: snapshot(), swap_to_snapshot(), drop the old one
  local out="$WORK/snap-$1.json" rc=0 lsn
  quiesce
  lsn=$(wal_lsn)
  begin_run
  (cd "$WORK" && sh_env /usr/bin/time -f "$TIMEFMT" -o "$TF" "$SNAPBENCH" "bench$1" >"$out" 2>>"$WORK/snapshot.err") || rc=$?
  end_run
  ((rc == 0)) || { cat "$out" "$WORK/snapshot.err" >&2; die "snapshot_bench failed (exit $rc)"; }
  put WALB snapshot_run "$(wal_bytes_since "$lsn")"
  record snapshot_run "$TF"
  put JMS snapshot_ms "$(json_num snapshot_ms "$out")"
  put JMS snap_swap_ms "$(json_num swap_ms "$out")"
  put JMS snap_drop_ms "$(json_num drop_ms "$out")"
  log "    $(cat "$out")"
  (($1 == RUNS)) && check_rows "$DB" "live database after $RUNS swap(s) to a snapshot"
  return 0
}

# ---------------------------------------------------------------- run
if [[ $QUICK == 1 ]]; then
  DB=bench_small
  make_dataset "$DB" 3 "$SMALL_ROWS"
else
  DB=bench_large
  make_dataset "$DB" 30 "$FIXTURE_ROWS"
fi

log "the proposal's backup, made once (untimed for the result): pg_dump | gzip -9"
t0=$EPOCHREALTIME
bash -c 'set -o pipefail; out=$1; shift; "$@" | gzip -9 >"$out"' _ "$PROPOSAL_DUMP" "${PGDUMP[@]}" "$DB"
PROPOSAL_DUMP_S=$(secs_since "$t0")
PROPOSAL_DUMP_BYTES=$(stat -c %s "$PROPOSAL_DUMP")
log "  $(mb "$PROPOSAL_DUMP_BYTES") MB in $PROPOSAL_DUMP_S s"

log "stablehand's backup, made once: stablehand -q backup"
mkdir -p "$APP"
printf '[database]\nmode = "direct"\n' >"$APP/stablehand.toml"
t0=$EPOCHREALTIME
(cd "$APP" && sh_env "$SH" -q backup >/dev/null) || die "stablehand backup failed"
STABLEHAND_BACKUP_S=$(secs_since "$t0")
shopt -s nullglob
files=("$APP"/backups/database/*.dump.zst)
shopt -u nullglob
((${#files[@]} == 1)) || die "expected one backups/database/*.dump.zst in the app dir, found ${#files[@]}"
BACKUP_FILE=${files[0]}
BACKUP_BYTES=$(stat -c %s "$BACKUP_FILE")
log "  $(mb "$BACKUP_BYTES") MB in $STABLEHAND_BACKUP_S s"
zstd -q -dc "$BACKUP_FILE" >"$WORK/plain.dump"
PLAIN_DUMP_BYTES=$(stat -c %s "$WORK/plain.dump")

note_load "before the restores"
for ((i = 1; i <= RUNS || i <= PROPOSAL_RUNS; i++)); do
  log "restore round $i"
  if ((i <= PROPOSAL_RUNS)); then measure "proposal run $i" run_proposal "$i"; fi
  if ((i <= RUNS)); then
    measure "target run $i" run_target "$i"
    measure "floor run $i" run_floor "$i"
    measure "zstd run $i" run_zstd
  fi
done
rm -f "$WORK/plain.dump"

note_load "before the snapshots"
DB_DIR_BYTES=$(du -sb "$(db_dir "$DB")" | cut -f1)
for ((i = 1; i <= RUNS; i++)); do
  log "snapshot round $i"
  measure "copy run $i" run_copy
  measure "wal_log run $i" run_create wal_log ""
  measure "file_copy run $i" run_create file_copy " strategy file_copy"
  measure "snapshot run $i" run_snapshot "$i"
done

note_load "before the restore swaps"
for ((i = 1; i <= SWAP_RUNS; i++)); do
  log "restore swap $i/$SWAP_RUNS"
  measure "swap run $i" run_swap "$i"
done
note_load "after timing"
LEFT=$(q "select coalesce(string_agg(datname, ', '), '') from pg_database where datname not in ('postgres', 'template0', 'template1', '$DB')")
[[ -z $LEFT ]] || CHECKS+=("databases left over at the end: $LEFT")

# ---------------------------------------------------------------- report
m() { # ARRAY KEY: median of the runs
  local -n arr=$1
  [[ -n ${arr[$2]:-} ]] || { echo ""; return 0; }
  # shellcheck disable=SC2086
  median ${arr[$2]}
}
range() { # ARRAY KEY: "min-max" of the runs
  local -n arr=$1
  # shellcheck disable=SC2086
  printf '%s\n' ${arr[$2]:-} | sort -g | awk -v d="${3:-2}" 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.*f-%.*f", d, lo, d, hi }'
}
fmt() { awk -v x="$1" -v d="${2:-2}" 'BEGIN { printf "%.*f", d, x }'; } # NUMBER [DECIMALS], rounded as range() does
ms2s() { awk -v x="$1" 'BEGIN { printf "%.3f", x / 1000 }'; }

# Per-run JSON figures (ms) as seconds, for the table.
declare -A JS
for k in "${!JMS[@]}"; do
  for v in ${JMS[$k]}; do JS[$k]+="$(ms2s "$v") "; done
done

echo
echo "## stablehand restore and snapshot benchmark"
echo
echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
echo "- $(psql --version), $(gzip --version | head -1), $("$SH" --version) (built from $BUILT_FROM)"
read -r acc msgs <<<"$DB_ROWS"
echo "- dataset $DB: $(mb "$DB_BYTES") MB (pg_database_size; its directory base/<oid>: $(mb "$DB_DIR_BYTES") MB), $acc pgbench_accounts rows, $msgs messages rows"
echo "- the proposal's backup (pg_dump | gzip -9, made once): $(mb "$PROPOSAL_DUMP_BYTES") MB in $PROPOSAL_DUMP_S s; stablehand's backup (stablehand -q backup, made once): $(mb "$BACKUP_BYTES") MB ($(mb "$PLAIN_DUMP_BYTES") MB decompressed) in $STABLEHAND_BACKUP_S s"
echo "- runs: $PROPOSAL_RUNS of the proposal's restore, $RUNS of every other measurement, $SWAP_RUNS restore swaps; medians reported"
echo "- the file copy: $COPY_FILES files, $(mb "$COPY_BYTES") MB"
echo
echo "| measurement | wall s (median) | wall s (min-max) | runs | client CPU s | server CPU s | other CPU s (max) | WAL MB (median) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
row() { # KEY LABEL
  local key=$1 wal=
  [[ -n ${WALB[$key]:-} ]] && wal=$(mb "$(m WALB "$key")")
  if [[ -n ${CPU[$key]:-} ]]; then
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$(fmt "$(m WALL "$key")")" "$(range WALL "$key")" \
      "$(nruns WALL "$key")" "$(fmt "$(m CPU "$key")")" "$(fmt "$(m SRV "$key")")" "$(fmt "$(maxof OTHER "$key")")" "$wal"
  else
    printf '| %s | %s | %s | %s |  |  |  | %s |\n' "$2" "$(fmt "$(m WALL "$key")")" "$(range WALL "$key")" "$(nruns WALL "$key")" "$wal"
  fi
}
jrow() { # KEY LABEL: a figure stablehand / snapshot_bench reported itself (ms, as s)
  printf '| %s | %s | %s | %s |  |  |  |  |\n' "$2" "$(fmt "$(m JS "$1")" 3)" "$(range JS "$1" 3)" "$(nruns JS "$1")"
}
echo "| **Restore** | | | | | | | |"
row proposal "proposal: create database + gunzip -c x.sql.gz \| psql (whole pipeline)"
row target "stablehand --json restore latest --target-db NEW (whole command)"
jrow target_total "  of which total_ms (stablehand's own clock, JSON)"
jrow target_restore "  of which restore_ms (create db, pg_restore -j$(nproc), row counts)"
row floor "reference: create database + pg_restore -j$(nproc) from the decompressed dump (stablehand's settings)"
row zstd "reference: zstd -dc of the backup file > /dev/null (one decompression)"
echo "| **Restore with swap** | | | | | | | |"
row swap "stablehand --json restore latest --yes (whole command)"
jrow swap_total "  of which total_ms"
jrow swap_restore "  of which restore_ms"
jrow swap_ms "  of which swap_ms (live database unavailable)"
echo "| **Snapshot** | | | | | | | |"
row copy "cp -r base/<oid> (no sync)"
row copy_sync "cp -r base/<oid> + sync"
row wal_log "psql: CREATE DATABASE ... TEMPLATE db (PG15 default: STRATEGY WAL_LOG)"
row file_copy "psql: CREATE DATABASE ... TEMPLATE db STRATEGY FILE_COPY"
row snapshot_run "snapshot_bench (whole process: snapshot + swap + drop of the old db)"
jrow snapshot_ms "  of which snapshot() (stablehand's snapshot: FILE_COPY on PG15+)"
jrow snap_swap_ms "  of which swap_to_snapshot() swap window"
jrow snap_drop_ms "  of which drop_side_database() of the replaced db"
echo
echo "Wall time and CPU are medians over the runs. Client CPU = user+sys of the timed process"
echo "tree; server CPU = our PostgreSQL server (backends and auxiliary processes); other CPU ="
echo "machine-wide busy time during the run belonging to neither, minus kernel threads (the"
echo "kernel's writeback of our own writes): other work on the machine, should be near 0."
echo "Every run starts after a CHECKPOINT and a sync, with the data in the page cache."
echo

echo "### Ratios and targets"
echo
judged=""
[[ $QUICK == 1 ]] && judged=" (smoke run on the small dataset: the targets are meant for the 712 MB one)"
echo "| ratio | value | target | result |"
echo "| --- | ---: | --- | --- |"
pw=$(m WALL proposal) tw=$(m WALL target)
r=$(ratio "$pw" "$tw")
echo "| proposal restore / stablehand restore --target-db, wall time | $r | >= $MIN_PROPOSAL_VS_STABLEHAND | $(verdict ge "$r" "$MIN_PROPOSAL_VS_STABLEHAND")$judged |"
fw=$(m WALL floor)
r=$(awk -v a="$tw" -v b="$fw" 'BEGIN { if (b == 0) print "nan"; else printf "%.3f", a / b }')
echo "| stablehand restore --target-db / pg_restore -j$(nproc) floor ($tw s / $fw s), wall time | $r | <= $MAX_TARGET_VS_FLOOR | $(verdict le "$r" "$MAX_TARGET_VS_FLOOR")$judged |"
sw_max=$(maxof JMS swap_ms)
echo "| restore swap window, max of $SWAP_RUNS runs (median $(m JMS swap_ms)) | ${sw_max} ms | < $MAX_SWAP_MS ms | $(verdict lt "$sw_max" "$MAX_SWAP_MS")$judged |"
snap=$(m JS snapshot_ms) cs=$(m WALL copy_sync) c=$(m WALL copy)
r=$(ratio "$snap" "$cs")
echo "| snapshot() / (cp -r + sync) | $r | <= $MAX_SNAPSHOT_VS_COPY | $(verdict le "$r" "$MAX_SNAPSHOT_VS_COPY")$judged |"
ss_max=$(maxof JMS snap_swap_ms)
echo "| swap to snapshot window, max of $RUNS runs (median $(m JMS snap_swap_ms)) | ${ss_max} ms | < $MAX_SNAPSHOT_SWAP_MS ms | $(verdict lt "$ss_max" "$MAX_SNAPSHOT_SWAP_MS")$judged |"
r_nosync=$(ratio "$snap" "$c")
echo "| snapshot() / cp -r without sync (for reference) | $r_nosync | (<= $MAX_SNAPSHOT_VS_COPY) | info: $(verdict le "$r_nosync" "$MAX_SNAPSHOT_VS_COPY") |"
r_wal=$(ratio "$(m WALL wal_log)" "$cs")
echo "| psql CREATE DATABASE, default WAL_LOG / (cp -r + sync) | $r_wal | (<= $MAX_SNAPSHOT_VS_COPY) | info: $(verdict le "$r_wal" "$MAX_SNAPSHOT_VS_COPY") |"
r_fc=$(ratio "$(m WALL file_copy)" "$cs")
echo "| psql CREATE DATABASE, STRATEGY FILE_COPY / (cp -r + sync) | $r_fc | (<= $MAX_SNAPSHOT_VS_COPY) | info: $(verdict le "$r_fc" "$MAX_SNAPSHOT_VS_COPY") |"
echo
echo "The snapshot target is judged against cp -r followed by sync: CREATE DATABASE leaves a"
echo "durable copy (WAL_LOG writes every page to the WAL and flushes it at commit; FILE_COPY"
echo "fsyncs the copied files), and cp alone only fills the page cache."
if ! le "$r" "$MAX_SNAPSHOT_VS_COPY" && le "$r_fc" "$MAX_SNAPSHOT_VS_COPY"; then
  echo
  echo "**Note:** stablehand's snapshot (PostgreSQL 15's default strategy, WAL_LOG) misses the"
  echo "${MAX_SNAPSHOT_VS_COPY}x target, but CREATE DATABASE ... STRATEGY FILE_COPY meets it ($r_fc x)."
fi
echo
for v in "${CHECKS[@]}"; do echo "- $v"; done
echo
echo "Before each run the script waited for an idle machine (3 s in a row under ${IDLE_MAX_PCT}% busy;"
echo "${IDLE_WAITED} s of waiting in all). A run counts as disturbed when other work used more than"
echo "0.25 s and 5% of its wall time in CPU; it is then discarded and run again (up to $RETRIES times)."
echo
if ((${#DISCARDED[@]})); then
  echo "Discarded runs (disturbed, run again; not in the figures):"
  echo
  for v in "${DISCARDED[@]}"; do echo "- $v"; done
else
  echo "No run was discarded."
fi
echo
if ((${#DISTURBED[@]})); then
  echo "Runs in the figures that were disturbed by other work on the machine (re-run on a quiet machine for clean figures):"
  echo
  for v in "${DISTURBED[@]}"; do echo "- $v"; done
else
  echo "No run in the figures was disturbed by other work on the machine."
fi
echo
echo "Other work on the machine, sampled for 2 s while the benchmark was idle (should be ~0%):"
echo
for v in "${LOADS[@]}"; do echo "- $v"; done
echo
