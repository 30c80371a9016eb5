#!/usr/bin/env bash
# The main job end to end on a throwaway PostgreSQL cluster with sample data:
# back it up four times (retention prunes after each), list, verify, show what
# retention decides and why, prune, show; then delete rows, restore (swap), and run a
# restore test.
# Everything lives in a temp directory that is removed at the end (DEMO_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash scripts/ensure-deps.sh
echo "==> building stablehand (release)"
cargo build --release -q
SH="$ROOT/target/release/stablehand"

PGBIN=/usr/lib/postgresql/15/bin
WORK=$(mktemp -d /tmp/stablehand-demo.XXXXXX)
chmod 755 "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true
  if [ "${DEMO_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "==> starting a throwaway PostgreSQL 15 on 127.0.0.1:$PORT"
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -w -l "$WORK/pg/log" \
  -o "-p $PORT -k $WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null

echo "==> loading sample data (pgbench scale 5 + 50k chat messages)"
"$PGBIN/psql" -qX -h 127.0.0.1 -p "$PORT" -U postgres -c "create database shop" >/dev/null
"$PGBIN/pgbench" -q -i -s 5 -h 127.0.0.1 -p "$PORT" -U postgres shop >/dev/null 2>&1
"$PGBIN/psql" -qX -h 127.0.0.1 -p "$PORT" -U postgres -d shop >/dev/null <<'SQL'
create table messages (id bigserial primary key, room int, body text, meta jsonb, created_at timestamptz default now());
insert into messages (room, body, meta)
  select g % 97, 'message ' || g || ' ' || repeat(md5(g::text), 3), jsonb_build_object('n', g, 'tag', 'demo')
  from generate_series(1, 50000) g;
SQL

APP="$WORK/app"
mkdir -p "$APP"
cat > "$APP/stablehand.toml" <<TOML
# A direct-mode config: the URL comes from DATABASE_URL, never from this file.
[database]
mode = "direct"

[backup]
dir = "backups/database"
keep_last = 2          # keep the newest two ...
keep_within = "0s"     # ... and nothing else, so the demo shows pruning
TOML
export DATABASE_URL="postgresql://postgres@127.0.0.1:$PORT/shop"
cd "$APP"

run() { printf '\n$ %s\n' "$*"; "$@"; }
run "$SH" backup --label nightly
run "$SH" backup --label pre-deploy
run "$SH" backup pin "$("$SH" --json backup list | python3 -c 'import json,sys; print(json.load(sys.stdin)["backups"][-1]["id"])')"
run "$SH" backup --label pre-deploy
run "$SH" backup --label pre-deploy
run "$SH" backup list
run "$SH" backup verify --all
run "$SH" backup prune --dry-run
run "$SH" backup prune
run "$SH" backup show latest
printf '\n$ ls -l backups/database\n'; ls -l backups/database

echo
echo "==> an accident: 1000 messages deleted, then restore the latest backup"
"$PGBIN/psql" -qX -h 127.0.0.1 -p "$PORT" -U postgres -d shop -c "delete from messages where id <= 1000"
"$PGBIN/psql" -qXAt -h 127.0.0.1 -p "$PORT" -U postgres -d shop -c "select 'messages now: ' || count(*) from messages"
run "$SH" restore latest --yes
"$PGBIN/psql" -qXAt -h 127.0.0.1 -p "$PORT" -U postgres -d shop -c "select 'messages after the restore: ' || count(*) from messages"
run "$SH" backup list --databases
run "$SH" backup verify --restore-test --latest
echo
printf "demo done: 4 backups made; retention (keep_last = 2) deleted the oldest unpinned one\nafter the last backup, the pinned one survived, every remaining backup verified; the\nrestore swapped the backup in and kept the damaged database beside it; the restore test\nrestored the latest backup into a scratch database and dropped it.\n"
