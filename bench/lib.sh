# Shell helpers shared by bench/backup.sh and bench/restore.sh (sourced, not run).
# Functions only: they read the calling script's globals (PM_PID, AUX_KIDS, ...) when
# called.
# shellcheck shell=bash

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

die() { log "error: $*"; exit 1; }

free_port() {
  local used p _
  used=$(ss -Htan | awk '{n = split($4, a, ":"); print a[n]}' | sort -u)
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    grep -qx "$p" <<<"$used" || { echo "$p"; return 0; }
  done
  die "found no free port"
}

pm_children() { # sets PM_KIDS (the postmaster's child pids, as one string) and PM_NKIDS
  local -a kids=()
  read -r -a kids <"/proc/$PM_PID/task/$PM_PID/children" || true
  PM_KIDS="${kids[*]}"
  PM_NKIDS=${#kids[@]}
}

cpu_snapshot() { # sets SNAP_BUSY SNAP_PG (ticks)
  local -a f s
  local c before try
  for ((try = 0; try < 5; try++)); do
    pm_children
    before=$PM_KIDS
    read -r -a f </proc/stat
    SNAP_BUSY=$((f[1] + f[2] + f[3] + f[6] + f[7]))
    read -r -a s <"/proc/$PM_PID/stat"
    SNAP_PG=$((s[13] + s[14] + s[15] + s[16]))
    for c in $before; do
      s=()
      read -r -a s 2>/dev/null <"/proc/$c/stat" || true
      ((${#s[@]} > 14)) && SNAP_PG=$((SNAP_PG + s[13] + s[14]))
    done
    pm_children
    [[ $PM_KIDS == "$before" ]] && return 0 # no child came or went while reading
  done
  return 0
}

cpu_busy_pct() { # [SECONDS]: how busy the CPUs are over that long (default 2)
  local a b
  a=$(head -1 /proc/stat)
  sleep "${1:-2}"
  b=$(head -1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x, " "); split(b, y, " "); t = 0
    for (i = 2; i <= n; i++) t += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])
    printf "%.0f", (t > 0 ? 100 * (t - idle) / t : 0) }'
}

note_load() {
  local busy
  busy=$(cpu_busy_pct)
  LOADS+=("$1: CPUs ${busy}% busy with other work (load average $(cut -d' ' -f1-3 /proc/loadavg))")
  ((busy < 10)) || log "warning: the CPUs are ${busy}% busy with other work; figures will be skewed"
}

nruns() { local -n arr=$1; set -- ${arr[$2]:-}; echo $#; }

maxof() { local -n arr=$1; printf '%s\n' ${arr[$2]:-0} | sort -g | tail -1; }

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

secs_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.2f", a / b }'; }

le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

verdict() { if "$@"; then echo PASS; else echo FAIL; fi; }

# Starts the throwaway PostgreSQL 15 cluster in $PGDIR on a free port (127.0.0.1 only,
# socket in $PGDIR). Sets PORT, CLUSTER_UP (for the caller's cleanup), PM_PID and
# AUX_KIDS (the postmaster's long-lived auxiliary processes).
start_cluster() {
  PORT=$(free_port)
  [[ -n $PORT ]] || die "found no free port"

  log "initdb + start PostgreSQL 15 on 127.0.0.1:$PORT (socket dir in the temp dir)"
  runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
  CLUSTER_UP=1
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 \
    -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null ||
    { cat "$PGDIR/server.log" >&2; die "pg_ctl start failed"; }

  PM_PID=$(head -1 "$PGDIR/data/postmaster.pid")
  [[ -r /proc/$PM_PID/stat ]] || die "cannot read the postmaster's /proc entry (pid $PM_PID)"
  # Its long-lived auxiliary processes (checkpointer, walwriter, ...): the fewest children
  # seen over a second of idling.
  sleep 1
  AUX_KIDS=99
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    n=$(wc -w <"/proc/$PM_PID/task/$PM_PID/children")
    ((n < AUX_KIDS)) && AUX_KIDS=$n
    sleep 0.1
  done
}

# bench_setup NAME: a work directory ($WORK, $PGDIR), traps that stop the cluster and
# remove $WORK on any exit (after bench_cleanup_hook, if the script defines one), the
# cluster started, and CONN/PSQL/PGDUMP for it.
bench_setup() {
  WORK=$(mktemp -d -t "$1.XXXXXX")
  chmod 755 "$WORK"
  PGDIR="$WORK/pg"
  mkdir "$PGDIR"
  chown postgres:postgres "$PGDIR"
  CLUSTER_UP=0
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  cd "$WORK"
  start_cluster
  CONN=(-h 127.0.0.1 -p "$PORT" -U postgres)
  PSQL=(psql -X -q -v ON_ERROR_STOP=1 "${CONN[@]}")
  PGDUMP=(pg_dump --no-owner --no-acl "${CONN[@]}")
}

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if declare -F bench_cleanup_hook >/dev/null; then bench_cleanup_hook; fi
  if [[ $CLUSTER_UP == 1 ]]; then
    # Only the cluster this script started: addressed by its own data directory.
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  cd /
  rm -rf "$WORK"
  exit "$rc"
}

# load_dataset DB SCALE ROWS: pgbench -i -s SCALE, then the messages fixture ($FIXTURE)
# with its generate_series bound ($FIXTURE_ROWS) set to ROWS; vacuumed, analyzed and
# checkpointed so timings start from settled data.
load_dataset() {
  local db=$1 scale=$2 rows=$3
  log "dataset $db: pgbench -i -s $scale + $rows messages"
  "${PSQL[@]}" -d postgres -c "create database $db"
  pgbench -i -q -s "$scale" "${CONN[@]}" "$db" >"$WORK/pgbench-$db.log" 2>&1 ||
    { cat "$WORK/pgbench-$db.log" >&2; die "pgbench -i failed"; }
  sed "s/generate_series(1, $FIXTURE_ROWS)/generate_series(1, $rows)/" "$FIXTURE" >"$WORK/messages-$db.sql"
  "${PSQL[@]}" -d "$db" -f "$WORK/messages-$db.sql"
  # Settle the data before timing: hint bits set, statistics, no checkpoint pending.
  "${PSQL[@]}" -d "$db" -c "vacuum analyze" -c "checkpoint"
}

db_bytes() { "${PSQL[@]}" -d "$1" -Atc "select pg_database_size(current_database())"; }

row_counts() { # DB: "accounts messages"
  "${PSQL[@]}" -d "$1" -Atc \
    "select (select count(*) from pgbench_accounts) || ' ' || (select count(*) from messages)"
}
