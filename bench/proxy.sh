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

for port in $UP $NG $SH; do
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/" >/dev/null || die "nothing answers on $port"
done

# wrk's summary: requests/s and the 99th percentile latency in ms.
measure() { # port -> "rps p99ms"
  local out rps p99 v unit
  out=$(wrk -t2 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency "http://127.0.0.1:$1/" 2>&1)
  grep -q "Non-2xx\|Socket errors" <<<"$out" && log "wrk on $1 reported errors: $(grep -E 'Non-2xx|Socket errors' <<<"$out")"
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  read -r v unit < <(awk '$1 == "99%" {v = $2; sub(/[a-z]+$/, "", v); u = $2; sub(/^[0-9.]+/, "", u); print v, u}' <<<"$out")
  case $unit in
    us) p99=$(awk -v v="$v" 'BEGIN {printf "%.3f", v / 1000}') ;;
    ms) p99=$v ;;
    s) p99=$(awk -v v="$v" 'BEGIN {printf "%.3f", v * 1000}') ;;
    *) die "cannot read wrk's latency unit '$unit'" ;;
  esac
  echo "$rps $p99"
}

declare -A RPS P99
for name in direct nginx stablehand; do RPS[$name]=""; P99[$name]=""; done
for round in $(seq "$ROUNDS"); do
  for name in direct nginx stablehand; do
    case $name in direct) port=$UP ;; nginx) port=$NG ;; stablehand) port=$SH ;; esac
    read -r rps p99 < <(measure "$port")
    log "round $round $name: $rps req/s, p99 $p99 ms"
    RPS[$name]+="$rps "
    P99[$name]+="$p99 "
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for name in direct nginx stablehand; do
  RPS[$name]=$(median <<<"${RPS[$name]}")
  P99[$name]=$(median <<<"${P99[$name]}")
done
ratio=$(awk -v a="${RPS[stablehand]}" -v b="${RPS[nginx]}" 'BEGIN {printf "%.3f", a / b}')
delta=$(awk -v a="${P99[stablehand]}" -v b="${P99[nginx]}" 'BEGIN {printf "%.3f", a - b}')
verdict=$(awk -v r="$ratio" -v d="$delta" 'BEGIN {print (r >= 0.9 && d <= 1.0) ? "PASS" : "FAIL"}')
log "median of $ROUNDS rounds, $SECONDS_PER_RUN s each, $CONNS connections: throughput ratio stablehand/nginx $ratio (target >= 0.9), p99 delta $delta ms (target <= +1 ms): $verdict"
echo "proxy: rps direct=${RPS[direct]} nginx=${RPS[nginx]} stablehand=${RPS[stablehand]} ratio=$ratio, p99 ms direct=${P99[direct]} nginx=${P99[nginx]} stablehand=${P99[stablehand]} delta=$delta"
