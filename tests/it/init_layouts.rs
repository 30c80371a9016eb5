//! `stablehand init` on checkouts shaped like real apps, with the real compose tool:
//! the config it writes is used UNEDITED by `doctor` and by real deploys (exit 0), and a
//! broken release is rolled back (exit 11). Four layouts:
//!
//! 1. the proposal's: a development and a production compose file (the deploy workflow
//!    names the production one), credentials from a `.env` on the server only, nginx in
//!    front, the backend with `expose` only and a compose healthcheck, Prisma under
//!    `backend/`;
//! 2. a single `compose.yaml` whose app answers on the host with a healthcheck URL;
//! 3. base + production override run by the workflow, DB credentials in an `env_file`
//!    with `POSTGRES_PASSWORD_FILE`;
//! 4. a monorepo: `apps/api/prisma`, a production-named file, the user and database
//!    from `POSTGRES_USER_FILE` / `POSTGRES_DB_FILE` secrets.
//!
//! All traffic stays on 127.0.0.1: services use host networking, and the backend that
//! only the compose network reaches in production runs with `network_mode: none` here
//! (its healthcheck runs inside its own network namespace; it reaches PostgreSQL through
//! the server's unix socket). Images are built from the busybox test image, each with a
//! layer of its own after FROM, and removed on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    busybox_image, docker_available, free_port, git, postgres_ids, psql_at,
    remove_image_repository, unique, wait_for, PG_BIN,
};

/// The app's entrypoint: applies `prisma/migrations/*/migration.sql` (recorded in
/// `_prisma_migrations` as `prisma migrate deploy` records them) when there are any,
/// exits when the release is broken (a crash loop, as a backend that cannot start), and
/// serves `www/`.
const START_SH: &str = r#"#!/bin/sh
set -e
if [ -d /app/prisma/migrations ]; then
  P="psql -X -q -v ON_ERROR_STOP=1"
  $P -c "create table if not exists _prisma_migrations (id varchar(36) primary key, checksum varchar(64) not null, finished_at timestamptz, migration_name varchar(255) not null, logs text, rolled_back_at timestamptz, started_at timestamptz not null default now(), applied_steps_count integer not null default 0)"
  for dir in /app/prisma/migrations/*/; do
    [ -f "$dir/migration.sql" ] || continue
    name=$(basename "$dir")
    applied=$($P -At -c "select count(*) from _prisma_migrations where migration_name = '$name' and finished_at is not null and rolled_back_at is null")
    if [ "$applied" = "0" ]; then
      sum=$(sha256sum "$dir/migration.sql" | cut -d ' ' -f 1)
      $P -1 -f "$dir/migration.sql" -c "insert into _prisma_migrations (id, checksum, migration_name, finished_at, applied_steps_count) values ('$(cat /proc/sys/kernel/random/uuid)', '$sum', '$name', now(), 1)"
    fi
  done
fi
if [ -f /app/BROKEN ]; then echo "this release cannot start" >&2; exit 1; fi
exec httpd -f -p "$WEB_PORT" -h /app/www
"#;

const SCHEMA: &str =
    "datasource db {\n  provider = \"postgresql\"\n  url      = env(\"DATABASE_URL\")\n}\n";

/// A checkout of one layout: `remote.git`, `dev/` (where releases are made), the server's
/// work tree (named after the compose project, so Compose's default name is unique) and
/// `pgdata/` beside them.
struct Checkout {
    root: tempfile::TempDir,
    name: String,
    /// The compose files the server runs (for setup and teardown).
    files: Vec<String>,
    /// Built services (their image repositories are removed on drop).
    built: Vec<String>,
    /// Build contexts, relative to the repository (each gets start.sh and www/).
    contexts: Vec<String>,
    db_port: u16,
}

impl Checkout {
    /// A repository with `files` (`@BUSYBOX@`, `@PG_UID@`, `@PG_GID@`, `@DB_PORT@` and
    /// `@PG@` filled in: `@PG@` is the PostgreSQL service's common part) committed and
    /// pushed, cloned as the server's work tree; `server_files` are written there only
    /// (not in git). None when Docker is missing outside CI.
    fn new(
        tag: &str,
        files: &[(&str, &str)],
        server_files: &[(&str, &str)],
        contexts: &[&str],
        compose_files: &[&str],
        built: &[&str],
    ) -> Option<Checkout> {
        if !docker_available() {
            return None;
        }
        let image = busybox_image();
        let root = tempfile::Builder::new()
            .prefix("stablehand-layout")
            .tempdir()
            .unwrap();
        let c = Checkout {
            name: unique(tag).replace('_', ""),
            root,
            files: compose_files.iter().map(|s| s.to_string()).collect(),
            built: built.iter().map(|s| s.to_string()).collect(),
            contexts: contexts.iter().map(|s| s.to_string()).collect(),
            db_port: free_port(),
        };
        let r = c.root.path();
        let (uid, gid) = postgres_ids();
        fs::create_dir(r.join("pgdata")).unwrap();
        nix::unistd::chown(&r.join("pgdata"), Some(uid.into()), Some(gid.into())).unwrap();
        git(r, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
        git(r, &["clone", "-q", "remote.git", "dev"]);
        let pg = format!(
            r#"    image: {image}
    network_mode: host
    user: "{uid}:{gid}"
    volumes: ["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro", "/etc/passwd:/etc/passwd:ro", "/etc/group:/etc/group:ro", "../pgdata:/pgdata"]
    command: ["/bin/sh", "-c", "U=$${{POSTGRES_USER:-$$(cat \"$$POSTGRES_USER_FILE\")}}; [ -f /pgdata/PG_VERSION ] || initdb -D /pgdata -U \"$$U\" --auth=trust >/dev/null; exec postgres -D /pgdata -p {db} -k /pgdata -c listen_addresses=127.0.0.1"]"#,
            db = c.db_port
        );
        let fill = |text: &str| {
            text.replace("@PG@", &pg)
                .replace("@BUSYBOX@", image)
                .replace("@PG_UID@", &uid.to_string())
                .replace("@PG_GID@", &gid.to_string())
                .replace("@DB_PORT@", &c.db_port.to_string())
        };
        for (path, text) in files {
            c.write(path, &fill(text));
        }
        c.write(
            ".gitignore",
            ".env\nsecrets/\nbackups/\n.stablehand/\nstablehand.toml\n",
        );
        for ctx in contexts {
            let at = |f: &str| {
                if ctx.is_empty() {
                    f.to_string()
                } else {
                    format!("{ctx}/{f}")
                }
            };
            c.write(
                &at("Dockerfile"),
                &format!("FROM {image}\nCOPY stack-id.txt /stack-id.txt\nCOPY . /app/\nCMD [\"/bin/sh\", \"/app/start.sh\"]\n"),
            );
            c.write(&at("stack-id.txt"), &format!("{}/{ctx}\n", c.name));
            c.write(&at(".dockerignore"), "backups\n.stablehand\n.git\n");
            c.write(&at("start.sh"), START_SH);
            c.write(&at("www/index.html"), "<h1>app</h1>\n");
        }
        c.commit("v1");
        git(r, &["clone", "-q", "remote.git", &c.name]);
        for (path, text) in server_files {
            let p = c.app().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, fill(text)).unwrap();
        }
        Some(c)
    }

    fn dev(&self) -> PathBuf {
        self.root.path().join("dev")
    }

    fn app(&self) -> PathBuf {
        self.root.path().join(&self.name)
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.dev().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// Commits everything in dev/ (each build context gets a changed www/version, so
    /// every release builds distinct images) and pushes; returns the sha.
    fn commit(&self, message: &str) -> String {
        for ctx in &self.contexts {
            let at = if ctx.is_empty() {
                "www/version".to_string()
            } else {
                format!("{ctx}/www/version")
            };
            self.write(&at, &format!("{message}\n"));
        }
        let dev = self.dev();
        git(&dev, &["add", "-A"]);
        git(&dev, &["commit", "-q", "-m", message]);
        git(&dev, &["push", "-q", "origin", "main"]);
        git(&dev, &["rev-parse", "HEAD"])
    }

    /// The next release cannot start (its backend exits: a crash loop).
    fn break_release(&self, context: &str) {
        let at = if context.is_empty() {
            "BROKEN".to_string()
        } else {
            format!("{context}/BROKEN")
        };
        self.write(&at, "yes\n");
    }

    /// docker-compose with the server's files, in the server's work tree.
    fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        for f in &self.files {
            c.args(["-f", f]);
        }
        c.args(args)
            .current_dir(self.app())
            .env_remove("COMPOSE_PROJECT_NAME")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Runs docker-compose with the server's files, asserting success.
    fn compose_ok(&self, args: &[&str]) {
        let out = self
            .compose(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the database `service` and creates the app's database as its user.
    fn start_database(&self, service: &str, user: &str, db: &str) {
        self.compose_ok(&["up", "-d", service]);
        wait_for(Duration::from_secs(90), || {
            Command::new(format!("{PG_BIN}/pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.db_port.to_string()])
                .status()
                .unwrap()
                .success()
                .then_some(())
        })
        .expect("PostgreSQL in the compose service became ready");
        psql_at(
            self.db_port,
            user,
            "postgres",
            &format!("create database {db}"),
        );
        psql_at(
            self.db_port,
            user,
            db,
            "create table customers (id serial primary key, name text); insert into customers (name) select 'c' || g from generate_series(1, 50) g",
        );
    }

    fn stablehand(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_stablehand"))
            .args(args)
            .current_dir(self.app())
            .env_remove("STABLEHAND_CONFIG")
            .env_remove("DATABASE_URL")
            .env_remove("COMPOSE_PROJECT_NAME")
            .env_remove("COMPOSE_FILE")
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_STEP_SUMMARY")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `stablehand init`: its output and the config it wrote, which must load.
    fn init(&self) -> (String, String, stablehand::config::Config) {
        let (code, out, err) = self.stablehand(&["init"]);
        assert_eq!(code, 0, "init failed: {out}\n{err}");
        let text = fs::read_to_string(self.app().join("stablehand.toml")).unwrap();
        let config = stablehand::config::parse(&text, Path::new("stablehand.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        (out, text, config)
    }

    /// `stablehand --json doctor [--config C]`: exit code and (check, status, detail).
    fn doctor(&self, config: Option<&str>) -> (i32, Vec<(String, String, String)>) {
        let mut args = vec!["--json", "doctor"];
        if let Some(c) = config {
            args.extend(["--config", c]);
        }
        let (code, out, err) = self.stablehand(&args);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
        let findings = crate::doctor::findings(&v);
        (code, findings)
    }

    fn deploy(&self) -> (i32, serde_json::Value) {
        let (code, out, err) = self.stablehand(&["--json", "deploy"]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
        (code, v)
    }

    fn head(&self) -> String {
        git(&self.app(), &["rev-parse", "HEAD"])
    }

    /// The deploy with the config init wrote: v1 deployed (0), then a broken `next`
    /// release rolled back to it (11); returns the rollback's outcome.
    fn deploy_then_roll_back(&self, next: impl FnOnce(&Checkout)) -> serde_json::Value {
        let (code, v) = self.deploy();
        assert_eq!(code, 0, "the first deploy with init's config: {v:#}");
        assert_eq!(v["outcome"], "deployed", "{v:#}");
        let v1 = self.head();
        next(self);
        let v2 = self.commit("v2: broken");
        let (code, v) = self.deploy();
        assert_eq!(code, 11, "the broken release is rolled back: {v:#}");
        assert_eq!(v["rollback"]["failed_commit"], v2, "{v:#}");
        assert_eq!(self.head(), v1, "the code is v1's again");
        v
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-t", "2"]).status();
        for service in &self.built {
            remove_image_repository(&format!("{}_{service}", self.name));
        }
    }
}

fn status_of<'a>(findings: &'a [(String, String, String)], check: &str) -> (&'a str, &'a str) {
    findings
        .iter()
        .find(|(c, _, _)| c == check)
        .map(|(_, s, d)| (s.as_str(), d.as_str()))
        .unwrap_or_else(|| panic!("no {check} in {findings:#?}"))
}

const LAYOUT1_PROD: &str = r#"version: "3.8"
services:
  postgres:
@PG@
    restart: unless-stopped
    environment:
      PATH: /usr/lib/postgresql/15/bin:/bin
      PGHOST: /pgdata
      PGPORT: "@DB_PORT@"
      POSTGRES_USER: ${POSTGRES_USER}
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}
      POSTGRES_DB: ${POSTGRES_DB}
  backend:
    build: ./backend
    # Production: the default compose network, reached only by nginx. Here: a network
    # namespace of its own, which the host cannot reach either.
    network_mode: none
    expose: ["3000"]
    restart: unless-stopped
    init: true
    environment:
      PATH: /usr/lib/postgresql/15/bin:/bin
      WEB_PORT: "3000"
      PGHOST: /pgsock
      PGPORT: "@DB_PORT@"
      PGUSER: ${POSTGRES_USER}
      PGDATABASE: ${POSTGRES_DB}
    volumes: ["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro", "../pgdata:/pgsock"]
    healthcheck:
      test: ["CMD", "wget", "--spider", "-q", "http://127.0.0.1:3000/api/v1/health"]
      interval: 1s
      timeout: 2s
      retries: 3
  frontend:
    build: ./frontend
    network_mode: host
    restart: unless-stopped
    init: true
    environment:
      WEB_PORT: "${FRONTEND_PORT}"
      PORT: "${FRONTEND_PORT}"
  nginx:
    image: @BUSYBOX@
    network_mode: host
    restart: unless-stopped
    command: ["httpd", "-f", "-p", "127.0.0.1:${NGINX_PORT}", "-h", "/etc"]
"#;

const LAYOUT1_DEV: &str = r#"version: "3.8"
services:
  postgres:
@PG@
    environment:
      PGHOST: /pgdata
      POSTGRES_USER: ${POSTGRES_USER}
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}
      POSTGRES_DB: ${POSTGRES_DB}
  backend:
    build: ./backend
    network_mode: host
    volumes: ["./backend:/app"]
    environment:
      WEB_PORT: "3000"
  frontend:
    build: ./frontend
    network_mode: host
    volumes: ["./frontend:/app"]
    environment:
      PORT: "5173"
"#;

const LAYOUT1_WORKFLOW: &str = r#"name: deploy
on:
  push:
    branches: [main]
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - run: |
          ssh "$USER@$HOST" "cd /srv/charhub && git pull && \
            docker-compose -f docker-compose.production.yml up -d --build"
"#;

#[test]
fn the_proposal_layout_production_file_env_credentials_expose_only_backend_prisma_in_backend() {
    let front = free_port();
    let nginx = free_port();
    let env = format!(
        "POSTGRES_USER=charhub\nPOSTGRES_PASSWORD=test-only-dummy\nPOSTGRES_DB=charhub_db\nFRONTEND_PORT={front}\nNGINX_PORT={nginx}\n"
    );
    let Some(c) = Checkout::new(
        "shlay1",
        &[
            ("docker-compose.production.yml", LAYOUT1_PROD),
            ("docker-compose.yml", LAYOUT1_DEV),
            (".github/workflows/deploy.yml", LAYOUT1_WORKFLOW),
            ("backend/prisma/schema.prisma", SCHEMA),
            (
                "backend/prisma/migrations/001_init/migration.sql",
                "create table characters (id serial primary key, name text not null);\n",
            ),
            ("backend/www/api/v1/health", "ok\n"),
        ],
        &[(".env", &env)],
        &["backend", "frontend"],
        &["docker-compose.production.yml"],
        &["backend", "frontend"],
    ) else {
        return;
    };
    c.start_database("postgres", "charhub", "charhub_db");
    // Production already runs (stablehand is adopted on a live server).
    c.compose_ok(&["up", "-d", "--build"]);

    let (out, text, cfg) = c.init();
    assert!(
        out.contains("compose files: docker-compose.production.yml (the workflow .github/workflows/deploy.yml runs compose -f docker-compose.production.yml)"),
        "{out}"
    );
    assert!(
        out.contains("also here, not used: docker-compose.yml"),
        "{out}"
    );
    assert!(out.contains("`docker-compose config`"), "{out}");
    assert_eq!(
        cfg.runtime.files,
        [PathBuf::from("docker-compose.production.yml")]
    );
    assert_eq!(cfg.database.service, "postgres");
    assert_eq!(
        cfg.database.user, "charhub",
        "from .env, through Compose\n{text}"
    );
    assert_eq!(cfg.database.name.as_deref(), Some("charhub_db"));
    assert_eq!(cfg.database.migrations, "prisma");
    assert_eq!(
        cfg.database.migrations_dir,
        Path::new("backend/prisma/migrations")
    );
    assert_eq!(cfg.health.containers, ["backend", "frontend"]);
    // The backend is reachable only inside its network: gated on its healthcheck. No URL
    // is guessed from the frontend's or nginx's port.
    assert!(cfg.health.http.is_empty(), "{text}");
    assert!(
        out.contains("backend: Docker's health status from its healthcheck, no HTTP probe"),
        "{out}"
    );
    assert!(!text.contains(&format!("127.0.0.1:{nginx}")), "{text}");
    assert!(
        !text.contains("test-only-dummy"),
        "no secret is copied\n{text}"
    );

    wait_for(Duration::from_secs(60), || {
        (psql_at(c.db_port, "charhub", "charhub_db", "select to_regclass('_prisma_migrations') is not null and exists (select from _prisma_migrations where migration_name = '001_init')") == "t").then_some(())
    })
    .expect("the running backend applied its migration");
    let (code, f) = c.doctor(None);
    assert_eq!(code, 0, "{f:#?}");
    for check in [
        "compose files",
        "database user",
        "database name",
        "migrations dir",
    ] {
        assert_eq!(status_of(&f, check).0, "ok", "{check}: {f:#?}");
    }

    // What doctor says of the config the old init wrote for this layout.
    let bad = text
        .replace(
            "files = [\"docker-compose.production.yml\"]",
            "files = [\"docker-compose.yml\"]",
        )
        .replace("user = \"charhub\"", "user = \"postgres\"")
        .replace("backend/prisma/migrations", "prisma/migrations")
        .replace(
            "\n[database]",
            &format!("[[health.http]]\nurl = \"http://127.0.0.1:{front}/health\"\n\n[database]"),
        );
    fs::write(c.app().join("old-init.toml"), bad).unwrap();
    let (code, f) = c.doctor(Some("old-init.toml"));
    assert_eq!(code, 1, "{f:#?}");
    let (status, detail) = status_of(&f, "compose files");
    assert_eq!(status, "fail", "{f:#?}");
    assert!(detail.contains("docker-compose.production.yml"), "{detail}");
    let (status, detail) = status_of(&f, "database user");
    assert_eq!(status, "fail", "{f:#?}");
    assert!(
        detail.contains("user charhub"),
        "the service's own user is named: {detail}"
    );
    let (status, detail) = status_of(&f, &format!("health http://127.0.0.1:{front}/health"));
    assert_eq!(status, "fail", "{f:#?}");
    assert!(detail.contains("404"), "{detail}");
    fs::remove_file(c.app().join("old-init.toml")).unwrap();

    // Deploys with init's config as written; a broken release that applied a migration
    // is rolled back, the database by the down.sql found in backend/prisma/migrations.
    let v = c.deploy_then_roll_back(|c| {
        c.write(
            "backend/prisma/migrations/002_quotes/migration.sql",
            "create table quotes (id serial primary key, body text);\n",
        );
        c.write(
            "backend/prisma/migrations/002_quotes/down.sql",
            "drop table quotes;\n",
        );
        c.break_release("backend");
    });
    assert_eq!(v["rollback"]["db"]["action"], "down", "{v:#}");
    assert_eq!(
        psql_at(
            c.db_port,
            "charhub",
            "charhub_db",
            "select to_regclass('quotes') is null"
        ),
        "t"
    );
}

const LAYOUT2: &str = r#"services:
  db:
@PG@
    environment:
      PATH: /usr/lib/postgresql/15/bin:/bin
      PGHOST: /pgdata
      PGPORT: "@DB_PORT@"
      POSTGRES_USER: ${DB_USER:-shop}
      POSTGRES_PASSWORD: ${DB_PASSWORD:-test-only-dummy}
  web:
    build: .
    network_mode: host
    restart: unless-stopped
    init: true
    environment:
      WEB_PORT: "${WEB_PORT:-8080}"
    healthcheck:
      test: ["CMD", "wget", "-q", "--spider", "http://localhost:${WEB_PORT:-8080}/health"]
      interval: 1s
      retries: 3
"#;

#[test]
fn a_single_compose_yaml_whose_app_answers_on_the_host() {
    let web = free_port();
    let Some(c) = Checkout::new(
        "shlay2",
        &[("compose.yaml", LAYOUT2), ("www/health", "ok\n")],
        &[(".env", &format!("WEB_PORT={web}\n"))],
        &[""],
        &["compose.yaml"],
        &["web"],
    ) else {
        return;
    };
    c.start_database("db", "shop", "shop");
    let (out, text, cfg) = c.init();
    assert!(
        out.contains("compose files: compose.yaml (Compose's default file"),
        "{out}"
    );
    assert_eq!(cfg.runtime.files, [PathBuf::from("compose.yaml")]);
    assert_eq!(cfg.database.service, "db");
    assert_eq!(cfg.database.user, "shop", "${{DB_USER:-shop}}\n{text}");
    assert_eq!(
        cfg.database.name.as_deref(),
        Some("shop"),
        "POSTGRES_DB defaults to the user"
    );
    assert_eq!(cfg.database.migrations, "none");
    assert_eq!(cfg.health.http.len(), 1, "{text}");
    assert_eq!(
        cfg.health.http[0].url,
        format!("http://127.0.0.1:{web}/health")
    );
    assert_eq!(cfg.health.containers, ["web"]);

    // The app is not running yet: its URL is a warning, not a block.
    let (code, f) = c.doctor(None);
    assert_eq!(code, 0, "{f:#?}");
    assert_eq!(
        status_of(&f, &format!("health http://127.0.0.1:{web}/health")).0,
        "warn"
    );
    assert_eq!(status_of(&f, "compose files").0, "ok", "{f:#?}");
    assert_eq!(status_of(&f, "database name").0, "ok", "{f:#?}");

    let v = c.deploy_then_roll_back(|c| c.break_release(""));
    assert_eq!(v["rollback"]["db"]["action"], "none", "{v:#}");
}

const LAYOUT3_BASE: &str = r#"services:
  postgres:
@PG@
    env_file: ./db.env
    environment:
      PATH: /usr/lib/postgresql/15/bin:/bin
      PGHOST: /pgdata
      PGPORT: "@DB_PORT@"
    secrets: [db_password]
  app:
    build: .
    network_mode: host
    init: true
    environment:
      PATH: /usr/lib/postgresql/15/bin:/bin
      PGHOST: 127.0.0.1
      PGPORT: "@DB_PORT@"
      PGUSER: ledger
      PGDATABASE: ledger_prod
      WEB_PORT: "${APP_PORT}"
    volumes: ["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro"]
secrets:
  db_password:
    file: ./secrets/db_password
"#;

const LAYOUT3_PROD: &str = r#"services:
  app:
    restart: unless-stopped
    healthcheck:
      test: ["CMD-SHELL", "wget -qO- http://127.0.0.1:${APP_PORT}/health | grep -q ok"]
      interval: 1s
      retries: 3
"#;

const LAYOUT3_WORKFLOW: &str = r#"name: release
on: [workflow_dispatch]
jobs:
  ship:
    runs-on: ubuntu-latest
    steps:
      - run: docker compose -f docker-compose.yml -f docker-compose.prod.yml config -q
      - run: ssh deploy@server 'cd /srv/ledger && docker compose -f docker-compose.yml -f docker-compose.prod.yml up -d --build'
"#;

#[test]
fn credentials_in_an_env_file_with_a_password_file_and_a_production_override() {
    let port = free_port();
    let Some(c) = Checkout::new(
        "shlay3",
        &[
            ("docker-compose.yml", LAYOUT3_BASE),
            ("docker-compose.prod.yml", LAYOUT3_PROD),
            (".github/workflows/release.yml", LAYOUT3_WORKFLOW),
            ("prisma/schema.prisma", SCHEMA),
            (
                "prisma/migrations/20240101000000_init/migration.sql",
                "create table entries (id serial primary key, amount int);\n",
            ),
            ("www/health", "ok\n"),
        ],
        &[
            (
                "db.env",
                "POSTGRES_USER=ledger\nPOSTGRES_DB=ledger_prod\nPOSTGRES_PASSWORD_FILE=/run/secrets/db_password\n",
            ),
            ("secrets/db_password", "test-only-dummy\n"),
            (".env", &format!("APP_PORT={port}\n")),
        ],
        &[""],
        &["docker-compose.yml", "docker-compose.prod.yml"],
        &["app"],
    ) else {
        return;
    };
    fs::set_permissions(
        c.app().join("secrets/db_password"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    c.start_database("postgres", "ledger", "ledger_prod");
    let (out, text, cfg) = c.init();
    assert!(out.contains("the workflow .github/workflows/release.yml runs compose -f docker-compose.yml -f docker-compose.prod.yml"), "{out}");
    assert_eq!(
        cfg.runtime.files,
        [
            PathBuf::from("docker-compose.yml"),
            PathBuf::from("docker-compose.prod.yml")
        ]
    );
    assert_eq!(cfg.database.user, "ledger", "from env_file\n{text}");
    assert_eq!(cfg.database.name.as_deref(), Some("ledger_prod"));
    assert_eq!(cfg.database.migrations_dir, Path::new("prisma/migrations"));
    assert_eq!(
        cfg.health.http.len(),
        1,
        "the override's healthcheck counts\n{text}"
    );
    assert_eq!(
        cfg.health.http[0].url,
        format!("http://127.0.0.1:{port}/health")
    );
    assert!(!text.contains("test-only-dummy"), "{text}");

    let (code, f) = c.doctor(None);
    assert_eq!(code, 0, "{f:#?}");
    assert_eq!(status_of(&f, "database user").0, "ok", "{f:#?}");
    let v = c.deploy_then_roll_back(|c| c.break_release(""));
    assert_eq!(v["outcome"], "rolled_back", "{v:#}");
}

const LAYOUT4_PROD: &str = r#"services:
  postgres:
@PG@
    restart: unless-stopped
    environment:
      PATH: /usr/lib/postgresql/15/bin:/bin
      PGHOST: /pgdata
      PGPORT: "@DB_PORT@"
      POSTGRES_USER_FILE: /run/secrets/pg_user
      POSTGRES_DB_FILE: /run/secrets/pg_db
      POSTGRES_PASSWORD_FILE: /run/secrets/pg_password
    secrets: [pg_user, pg_db, pg_password]
  api:
    build: ./apps/api
    network_mode: host
    restart: unless-stopped
    init: true
    environment:
      PATH: /usr/lib/postgresql/15/bin:/bin
      PGHOST: 127.0.0.1
      PGPORT: "@DB_PORT@"
      PGUSER: mono
      PGDATABASE: mono_api
      WEB_PORT: "${API_PORT}"
    volumes: ["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro"]
    healthcheck:
      test: ["CMD", "wget", "-q", "--spider", "http://127.0.0.1:${API_PORT}/health"]
      interval: 1s
      retries: 3
  web:
    build: ./apps/web
    network_mode: host
    restart: unless-stopped
    init: true
    environment:
      WEB_PORT: "${WEB_PORT}"
secrets:
  pg_user:
    file: ./secrets/pg_user
  pg_db:
    file: ./secrets/pg_db
  pg_password:
    file: ./secrets/pg_password
"#;

const LAYOUT4_DEV: &str = r#"services:
  postgres:
    image: postgres:16
    ports: ["5432:5432"]
    environment:
      POSTGRES_USER: dev
      POSTGRES_PASSWORD: dev
  api:
    build: ./apps/api
    ports: ["3000:3000"]
    volumes: ["./apps/api:/app"]
"#;

#[test]
fn a_monorepo_with_apps_api_prisma_and_file_secrets() {
    let (api, web) = (free_port(), free_port());
    let Some(c) = Checkout::new(
        "shlay4",
        &[
            ("compose.prod.yaml", LAYOUT4_PROD),
            ("compose.yaml", LAYOUT4_DEV),
            (
                "package.json",
                "{\"private\": true, \"workspaces\": [\"apps/*\"]}\n",
            ),
            ("apps/api/prisma/schema.prisma", SCHEMA),
            (
                "apps/api/prisma/migrations/001_init/migration.sql",
                "create table orders (id serial primary key, total int);\n",
            ),
            ("apps/api/www/health", "ok\n"),
            // A schema of a tool that is not a compose service: not the app's.
            ("apps/admin/prisma/schema.prisma", SCHEMA),
        ],
        &[
            ("secrets/pg_user", "mono\n"),
            ("secrets/pg_db", "mono_api\n"),
            ("secrets/pg_password", "test-only-dummy\n"),
            (".env", &format!("API_PORT={api}\nWEB_PORT={web}\n")),
        ],
        &["apps/api", "apps/web"],
        &["compose.prod.yaml"],
        &["api", "web"],
    ) else {
        return;
    };
    for f in ["pg_user", "pg_db", "pg_password"] {
        fs::set_permissions(
            c.app().join("secrets").join(f),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    }
    c.start_database("postgres", "mono", "mono_api");
    let (out, text, cfg) = c.init();
    assert!(
        out.contains("compose files: compose.prod.yaml (its name says production"),
        "{out}"
    );
    assert!(out.contains("also here, not used: compose.yaml"), "{out}");
    assert_eq!(cfg.runtime.files, [PathBuf::from("compose.prod.yaml")]);
    assert_eq!(
        cfg.database.user, "mono",
        "POSTGRES_USER_FILE, read at its host path\n{text}"
    );
    assert_eq!(cfg.database.name.as_deref(), Some("mono_api"));
    assert!(text.contains("POSTGRES_USER_FILE"), "{text}");
    assert_eq!(
        cfg.database.migrations_dir,
        Path::new("apps/api/prisma/migrations")
    );
    assert!(
        text.contains("apps/admin/prisma/schema.prisma"),
        "the other schema is named\n{text}"
    );
    assert_eq!(cfg.health.http.len(), 1, "{text}");
    assert_eq!(
        cfg.health.http[0].url,
        format!("http://127.0.0.1:{api}/health")
    );
    assert_eq!(cfg.health.containers, ["api", "web"]);
    assert!(!text.contains("test-only-dummy"), "{text}");

    let (code, f) = c.doctor(None);
    assert_eq!(code, 0, "{f:#?}");
    let v = c.deploy_then_roll_back(|c| {
        c.write(
            "apps/api/prisma/migrations/002_refunds/migration.sql",
            "create table refunds (id serial primary key, order_id int);\n",
        );
        c.write(
            "apps/api/prisma/migrations/002_refunds/down.sql",
            "drop table refunds;\n",
        );
        c.break_release("apps/api");
    });
    assert_eq!(v["rollback"]["db"]["action"], "down", "{v:#}");
}
