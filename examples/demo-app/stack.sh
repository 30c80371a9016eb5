# shellcheck shell=bash
# The demo app's stack, shared by scripts/demo.sh and bench/deploy.sh (sourced, after
# bench/lib.sh): a bare git remote, a developer clone (dev/) that authors releases, the
# deploy work tree (app/) with stablehand.toml, and PostgreSQL in compose.
#
# Needs: ROOT, WORK (an empty directory), PROJECT (a compose project name).
# Sets:  DB_PORT WEB_PORT DEV APP COMPOSE (the compose command, v2 or v1).

STACK_SRC="$ROOT/examples/demo-app"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

stack_git() { git -c user.name=demo -c user.email=demo@example.test "$@"; }

stack_compose() { (cd "$APP" && "${COMPOSE[@]}" -p "$PROJECT" "$@"); }

stack_psql() { # SQL [DB]
  "$PGBIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 "postgresql://app@127.0.0.1:$DB_PORT/${2:-appdb}" -c "$1"
}

# Builds the repositories and the base image; nothing runs yet.
stack_create() {
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
  DB_PORT=$(free_port)
  WEB_PORT=$(free_port)
  while [[ $WEB_PORT == "$DB_PORT" ]]; do WEB_PORT=$(free_port); done
  DEV="$WORK/dev"
  APP="$WORK/app"
  local busybox
  busybox=$(command -v busybox) || die "busybox (static) is required: apt-get install busybox-static"
  mkdir -p "$WORK/pgdata" "$WORK/base" "$WORK/flags"
  chown postgres:postgres "$WORK/pgdata"
  cp "$busybox" "$WORK/base/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$WORK/base/Dockerfile"
  docker build -q -t "${PROJECT}_base" "$WORK/base" >/dev/null 2>"$WORK/base/build.log" ||
    die "building the base image failed: $(cat "$WORK/base/build.log")"

  stack_git init -q --bare -b main "$WORK/remote.git"
  stack_git clone -q "$WORK/remote.git" "$DEV" 2>/dev/null
  cp -r "$STACK_SRC/app" "$STACK_SRC/prisma" "$STACK_SRC/Dockerfile" "$DEV/"
  cp "$STACK_SRC/gitignore" "$DEV/.gitignore"
  cp "$busybox" "$DEV/busybox"
  local fill=(-e "s/@PROJECT@/$PROJECT/g" -e "s/@DB_PORT@/$DB_PORT/g" -e "s/@WEB_PORT@/$WEB_PORT/g"
    -e "s/@PG_UID@/$(id -u postgres)/g" -e "s/@PG_GID@/$(id -g postgres)/g" -e "s/@BASE_IMAGE@/${PROJECT}_base/g")
  sed "${fill[@]}" "$STACK_SRC/docker-compose.yml.in" >"$DEV/docker-compose.yml"
  sed "${fill[@]}" "$STACK_SRC/stablehand.toml.in" >"$DEV/stablehand.toml"
  (cd "$DEV" && stack_git add -A && stack_git commit -q -m "v1: the app, with its first migration" && stack_git push -q origin main)
  stack_git clone -q "$WORK/remote.git" "$APP" 2>/dev/null
}

# Starts PostgreSQL and creates appdb with ROWS messages (production data that
# predates stablehand).
stack_up_db() { # ROWS
  stack_compose up -d postgres >/dev/null 2>&1 || die "compose up postgres failed"
  local _
  for _ in $(seq 1 90); do "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$DB_PORT" && break; sleep 1; done
  stack_psql "create database appdb" postgres
  stack_psql "create table messages (id serial primary key, body text not null);
    insert into messages (body) select 'message ' || g || ' ' || md5(g::text) from generate_series(1, $1) g;
    create index on messages (body);"
}

# Commits and pushes a release from dev/: VERSION HEALTHY(yes|no) [MIGRATION SQL [DOWN_SQL]].
# Prints the commit.
stack_release() {
  local version=$1 healthy=$2
  if [[ $healthy == yes ]]; then echo ok >"$DEV/app/www/health"; else rm -f "$DEV/app/www/health"; fi
  echo "$version" >"$DEV/app/www/version"
  if [[ $# -ge 4 ]]; then
    mkdir -p "$DEV/prisma/migrations/$3"
    echo "$4" >"$DEV/prisma/migrations/$3/migration.sql"
    if [[ $# -ge 5 ]]; then echo "$5" >"$DEV/prisma/migrations/$3/down.sql"; fi
  fi
  (cd "$DEV" && stack_git add -A && stack_git commit -q -m "$version${3:+ (migration $3)}$([[ $healthy == yes ]] || echo ', health check broken')" && stack_git push -q origin main)
  stack_git -C "$DEV" rev-parse HEAD
}

# Brings everything down and removes the stack's images.
stack_destroy() {
  [[ -n ${APP:-} && -d $APP ]] && stack_compose down -t 2 >/dev/null 2>&1
  docker image ls --format '{{.Repository}}:{{.Tag}}' | grep "^${PROJECT}[-_]\(web\|base\):" |
    xargs -r docker image rm >/dev/null 2>&1 || true
}
