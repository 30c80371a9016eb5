#!/usr/bin/env bash
# Backup benchmark: `stablehand backup` against plain `pg_dump` (the floor) and
# `pg_dump | gzip -9` (the proposal's backup), side by side in one run, on a throwaway
# PostgreSQL 15 cluster. Prints a table, the ratios and PASS/FAIL per target.
#
#   bash bench/backup.sh                  # full run: small and large dataset (~5 min)
#   BENCH_QUICK=1 bash bench/backup.sh    # smoke run: small dataset only (~1 min)
#
# Must run as root (initdb and pg_ctl run as the `postgres` user through runuser).
# All traffic goes to 127.0.0.1. The cluster and every file it makes live in one temp
# dir that is removed on exit. Exits 0 even when a target is missed (see the output);
# non-zero only when the benchmark itself could not run.
#
# Environment:
#   BENCH_QUICK=1            skip the large dataset
#   BENCH_RUNS=N             timed runs per measurement (default 3; the median is reported)
#   BENCH_LARGE_GZIP_RUNS=N  runs of `pg_dump | gzip -9` on the large dataset (default 1:
#                            it takes ~22 s per run)
#   BENCH_FIXTURE=PATH       the messages fixture (default /work/shared/fixtures/bench-messages.sql)
#   PGBIN=DIR                PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
FIXTURE=${BENCH_FIXTURE:-/work/shared/fixtures/bench-messages.sql}
RUNS=${BENCH_RUNS:-3}
LARGE_GZIP_RUNS=${BENCH_LARGE_GZIP_RUNS:-1}
QUICK=${BENCH_QUICK:-0}
# The fixture inserts this many messages; the small dataset keeps 10% of them.
FIXTURE_ROWS=600000
SMALL_ROWS=60000

# Targets.
MAX_WALL_VS_PGDUMP=1.2     # stablehand wall / pg_dump wall
MIN_GZIP_VS_STABLEHAND=5   # gzip -9 pipeline wall / stablehand wall
MAX_SIZE_VS_GZIP=1.0       # stablehand file size / gzip -9 file size
MAX_RSS_MB=100             # stablehand peak RSS
RSS_SAME_PCT=25            # large vs small peak RSS: "about the same" = within 25% (or 10 MB)
RSS_SAME_MB=10

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- preflight
[[ $EUID -eq 0 ]] || die "run as root: initdb/pg_ctl are run as the postgres user through runuser"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $LARGE_GZIP_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_LARGE_GZIP_RUNS must be a positive integer"
for t in initdb pg_ctl pg_dump pg_restore psql pgbench; do
  [[ -x $PGBIN/$t ]] || die "missing $PGBIN/$t (set PGBIN)"
done
[[ -x /usr/bin/time ]] || die "GNU time is required at /usr/bin/time (apt-get install time)"
command -v gzip >/dev/null || die "gzip is required"
command -v ss >/dev/null || die "ss (iproute2) is required to pick a free port"
id postgres >/dev/null 2>&1 || die "there is no postgres user"
[[ -r $FIXTURE ]] || die "fixture not found: $FIXTURE (set BENCH_FIXTURE)"
[[ $(grep -c "generate_series(1, $FIXTURE_ROWS)" "$FIXTURE") == 1 ]] ||
  die "the fixture no longer has exactly one 'generate_series(1, $FIXTURE_ROWS)'; update this script"
# stablehand finds pg_dump/pg_restore on PATH: make it the same PostgreSQL 15 as ours.
export PATH="$PGBIN:$PATH"

log "building the release binary (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet)
SH="$ROOT/target/release/stablehand"
[[ -x $SH ]] || die "no binary at target/release/stablehand"

# ---------------------------------------------------------------- cluster
WORK=$(mktemp -d -t stablehand-bench.XXXXXX)
chmod 755 "$WORK"
PGDIR="$WORK/pg"
mkdir "$PGDIR"
chown postgres:postgres "$PGDIR"
CLUSTER_UP=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ $CLUSTER_UP == 1 ]]; then
    # Only the cluster this script started: addressed by its own data directory.
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  cd /
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$WORK"

free_port() {
  local used p _
  used=$(ss -Htan | awk '{n = split($4, a, ":"); print a[n]}' | sort -u)
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    grep -qx "$p" <<<"$used" || { echo "$p"; return 0; }
  done
  die "found no free port"
}
PORT=$(free_port)

log "initdb + start PostgreSQL 15 on 127.0.0.1:$PORT (socket dir in the temp dir)"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust >"$WORK/initdb.log" 2>&1 ||
  { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
CLUSTER_UP=1
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 \
  -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null ||
  { cat "$PGDIR/server.log" >&2; die "pg_ctl start failed"; }

CONN=(-h 127.0.0.1 -p "$PORT" -U postgres)
PSQL=(psql -X -q -v ON_ERROR_STOP=1 "${CONN[@]}")
PGDUMP=(pg_dump --no-owner --no-acl "${CONN[@]}")

# ---------------------------------------------------------------- datasets
# make_dataset DB SCALE ROWS: pgbench -i -s SCALE, then the messages fixture with its
# generate_series bound set to ROWS (the fixture itself when ROWS = FIXTURE_ROWS).
make_dataset() {
  local db=$1 scale=$2 rows=$3 t0=$EPOCHREALTIME
  log "dataset $db: pgbench -i -s $scale + $rows messages"
  "${PSQL[@]}" -d postgres -c "create database $db"
  pgbench -i -q -s "$scale" "${CONN[@]}" "$db" >"$WORK/pgbench-$db.log" 2>&1 ||
    { cat "$WORK/pgbench-$db.log" >&2; die "pgbench -i failed"; }
  sed "s/generate_series(1, $FIXTURE_ROWS)/generate_series(1, $rows)/" "$FIXTURE" >"$WORK/messages-$db.sql"
  "${PSQL[@]}" -d "$db" -f "$WORK/messages-$db.sql"
  # Settle the data before timing: hint bits set, statistics, no checkpoint pending.
  "${PSQL[@]}" -d "$db" -c "vacuum analyze" -c "checkpoint"
  DB_BYTES[$db]=$("${PSQL[@]}" -d "$db" -Atc "select pg_database_size(current_database())")
  DB_ROWS[$db]=$("${PSQL[@]}" -d "$db" -Atc \
    "select (select count(*) from pgbench_accounts) || ' ' || (select count(*) from messages)")
  log "dataset $db: $(mb "${DB_BYTES[$db]}") MB in $(secs_since "$t0") s"
}

# ---------------------------------------------------------------- helpers
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
kb2mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
secs_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.2f", a / b }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
verdict() { if "$@"; then echo PASS; else echo FAIL; fi; }

declare -A DB_BYTES DB_ROWS WALL RSS OWN CPU SIZE DUMPBYTES
# record KEY WALL_S TIMEFILE [SIZE_BYTES] [OWN_RSS_KB]: append one run's figures.
# TIMEFILE holds GNU time's "%M %U %S": peak RSS (KB, process tree: see below) and CPU.
record() {
  local key=$1 wall=$2 tf=$3 size=${4:-} own=${5:-} rss user sys
  read -r rss user sys <"$tf"
  WALL[$key]+="$wall "
  RSS[$key]+="$rss "
  CPU[$key]+="$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }') "
  [[ -n $size ]] && SIZE[$key]+="$size "
  [[ -n $own ]] && OWN[$key]+="$own "
  return 0
}

# GNU time's %M is the peak RSS of the process *or any child it waited for* (Linux
# folds reaped children's maxrss into the rusage wait4 reports), so for stablehand it is
# max(stablehand, pg_dump, pg_restore). To get stablehand's own peak, a sampler reads
# VmHWM (the kernel's per-process high-water mark) of the `stablehand` process every
# 50 ms, with shell builtins only (no forks while sampling).
rss_sampler() {
  set +e
  local shell=$1 out=$2 max=0 fd c g k v _ comm
  local -a kids gkids
  exec {fd}<> <(:)
  while :; do
    kids=()
    read -r -a kids <"/proc/$shell/task/$shell/children" 2>/dev/null
    for c in "${kids[@]}"; do
      gkids=()
      read -r -a gkids 2>/dev/null <"/proc/$c/task/$c/children"
      for g in "$c" "${gkids[@]}"; do
        comm=
        read -r comm 2>/dev/null <"/proc/$g/comm"
        [[ $comm == stablehand ]] || continue
        while read -r k v _; do
          if [[ $k == VmHWM: ]]; then
            if ((v > max)); then max=$v; echo "$max" >"$out"; fi
            break
          fi
        done 2>/dev/null <"/proc/$g/status"
      done
    done
    read -r -t 0.05 -u "$fd" _
  done
}

TF="$WORK/time.out"
TIMEFMT='%M %U %S'

run_floor() { # DB KEY: pg_dump plain to /dev/null
  local t0
  t0=$EPOCHREALTIME
  /usr/bin/time -f "$TIMEFMT" -o "$TF" "${PGDUMP[@]}" "$1" >/dev/null
  record "$2" "$(secs_since "$t0")" "$TF"
}

run_custom() { # DB KEY: pg_dump -Fc -Z0 to /dev/null (what stablehand runs)
  local t0
  t0=$EPOCHREALTIME
  /usr/bin/time -f "$TIMEFMT" -o "$TF" "${PGDUMP[@]}" --format=custom --compress=0 "$1" >/dev/null
  record "$2" "$(secs_since "$t0")" "$TF"
}

run_gzip() { # DB KEY: pg_dump | gzip -9 > out.sql.gz
  local out="$WORK/out.sql.gz" t0
  rm -f "$out"
  t0=$EPOCHREALTIME
  /usr/bin/time -f "$TIMEFMT" -o "$TF" bash -c 'set -o pipefail; out=$1; shift; "$@" | gzip -9 >"$out"' \
    _ "$out" "${PGDUMP[@]}" "$1"
  record "$2" "$(secs_since "$t0")" "$TF" "$(stat -c %s "$out")"
  rm -f "$out"
}

write_app() { # DIR: an app dir with the benchmark's stablehand.toml
  mkdir -p "$1"
  cat >"$1/stablehand.toml" <<'EOF'
[database]
mode = "direct"
[backup]
dir = "backups"
EOF
}

LAST_APP=
run_stablehand() { # DB KEY RUN: stablehand -q backup --label bench in a fresh app dir
  local db=$1 key=$2 app="$WORK/app-$1-$3" t0 rc=0 sampler own file
  rm -rf "$app"
  write_app "$app"
  rm -f "$WORK/own.rss"
  rss_sampler "$$" "$WORK/own.rss" &
  sampler=$!
  t0=$EPOCHREALTIME
  (cd "$app" && DATABASE_URL="postgresql://postgres@127.0.0.1:$PORT/$db" \
    exec /usr/bin/time -f "$TIMEFMT" -o "$TF" "$SH" -q backup --label bench) || rc=$?
  local wall
  wall=$(secs_since "$t0")
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  ((rc == 0)) || die "stablehand backup failed (exit $rc) on $db"
  own=$(cat "$WORK/own.rss" 2>/dev/null || echo "")
  shopt -s nullglob
  local files=("$app"/backups/*.dump.zst)
  shopt -u nullglob
  ((${#files[@]} == 1)) || die "expected one backups/*.dump.zst in the app dir, found ${#files[@]}"
  file=${files[0]}
  record "$key" "$wall" "$TF" "$(stat -c %s "$file")" "$own"
  local manifest="${file%.dump.zst}.manifest.json"
  DUMPBYTES[$key]=$(grep -o '"dump_bytes": *[0-9]*' "$manifest" | grep -o '[0-9]*$' || echo 0)
  # Keep only the newest app dir (for `backup verify`).
  [[ -n $LAST_APP && $LAST_APP != "$app" ]] && rm -rf "$LAST_APP"
  LAST_APP=$app
}

VERIFY=()
run_verify() { # DB: stablehand backup verify on the newest backup of that dataset
  local db=$1 t0 rc=0 out
  t0=$EPOCHREALTIME
  out=$(cd "$LAST_APP" && DATABASE_URL="postgresql://postgres@127.0.0.1:$PORT/$db" "$SH" backup verify 2>&1) || rc=$?
  local wall
  wall=$(secs_since "$t0")
  if ((rc == 0)); then
    VERIFY+=("$db: stablehand backup verify PASS (${wall} s)")
  else
    VERIFY+=("$db: stablehand backup verify FAIL (exit $rc, ${wall} s)")
  fi
  printf '%s\n' "$out" | sed 's/^/    verify: /' >&2
}

bench_dataset() { # DB GZIP_RUNS
  local db=$1 gzip_runs=$2 i
  log "$db: warm-up pg_dump (untimed)"
  "${PGDUMP[@]}" "$db" >/dev/null
  for ((i = 1; i <= RUNS; i++)); do
    log "$db: round $i/$RUNS"
    run_floor "$db" "$db:floor"
    run_custom "$db" "$db:custom"
    run_stablehand "$db" "$db:stablehand" "$i"
    if ((i <= gzip_runs)); then run_gzip "$db" "$db:gzip"; fi
  done
  run_verify "$db"
}

# ---------------------------------------------------------------- run
DATASETS=(bench_small)
make_dataset bench_small 3 "$SMALL_ROWS"
bench_dataset bench_small "$RUNS"
if [[ $QUICK != 1 ]]; then
  DATASETS+=(bench_large)
  make_dataset bench_large 30 "$FIXTURE_ROWS"
  bench_dataset bench_large "$LARGE_GZIP_RUNS"
fi

# ---------------------------------------------------------------- report
# Medians of the recorded runs.
m() { # ARRAY KEY
  local -n arr=$1
  [[ -n ${arr[$2]:-} ]] || { echo ""; return 0; }
  # shellcheck disable=SC2086
  median ${arr[$2]}
}
nruns() { local -n arr=$1; set -- ${arr[$2]:-}; echo $#; }

echo
echo "## stablehand backup benchmark"
echo
echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
echo "- $(pg_dump --version), $(gzip --version | head -1), $("$SH" --version), stablehand settings: zstd level 3, threads = CPUs (defaults)"
echo "- runs per measurement: $RUNS (median reported); gzip -9 on the large dataset: $LARGE_GZIP_RUNS"
for db in "${DATASETS[@]}"; do
  read -r acc msgs <<<"${DB_ROWS[$db]}"
  echo "- $db: $(mb "${DB_BYTES[$db]}") MB on disk (pg_database_size), $acc pgbench_accounts rows, $msgs messages rows; pg_dump -Fc -Z0 output $(mb "${DUMPBYTES[$db:stablehand]}") MB"
done
echo
echo "| dataset | method | wall s (median) | runs | output MB | peak RSS MB (process tree) | stablehand own peak RSS MB | CPU s user+sys (client side) |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
row() { # DB KEY LABEL
  local key="$1:$2" size own
  size=$(m SIZE "$key")
  own=$(m OWN "$key")
  printf '| %s | %s | %.2f | %s | %s | %s | %s | %.2f |\n' "$1" "$3" "$(m WALL "$key")" "$(nruns WALL "$key")" \
    "${size:+$(mb "$size")}" "$(kb2mb "$(m RSS "$key")")" "${own:+$(kb2mb "$own")}" "$(m CPU "$key")"
}
for db in "${DATASETS[@]}"; do
  row "$db" floor "pg_dump plain > /dev/null (floor)"
  row "$db" custom "pg_dump -Fc -Z0 > /dev/null (stablehand's dump command)"
  row "$db" gzip "pg_dump \| gzip -9 > out.sql.gz (proposal)"
  row "$db" stablehand "stablehand -q backup (.dump.zst)"
done
echo
echo "Peak RSS (process tree) is GNU time's %M: the largest RSS of the timed process or any"
echo "child it waited for (for stablehand: max of stablehand, pg_dump, pg_restore --list)."
echo "\"Own\" is stablehand's VmHWM alone, sampled every 50 ms. CPU excludes the PostgreSQL server."
echo
echo "### Ratios and targets"
echo
echo "| dataset | ratio | value | target | result |"
echo "| --- | --- | ---: | --- | --- |"
declare -A RSS_OF
for db in "${DATASETS[@]}"; do
  sw=$(m WALL "$db:stablehand") fw=$(m WALL "$db:floor") gw=$(m WALL "$db:gzip")
  ss_=$(m SIZE "$db:stablehand") gs=$(m SIZE "$db:gzip")
  tree=$(kb2mb "$(m RSS "$db:stablehand")")
  own=$(m OWN "$db:stablehand")
  own=${own:+$(kb2mb "$own")}
  # Judge on stablehand's own peak; fall back to the tree's (an upper bound) if sampling missed.
  rss=${own:-$tree}
  RSS_OF[$db]=$rss
  r=$(ratio "$sw" "$fw")
  echo "| $db | stablehand / pg_dump wall time | $r | <= $MAX_WALL_VS_PGDUMP | $(verdict le "$r" "$MAX_WALL_VS_PGDUMP") |"
  r=$(ratio "$gw" "$sw")
  echo "| $db | gzip -9 / stablehand wall time | $r | >= $MIN_GZIP_VS_STABLEHAND | $(verdict ge "$r" "$MIN_GZIP_VS_STABLEHAND") |"
  r=$(ratio "$ss_" "$gs")
  echo "| $db | stablehand size / gzip -9 size | $r | <= $MAX_SIZE_VS_GZIP | $(verdict le "$r" "$MAX_SIZE_VS_GZIP") |"
  echo "| $db | stablehand peak RSS MB (own; tree $tree) | $rss | < $MAX_RSS_MB | $(verdict lt "$rss" "$MAX_RSS_MB") |"
done
if [[ -n ${RSS_OF[bench_large]:-} ]]; then
  a=${RSS_OF[bench_small]} b=${RSS_OF[bench_large]}
  d=$(awk -v a="$a" -v b="$b" 'BEGIN { d = b - a; if (d < 0) d = -d; printf "%.1f", d }')
  lim=$(awk -v a="$a" -v p="$RSS_SAME_PCT" -v mn="$RSS_SAME_MB" 'BEGIN { l = a * p / 100; if (l < mn) l = mn; printf "%.1f", l }')
  echo "| both | peak RSS large - small, MB ($b vs $a) | $d | <= $lim (${RSS_SAME_PCT}% or ${RSS_SAME_MB} MB) | $(verdict le "$d" "$lim") |"
fi
echo
for v in "${VERIFY[@]}"; do echo "- $v"; done
echo
