#!/usr/bin/env bash
# The proxy's cost, measured side by side in one run (issue 18): the same upstream (an
# nginx serving a small static page) loaded with wrk directly, through nginx as a
# reverse proxy (keep-alive to the upstream, as a tuned nginx runs), and through
# `stablehand proxy run`. Rounds are interleaved so machine noise hits all three alike;
# medians are compared. Everything listens on 127.0.0.1.
#
#   bash bench/proxy.sh            # or: make bench-proxy
#
# Environment:
#   BENCH_ROUNDS=N      rounds of each (default 3)
#   BENCH_SECONDS=S     seconds per wrk run (default 8)
#   BENCH_CONNS=C       wrk connections (default 32)
#
# Targets: stablehand's throughput >= 0.9x nginx's, its p99 latency <= nginx's + 1 ms.
# Also the CPU time each proxy spends per request (its processes' user + system time
# from /proc over the run, divided by the requests wrk counted): on a loaded machine it
# swings far less than throughput does, and says what the proxy costs the app beside it.
# The line before the last reads: proxy cpu: us per request nginx=N stablehand=N ratio=R
# The last line reads: proxy: rps direct=N nginx=N stablehand=N ratio=R, p99 ms direct=N nginx=N stablehand=N delta=D
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
CONNS=${BENCH_CONNS:-32}

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null 2>&1 || die "wrk is needed (apt-get install wrk)"; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get install -y nginx-light >/dev/null 2>&1 || apt-get install -y nginx >/dev/null 2>&1 || die "nginx is needed"; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

log "building stablehand (release)"
cargo build --release --quiet
BIN=$PWD/target/release/stablehand

WORK=$(mktemp -d /tmp/stablehand-bench-proxy.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for conf in "$WORK"/*.conf; do
    [ -f "$conf" ] && "$NGINX" -c "$conf" -p "$WORK" -s quit 2>/dev/null || true
  done
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT

UP=$(free_port)
NG=$(free_port)
SH=$(free_port)
mkdir -p "$WORK/www" "$WORK/logs" "$WORK/app"
# nginx workers run as another user when started as root: they must read the page.
chmod 755 "$WORK" "$WORK/www"
head -c 512 /dev/zero | tr '\0' 'x' >"$WORK/www/index.html"

nginx_conf() { # name, server block
  cat >"$WORK/$1.conf" <<EOF
worker_processes 2;
pid $WORK/$1.pid;
error_log $WORK/logs/$1.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  $2
}
EOF
  "$NGINX" -c "$WORK/$1.conf" -p "$WORK"
}

nginx_conf upstream "server { listen 127.0.0.1:$UP; root $WORK/www; location / { } }"
nginx_conf reverse "upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NG; location / {
    proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\";
    proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto \$scheme; proxy_buffering on; } }"

cat >"$WORK/app/stablehand.toml" <<EOF
[database]
name = "bench"

[proxy]
listen = "127.0.0.1:$SH"
upstream = "127.0.0.1:$UP"
EOF
(cd "$WORK/app" && exec "$BIN" -q proxy run) &
PIDS+=($!)
SH_PID=$!

for port in $UP $NG $SH; do
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/" >/dev/null || die "nothing answers on $port"
done

# CPU time (user + system, in clock ticks, all threads) of the given processes.
ticks() {
  local total=0 p
  for p in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
# The processes that do a proxy's work: nginx's workers, or stablehand's one process.
proxy_pids() { # name
  case $1 in
    direct) echo "" ;;
    nginx) pgrep -P "$(cat "$WORK/reverse.pid")" | tr '\n' ' ' ;;
    stablehand) echo "$SH_PID" ;;
  esac
}

# wrk's summary: requests/s, the 99th percentile latency in ms, and the CPU time per
# request of the given processes (0 when none).
measure() { # port pids... -> "rps p99ms cpu_us_per_request"
  local out rps p99 v unit port=$1 before after requests cpu
  shift
  before=$(ticks "$@")
  out=$(wrk -t2 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency "http://127.0.0.1:$port/" 2>&1)
  after=$(ticks "$@")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(awk -v t=$((after - before)) -v us="$TICK_US" -v n="$requests" 'BEGIN {printf "%.1f", (n > 0) ? t * us / n : 0}')
  grep -q "Non-2xx\|Socket errors" <<<"$out" && log "wrk on $port reported errors: $(grep -E 'Non-2xx|Socket errors' <<<"$out")"
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  read -r v unit < <(awk '$1 == "99%" {v = $2; sub(/[a-z]+$/, "", v); u = $2; sub(/^[0-9.]+/, "", u); print v, u}' <<<"$out")
  case $unit in
    us) p99=$(awk -v v="$v" 'BEGIN {printf "%.3f", v / 1000}') ;;
    ms) p99=$v ;;
    s) p99=$(awk -v v="$v" 'BEGIN {printf "%.3f", v * 1000}') ;;
    *) die "cannot read wrk's latency unit '$unit'" ;;
  esac
  echo "$rps $p99 $cpu"
}

declare -A RPS P99 CPU
for name in direct nginx stablehand; do RPS[$name]=""; P99[$name]=""; CPU[$name]=""; done
for round in $(seq "$ROUNDS"); do
  for name in direct nginx stablehand; do
    case $name in direct) port=$UP ;; nginx) port=$NG ;; stablehand) port=$SH ;; esac
    # shellcheck disable=SC2046 # one pid per word
    read -r rps p99 cpu < <(measure "$port" $(proxy_pids "$name"))
    log "round $round $name: $rps req/s, p99 $p99 ms, proxy cpu $cpu us/request"
    RPS[$name]+="$rps "
    P99[$name]+="$p99 "
    CPU[$name]+="$cpu "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for name in direct nginx stablehand; do
  RPS[$name]=$(median <<<"${RPS[$name]}")
  P99[$name]=$(median <<<"${P99[$name]}")
  CPU[$name]=$(median <<<"${CPU[$name]}")
done
cpu_ratio=$(awk -v a="${CPU[stablehand]}" -v b="${CPU[nginx]}" 'BEGIN {printf "%.3f", a / b}')
ratio=$(awk -v a="${RPS[stablehand]}" -v b="${RPS[nginx]}" 'BEGIN {printf "%.3f", a / b}')
delta=$(awk -v a="${P99[stablehand]}" -v b="${P99[nginx]}" 'BEGIN {printf "%.3f", a - b}')
verdict=$(awk -v r="$ratio" -v d="$delta" 'BEGIN {print (r >= 0.9 && d <= 1.0) ? "PASS" : "FAIL"}')
log "median of $ROUNDS rounds, $SECONDS_PER_RUN s each, $CONNS connections: throughput ratio stablehand/nginx $ratio (target >= 0.9), p99 delta $delta ms (target <= +1 ms): $verdict; CPU per request stablehand/nginx $cpu_ratio"
echo "proxy cpu: us per request nginx=${CPU[nginx]} stablehand=${CPU[stablehand]} ratio=$cpu_ratio"
echo "proxy: rps direct=${RPS[direct]} nginx=${RPS[nginx]} stablehand=${RPS[stablehand]} ratio=$ratio, p99 ms direct=${P99[direct]} nginx=${P99[nginx]} stablehand=${P99[stablehand]} delta=$delta"
