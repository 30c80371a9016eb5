#!/bin/sh
# The app's entrypoint: apply pending migrations from /app/prisma/migrations, recorded in
# _prisma_migrations the way `prisma migrate deploy` records them when a Prisma backend
# starts, then serve app/www (app/www/health is the health check).
#
# Prisma's rules, kept here: a migration counts as applied when a row with its name has
# finished_at set and rolled_back_at NULL (so one marked rolled back is applied again);
# a row with both NULL is a failed migration and stops everything (P3009). The row is
# written before the script runs (uuid id, sha256 checksum, started_at,
# applied_steps_count 0) and finished after it.
set -e
P="psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $DB_PORT -U app -d appdb"
$P -c "create table if not exists _prisma_migrations (id varchar(36) primary key, checksum varchar(64) not null, finished_at timestamptz, migration_name varchar(255) not null, logs text, rolled_back_at timestamptz, started_at timestamptz not null default now(), applied_steps_count integer not null default 0)"
for dir in /app/prisma/migrations/*/; do
  [ -f "$dir/migration.sql" ] || continue
  name=$(basename "$dir")
  failed=$($P -At -c "select count(*) from _prisma_migrations where migration_name = '$name' and finished_at is null and rolled_back_at is null")
  if [ "$failed" != "0" ]; then
    echo "Error: P3009 migrate found failed migrations in the target database: $name" >&2
    exit 1
  fi
  applied=$($P -At -c "select count(*) from _prisma_migrations where migration_name = '$name' and finished_at is not null and rolled_back_at is null")
  if [ "$applied" = "0" ]; then
    echo "applying migration $name"
    id=$(cat /proc/sys/kernel/random/uuid)
    sum=$(sha256sum "$dir/migration.sql" | cut -d ' ' -f 1)
    $P -c "insert into _prisma_migrations (id, checksum, migration_name, started_at, applied_steps_count) values ('$id', '$sum', '$name', now(), 0)"
    if ! $P -1 -f "$dir/migration.sql"; then
      $P -c "update _prisma_migrations set logs = 'migration.sql failed' where id = '$id'"
      exit 1
    fi
    $P -c "update _prisma_migrations set finished_at = now(), applied_steps_count = 1 where id = '$id'"
  fi
done
# A switch for the tests: an environment that breaks under any release.
if [ -f /flags/broken ]; then rm -f /app/www/health; fi
# A release that breaks some seconds after it starts (app/www/fail-after holds how many):
# it passes its gate, then fails once it takes traffic.
if [ -f /app/www/fail-after ]; then
  (sleep "$(cat /app/www/fail-after)"; rm -f /app/www/health /app/www/version) &
fi
echo "serving on 127.0.0.1:$WEB_PORT"
exec httpd -f -p "$WEB_PORT" -h /app/www
