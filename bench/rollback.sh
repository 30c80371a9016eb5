#!/usr/bin/env bash
# Rollback of the app containers, side by side on the same Compose stack:
#
#   proposal:   compose down; sleep 5; compose build --pull; compose up -d; sleep 15
#               (the proposal's rollback; it then calls the app healthy if `ps` says Up)
#   stablehand: Runtime::switch_to(stable commit) through examples/runtime_switch:
#               re-tag the commit's retained image, `compose up -d --no-build`; timed
#               until the app answers HTTP 200 with the stable version
#
# Each run starts from the "failed" release (v2) running and rolls back to v1, whose
# code is checked out first (as the deploy does). Runs alternate between the two.
# Also printed, for honesty: the proposal's sequence without its sleeps, timed to the
# first 200 as well, once with Docker's build cache warm (v1 was built before) and once
# with --no-cache (a build that has to run: the app's ~1-2 s "compile" step), so the
# ratio is not only the sleeps.
#
#   BENCH_RUNS=3 bash bench/rollback.sh        (root, a Docker engine with Compose)
#
# Target (issue 5): stablehand at least 5x faster than the proposal's sequence.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-3}
MIN_SPEEDUP=5

source "$ROOT/bench/lib.sh"

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
docker info >/dev/null 2>&1 || die "no Docker engine answers (scripts/ensure-deps.sh starts one)"
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  die "neither docker compose nor docker-compose is installed"
fi
BUSYBOX=$(command -v busybox || true)
[[ -n $BUSYBOX ]] || die "busybox (static) is required: apt-get install busybox-static"
command -v wget >/dev/null || command -v curl >/dev/null || die "curl or wget is required"

log "building examples/runtime_switch (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet --example runtime_switch)
SWITCH="$ROOT/target/release/examples/runtime_switch"

WORK=$(mktemp -d -t stablehand-rollback.XXXXXX)
APP="$WORK/app"
PROJECT="shbench$$"
PORT=$(free_port)
mkdir -p "$APP/src"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  (cd "$APP" && "${COMPOSE[@]}" -p "$PROJECT" down -t 2 >/dev/null 2>&1) || true
  docker image ls --format '{{.Repository}}:{{.Tag}}' | grep "^${PROJECT}[-_]web:" |
    xargs -r docker image rm >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

# The app: busybox from scratch (nothing is pulled), a "compile" step that depends on the
# source, httpd serving the version on 127.0.0.1 (host network).
cp "$BUSYBOX" "$APP/busybox"
cat >"$APP/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY src/ /src/
RUN mkdir -p /www && sh /src/build.sh && cp /src/version.txt /www/
EOF
cat >"$APP/src/build.sh" <<'EOF'
# stands in for a compile step: ~1-2 s of CPU
for i in $(seq 1 300); do md5sum /bin/busybox >/dev/null; done
EOF
cat >"$APP/docker-compose.yml" <<EOF
version: "2.4"
services:
  web:
    build: .
    init: true
    network_mode: host
    command: ["httpd", "-f", "-p", "$PORT", "-h", "/www"]
EOF
cat >"$APP/stablehand.toml" <<EOF
[runtime]
project = "$PROJECT"

[database]
mode = "direct"
EOF
git_() { git -C "$APP" -c user.name=bench -c user.email=bench@example.test "$@"; }
echo v1 >"$APP/src/version.txt"
git_ init -q -b main
git_ add .
git_ commit -q -m v1
V1=$(git_ rev-parse HEAD)
echo v2 >"$APP/src/version.txt"
git_ commit -q -am v2
V2=$(git_ rev-parse HEAD)

compose() { (cd "$APP" && "${COMPOSE[@]}" -p "$PROJECT" "$@" >/dev/null 2>&1); }

serves() { # VERSION: true when the app answers 200 with it
  local body
  if command -v curl >/dev/null; then
    body=$(curl -fsS --max-time 1 "http://127.0.0.1:$PORT/version.txt" 2>/dev/null) || return 1
  else
    body=$(wget -qO- -T 1 "http://127.0.0.1:$PORT/version.txt" 2>/dev/null) || return 1
  fi
  [[ $body == "$1" ]]
}

wait_serving() { # VERSION: polls every 50 ms for up to 60 s
  local i
  for ((i = 0; i < 1200; i++)); do
    serves "$1" && return 0
    sleep 0.05
  done
  die "the app never served $1"
}

# Both releases built once and retained, as after a deploy of v2 (the failed one).
log "building v1 and v2 once, with their commit tags (as the deploy's build step does)"
git_ checkout -q "$V1"
"$SWITCH" "$APP/stablehand.toml" "$V1" >/dev/null
git_ checkout -q "$V2"
"$SWITCH" "$APP/stablehand.toml" "$V2" >/dev/null
wait_serving v2

to_failed_release() { # running v2, code at v2
  git_ checkout -q "$V2"
  "$SWITCH" "$APP/stablehand.toml" "$V2" >/dev/null
  wait_serving v2
}

declare -a T_PROPOSAL T_NOCACHE T_NOSLEEP T_SH T_SH_SERVING LOADS=()
note_load "before the runs"
for ((run = 1; run <= RUNS; run++)); do
  log "run $run/$RUNS: proposal (down; sleep 5; build --pull; up -d; sleep 15)"
  to_failed_release
  git_ checkout -q "$V1"
  t0=$EPOCHREALTIME
  compose down
  sleep 5
  compose build --pull
  compose up -d
  sleep 15
  T_PROPOSAL+=("$(secs_since "$t0")")
  wait_serving v1

  log "run $run/$RUNS: proposal without sleeps (down; build --pull; up -d; until HTTP 200)"
  to_failed_release
  git_ checkout -q "$V1"
  t0=$EPOCHREALTIME
  compose down
  compose build --pull
  compose up -d
  wait_serving v1
  T_NOSLEEP+=("$(secs_since "$t0")")

  log "run $run/$RUNS: proposal without sleeps, build not cached (down; build --pull --no-cache; up -d; until HTTP 200)"
  to_failed_release
  git_ checkout -q "$V1"
  t0=$EPOCHREALTIME
  compose down
  compose build --pull --no-cache
  compose up -d
  wait_serving v1
  T_NOCACHE+=("$(secs_since "$t0")")

  log "run $run/$RUNS: stablehand (retained image re-tagged; up -d --no-build; until HTTP 200)"
  to_failed_release
  git_ checkout -q "$V1"
  t0=$EPOCHREALTIME
  out=$("$SWITCH" "$APP/stablehand.toml" "$V1")
  T_SH+=("$(secs_since "$t0")")
  wait_serving v1
  T_SH_SERVING+=("$(secs_since "$t0")")
  [[ $out == *'"rebuilt":false'* ]] || die "stablehand rebuilt on rollback: $out"
done
note_load "after the runs"

P=$(median "${T_PROPOSAL[@]}")
N=$(median "${T_NOSLEEP[@]}")
NC=$(median "${T_NOCACHE[@]}")
S=$(median "${T_SH[@]}")
SS=$(median "${T_SH_SERVING[@]}")
SPEEDUP=$(ratio "$P" "$SS")
echo
echo "rollback of the app containers, $RUNS runs each (median seconds), ${COMPOSE[*]}:"
printf '  %-72s %7s\n' "proposal: down; sleep 5; build --pull; up -d; sleep 15" "$P"
printf '  %-72s %7s\n' "proposal without sleeps: down; build --pull; up -d; until HTTP 200" "$N"
printf '  %-72s %7s\n' "proposal without sleeps, build not cached (--no-cache)" "$NC"
printf '  %-72s %7s\n' "stablehand switch_to (re-tag retained image; up -d --no-build)" "$S"
printf '  %-72s %7s\n' "stablehand switch_to, until HTTP 200 with the stable version" "$SS"
echo "  runs: proposal ${T_PROPOSAL[*]} | no sleeps ${T_NOSLEEP[*]} | stablehand ${T_SH_SERVING[*]}"
printf '%s\n' "${LOADS[@]}"
echo
echo "speedup vs the proposal's sequence: ${SPEEDUP}x (target >= ${MIN_SPEEDUP}x)"
echo "speedup vs the proposal without its sleeps: $(ratio "$N" "$SS")x (build cache warm; informational)"
echo "speedup vs the proposal without its sleeps, build not cached: $(ratio "$NC" "$SS")x (informational)"
if awk -v a="$SPEEDUP" -v b="$MIN_SPEEDUP" 'BEGIN { exit !(a >= b) }'; then
  echo "PASS"
else
  echo "FAIL"
  exit 1
fi
