#!/bin/sh
# The app's entrypoint: apply pending migrations, recorded in _prisma_migrations as
# `prisma migrate deploy` does when a Prisma backend starts, then serve app/www
# (app/www/health is the health check).
set -e
P="psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $DB_PORT -U app -d appdb"
$P -c "create table if not exists _prisma_migrations (id varchar(36) primary key, checksum varchar(64) not null, finished_at timestamptz, migration_name varchar(255) not null, logs text, rolled_back_at timestamptz, started_at timestamptz not null default now(), applied_steps_count integer not null default 0)"
for dir in /app/migrations/*/; do
  [ -d "$dir" ] || continue
  name=$(basename "$dir")
  applied=$($P -At -c "select count(*) from _prisma_migrations where migration_name = '$name' and finished_at is not null and rolled_back_at is null")
  if [ "$applied" = "0" ]; then
    echo "applying migration $name"
    $P -1 -f "$dir/migration.sql"
    $P -c "insert into _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) values (md5('$name'), md5('$name'), now(), '$name', 1)"
  fi
done
# A switch for the tests: an environment that breaks under any release.
if [ -f /flags/broken ]; then rm -f /app/www/health; fi
echo "serving on 127.0.0.1:$WEB_PORT"
exec httpd -f -p "$WEB_PORT" -h /app/www
