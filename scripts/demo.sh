#!/usr/bin/env bash
# The story a newcomer runs on a fresh machine (`make demo`): a sample compose app
# (examples/demo-app: a busybox web server that migrates its database when it starts,
# and PostgreSQL in compose), a local git repository with a bare remote, then:
#   v1 deploys and is marked stable;
#   v2 adds a migration and breaks the health check: rolled back automatically, code
#      AND database (the migration's table is gone, every row written before is there);
#   v3 fails again: back to v1, not to v2;
#   v4 fixes it: the stable release moves;
#   v5 adds a migration with its down.sql and breaks: rolled back by the down migration,
#      so the rows users wrote while v5 ran stay; v6 is healthy again;
#   then behind `stablehand proxy`, under a steady load: v7 goes blue/green, v8's gate
#      fails beside the running release (no request fails), v9 fails during its watch
#      and traffic switches back, v10's migration gets a maintenance window (503s).
# It ends with `status`, `history` and the backups. Everything lives in a temp directory
# that is removed at the end (DEMO_KEEP=1 keeps it and leaves the stack running).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash scripts/ensure-deps.sh
echo "==> building stablehand (release)"
cargo build --release -q
SH="$ROOT/target/release/stablehand"

source "$ROOT/bench/lib.sh"
source "$ROOT/examples/demo-app/stack.sh"
[[ $EUID -eq 0 ]] || die "the demo needs root (PostgreSQL's data directory belongs to the postgres user)"

WORK=$(mktemp -d /tmp/stablehand-demo.XXXXXX)
chmod 755 "$WORK"
PROJECT="shdemo$$"
cleanup() {
  local rc=$?
  if [[ ${DEMO_KEEP:-0} == 1 ]]; then
    echo "kept $WORK (compose project $PROJECT is still running)"
  else
    stack_destroy
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT

say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
run() { # runs stablehand in the app directory, shows the command, returns its exit code
  printf '\n$ stablehand %s\n' "$*"
  local code=0
  (cd "$APP" && "$SH" "$@") || code=$?
  echo "(exit $code)"
  return "$code"
}
expect() { # CODE COMMAND...: runs it and checks the exit code
  local want=$1 code=0
  shift
  run "$@" || code=$?
  [[ $code == "$want" ]] || die "expected exit $want, got $code"
}

say "Setting up: a bare remote, a developer clone, the server's work tree, PostgreSQL in compose"
stack_create
stack_up_db 5000
echo "app directory: $APP (compose project $PROJECT; PostgreSQL on 127.0.0.1:$DB_PORT, the app on :$WEB_PORT)"
echo "production data before stablehand: $(stack_psql 'select count(*) from messages') messages"

say "v1: the first deploy. Backup, build, start, health gate, then latest-stable is tagged and pushed"
expect 0 deploy

say "Users keep writing"
stack_psql "insert into messages (body) select 'written after v1 ' || g from generate_series(1, 250) g"
echo "messages: $(stack_psql 'select count(*) from messages')"

say "v2: adds a migration (a new table and column) and breaks /health. The gate fails: code AND database go back"
stack_release v2 no 002_audit "create table audit (id serial primary key, what text); alter table messages add column flagged boolean;" >/dev/null
expect 11 deploy
echo
echo "after the rollback: table audit exists? $(stack_psql "select to_regclass('audit') is not null")" \
  "| messages: $(stack_psql 'select count(*) from messages')" \
  "| column flagged exists? $(stack_psql "select count(*) > 0 from information_schema.columns where table_name = 'messages' and column_name = 'flagged'")"
echo "the failed database is kept aside: $(stack_psql "select string_agg(datname, ', ') from pg_database where datname like 'appdb\_\_failed\_%'" postgres)"

say "v3: still broken (and still carries v2's migration). Back to v1 again, not to v2"
stack_release v3 no >/dev/null
expect 11 deploy

say "v4: fixed. It deploys, migrates, passes the gate, and becomes the stable release"
stack_release v4 yes >/dev/null
expect 0 deploy
echo
echo "the app serves: $(curl -fsS "http://127.0.0.1:$WEB_PORT/version") | audit table now: $(stack_psql "select to_regclass('audit') is not null")"

say "v5: a migration WITH its down.sql (Prisma's documented down migration), and a broken /health."
echo "Users write while v5 runs its gate; the rollback undoes the schema with down.sql and keeps their rows"
stack_release v5 no 003_tags "create table tags (id serial primary key, name text); alter table messages add column tag text;" \
  "ALTER TABLE \"messages\" DROP COLUMN \"tag\";
DROP TABLE \"tags\";" >/dev/null
before=$(stack_psql 'select count(*) from messages')
printf '\n$ stablehand deploy   (users write while its gate runs)\n'
(cd "$APP" && "$SH" deploy) &
deploy_pid=$!
for _ in $(seq 1 240); do grep -q '"name": "gate"' "$APP/.stablehand/journal.json" 2>/dev/null && break; sleep 0.5; done
stack_psql "insert into messages (body) select 'written while v5 ran ' || g from generate_series(1, 25) g"
code=0
wait "$deploy_pid" || code=$?
echo "(exit $code)"
[[ $code == 11 ]] || die "expected exit 11, got $code"
echo
echo "after the rollback: table tags exists? $(stack_psql "select to_regclass('tags') is not null")" \
  "| messages: $before before, $(stack_psql 'select count(*) from messages') now (the 25 written during v5 are kept)" \
  "| 003_tags marked rolled back: $(stack_psql "select count(*) from _prisma_migrations where migration_name = '003_tags' and rolled_back_at is not null")"
rm -rf "$DEV/prisma/migrations/003_tags"
stack_release v6 yes >/dev/null
expect 0 deploy

say "Zero downtime: stablehand proxy in front of the app, a steady load on it during each deploy"
PROXY_PORT=$(free_port)
NEXT_PORT=$(free_port)
cat >>"$DEV/stablehand.toml" <<TOML

[proxy]
listen = "127.0.0.1:$PROXY_PORT"
upstream = "127.0.0.1:$WEB_PORT"
port = $NEXT_PORT
port_env = "WEB_PORT"
watch = "6s"
watch_errors = 1
retry_after = "5s"
TOML
stack_release v7 yes >/dev/null
echo "v7 adds [proxy] to stablehand.toml; it deploys as before (nothing is in front of the app yet)"
expect 0 deploy
(cd "$APP" && exec "$SH" proxy run >"$WORK/proxy.log" 2>&1) &
PROXY_PID=$!
trap 'kill "$PROXY_PID" 2>/dev/null; cleanup' EXIT
for _ in $(seq 1 40); do (cd "$APP" && "$SH" proxy status >/dev/null 2>&1) && break; sleep 0.25; done
echo "users now reach the app through 127.0.0.1:$PROXY_PORT (stablehand proxy); the app serves on :$WEB_PORT"
load_start() { # a steady load of curl requests on the public address, one status per line
  : >"$WORK/load.txt"
  touch "$WORK/load.on"
  (while [[ -f $WORK/load.on ]]; do
    curl -s -o /dev/null -m 3 -w '%{http_code}\n' "http://127.0.0.1:$PROXY_PORT/version" || true
  done >>"$WORK/load.txt") &
  LOAD_PID=$!
}
load_stop() { # prints what the load saw
  rm -f "$WORK/load.on"
  wait "$LOAD_PID" || true
  echo "requests during the deploy: $(wc -l <"$WORK/load.txt") answered: $(sort "$WORK/load.txt" | uniq -c | awk '{printf "%s x %s  ", $1, $2}')"
}
deploy_under_load() { # CODE
  load_start
  expect "$1" deploy
  load_stop
}

say "v8 (code only): blue/green. It starts beside v7 on :$NEXT_PORT, is gated there, takes traffic, is watched, then moves into the main project"
stack_release v8 yes >/dev/null
deploy_under_load 0
echo "the public address serves: $(curl -fsS "http://127.0.0.1:$PROXY_PORT/version")"

say "v9: broken /health. Its gate fails beside v8: it never takes traffic, not one request fails"
stack_release v9 no >/dev/null
deploy_under_load 11

say "v10: passes its gate, then breaks 9 s after it starts, while it takes traffic: switched back to the warm v8"
echo 9 >"$DEV/app/www/fail-after"
stack_release v10 yes >/dev/null
rm -f "$DEV/app/www/fail-after"
deploy_under_load 11
echo "(the 404s are v10's, in the moments before the watch saw it fail; after the switch back every request is v8's)"

say "v11: a migration the old code cannot run beside (a column type change): a maintenance window"
stack_release v11 yes 004_body_type "alter table messages alter column body type varchar(2000);" >/dev/null
run deploy --dry-run | grep -i "put in place\|would deploy" || true
deploy_under_load 0
echo "(503 with Retry-After while v8 stopped, the migration ran and v11 passed its gate; no refused connection)"
echo "the public address serves: $(curl -fsS "http://127.0.0.1:$PROXY_PORT/version")"
expect 0 proxy status

say "Where production stands"
expect 0 status
say "The release log"
expect 0 history
say "The backups (one verified pre-deploy backup per deploy)"
expect 0 backup list

say "Done: eleven deploys, five automatic rollbacks of code and database (one by down migrations, keeping the rows written meanwhile; two behind the proxy, with no failed request after the switch), nothing lost"
