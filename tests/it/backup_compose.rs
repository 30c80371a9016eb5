//! Compose mode against PostgreSQL running in a compose service on a real Docker engine:
//! the tools run inside the service (`compose exec -T`), exactly the proposal's setup.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use predicates::prelude::*;

use crate::support::{
    busybox_image, children_named, docker_available, free_port, postgres_ids, unique, wait_for,
    App, Session, TableLock, PG_BIN,
};

/// A compose project running PostgreSQL; brought down on drop.
struct Stack {
    app: App,
    project: String,
    port: u16,
}

impl Stack {
    fn up() -> Option<Stack> {
        if !docker_available() {
            return None;
        }
        let image = busybox_image();
        let port = free_port();
        let project = unique("shtest").replace('_', "");
        let app = App::new(&format!(
            "[runtime]\nproject = \"{project}\"\n\n[database]\nmode = \"compose\"\nservice = \"postgres\"\nuser = \"app\"\nname = \"appdb\"\n"
        ));
        let (uid, gid) = postgres_ids();
        let pgdata = app.path().join("pgdata");
        fs::create_dir(&pgdata).unwrap();
        nix::unistd::chown(&pgdata, Some(uid.into()), Some(gid.into())).unwrap();
        fs::write(
            app.path().join("docker-compose.yml"),
            format!(
                r#"version: "2.4"
services:
  postgres:
    image: {image}
    network_mode: host
    user: "{uid}:{gid}"
    environment:
      PATH: /usr/lib/postgresql/15/bin:/bin
      PGHOST: /pgdata
      PGPORT: "{port}"
    volumes:
      - /usr:/usr:ro
      - /lib:/lib:ro
      - /lib64:/lib64:ro
      - /etc/passwd:/etc/passwd:ro
      - /etc/group:/etc/group:ro
      - ./pgdata:/pgdata
    command: ["/bin/sh", "-c", "[ -f /pgdata/PG_VERSION ] || initdb -D /pgdata -U app --auth=trust >/dev/null; exec postgres -D /pgdata -p {port} -k /pgdata -c listen_addresses=127.0.0.1"]
"#
            ),
        )
        .unwrap();
        let stack = Stack { app, project, port };
        let status = stack.compose(&["up", "-d"]).status().unwrap();
        assert!(status.success(), "compose up");
        wait_for(Duration::from_secs(90), || {
            Command::new(format!("{PG_BIN}/pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .unwrap()
                .success()
                .then_some(())
        })
        .expect("PostgreSQL in the compose service became ready");
        Some(stack)
    }

    fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        c.args(["-p", &self.project])
            .args(args)
            .current_dir(self.app.path());
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        crate::support::psql_at(self.port, "app", db, sql)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-t", "2"]).status();
    }
}

fn has_file(dir: &Path, suffix: &str) -> bool {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(suffix))
        })
        .unwrap_or(false)
}

/// A compose stack with database `appdb` holding 3000 items.
fn stack_with_data() -> Option<Stack> {
    let stack = Stack::up()?;
    stack.psql("postgres", "create database appdb");
    stack.psql(
        "appdb",
        "create table items (id serial primary key, name text);
         insert into items (name) select 'item ' || g from generate_series(1, 3000) g;",
    );
    Some(stack)
}

#[test]
fn compose_mode_backs_up_and_verifies_inside_the_service() {
    let Some(stack) = stack_with_data() else {
        return;
    };
    let app = &stack.app;
    let v = app.json(&["backup", "--label", "pre-deploy"]);
    assert_eq!(v["backup"]["database"]["mode"], "compose");
    assert_eq!(v["backup"]["database"]["name"], "appdb");
    assert!(v["backup"]["tools"]["pg_dump"]
        .as_str()
        .unwrap()
        .starts_with("15."));
    assert!(v["backup"]["verification"]["toc_entries"].as_u64().unwrap() >= 3);
    assert!(has_file(&app.backup_dir(), ".dump.zst"));

    let verified = app.json(&["backup", "verify", "--all"]);
    assert_eq!(verified[0]["ok"], true, "{verified}");

    // A stall inside the container: pg_dump waits for a lock. At the timeout, the
    // killed `compose exec` client must not leave pg_dump running in the container.
    let before = app.backup_files();
    let mut config = fs::read_to_string(app.path().join("stablehand.toml")).unwrap();
    config.push_str("\n[backup]\ntimeout = \"3s\"\n");
    fs::write(app.path().join("stablehand.toml"), config).unwrap();
    stack.psql(
        "appdb",
        "create table plain (v text); insert into plain values ('x')",
    );
    let locker = TableLock::hold(
        &format!("postgresql://app@127.0.0.1:{}/appdb", stack.port),
        "plain",
    );
    app.cmd()
        .arg("backup")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "did not finish within 3s and was killed",
        ));
    let dump_in_container = || {
        fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("pg_dump") && cmd.contains("appdb") && cmd.contains("--format=custom")
        })
    };
    let gone = wait_for(Duration::from_secs(15), || {
        (!dump_in_container()).then_some(())
    });
    let sessions = stack.psql(
        "postgres",
        "select count(*) from pg_stat_activity where application_name like 'stablehand%'",
    );
    drop(locker);
    assert!(
        gone.is_some(),
        "pg_dump kept running inside the container after the timeout"
    );
    assert_eq!(sessions, "0");
    assert_eq!(app.backup_files(), before);

    // With the service stopped, the backup fails clearly and leaves nothing new.
    assert!(stack
        .compose(&["stop", "-t", "2"])
        .status()
        .unwrap()
        .success());
    app.cmd()
        .arg("backup")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("backup failed at stage preflight"))
        .stderr(predicate::str::contains("cannot reach the database"));
    assert_eq!(app.backup_files(), before);
}

#[test]
fn compose_mode_restores_and_restore_tests_inside_the_service() {
    let Some(stack) = stack_with_data() else {
        return;
    };
    let app = &stack.app;
    let v = app.json(&["backup"]);
    // Restore in compose mode: the tools run in the service, the backup streams in.
    let id = v["backup"]["id"].as_str().unwrap().to_string();
    stack.psql(
        "appdb",
        "delete from items where id <= 100; create table later (x int)",
    );
    let damaged_dir = app.backup_dir().join(format!("{id}.dump.zst"));
    let original = fs::read(&damaged_dir).unwrap();
    fs::write(&damaged_dir, &original[..original.len() - 10]).unwrap();
    app.cmd()
        .args(["restore", &id, "--yes"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is damaged and was refused"));
    assert_eq!(stack.psql("appdb", "select count(*) from items"), "2900");
    // Same size, one byte changed: refused as well.
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    fs::write(&damaged_dir, &flipped).unwrap();
    app.cmd()
        .args(["restore", &id, "--yes"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is damaged and was refused"));
    fs::write(&damaged_dir, &original).unwrap();

    // A good backup of another database (a second app in the same stack) is refused.
    stack.psql("postgres", "create database otherdb");
    let other = app.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(
        other.join("stablehand.toml"),
        format!(
            "[runtime]\nproject = \"{}\"\nfiles = [\"../docker-compose.yml\"]\n\n[database]\nmode = \"compose\"\nuser = \"app\"\nname = \"otherdb\"\n\n[backup]\ndir = \"../backups/database\"\n",
            stack.project
        ),
    )
    .unwrap();
    app.cmd()
        .current_dir(&other)
        .args(["restore", &id, "--yes"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "is of database \"appdb\", not \"otherdb\"",
        ));
    assert_eq!(
        stack.psql(
            "postgres",
            "select count(*) from pg_database where datname like 'otherdb%'"
        ),
        "1"
    );
    assert_eq!(stack.psql("appdb", "select count(*) from items"), "2900");
    let restored = app.json(&["restore", &id, "--yes"]);
    assert_eq!(restored["tables"]["public.items"], 3000, "{restored}");
    assert!(restored["swap_ms"].as_u64().unwrap() < 1000);
    assert_eq!(stack.psql("appdb", "select count(*) from items"), "3000");
    assert_eq!(
        stack.psql(
            "appdb",
            "select count(*) from pg_tables where tablename = 'later'"
        ),
        "0"
    );
    let kept = restored["kept_as"].as_str().unwrap();
    assert_eq!(stack.psql(kept, "select count(*) from items"), "2900");
    let tested = app.json(&["backup", "verify", "--restore-test", &id]);
    assert_eq!(tested[0]["ok"], true, "{tested}");
    assert_eq!(tested[0]["rows"], 3000);
    assert_eq!(
        stack.psql(
            "postgres",
            "select count(*) from pg_database where datname like 'appdb\\_\\_%'"
        ),
        "1",
        "only the kept database remains beside the live one"
    );

    // The database primitives in compose mode, through the library.
    let loaded = stablehand::config::load(&app.path().join("stablehand.toml")).unwrap();
    let db = stablehand::db::Database::from_config(&loaded).unwrap();
    assert_eq!(
        db.schema_fingerprint().unwrap(),
        v["backup"]["schema_fingerprint"].as_str().unwrap(),
        "after the restore the schema is the backup's again"
    );
    assert!(db.migration_ledger().unwrap().rows.is_empty());
    assert!(db
        .write_counters()
        .unwrap()
        .per_table
        .contains_key("public.items"));
    let snapshot = db.snapshot("t1").unwrap();
    stack.psql("appdb", "delete from items where id <= 5");
    let (replaced, took) = db.swap_to_snapshot(&snapshot).unwrap();
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    assert_eq!(stack.psql("appdb", "select count(*) from items"), "3000");
    assert_eq!(stack.psql(&replaced, "select count(*) from items"), "2995");
    db.drop_side_database(&replaced).unwrap();

    // The official image's default database, `postgres`, with an app role whose grants
    // and CONNECT (revoked from PUBLIC) must survive: restored, tested and snapshotted
    // from template1, in compose mode too.
    stack.psql(
        "postgres",
        "create role app_rw login; create role outsider login;
         create table accounts (id serial primary key, name text);
         insert into accounts (name) select 'a' || g from generate_series(1, 25) g;
         grant select on accounts to app_rw;
         revoke connect on database postgres from public; grant connect on database postgres to app_rw, app;",
    );
    app.edit_config(|c| c.replace("name = \"appdb\"", "name = \"postgres\""));
    let id = app.backup();
    stack.psql("postgres", "delete from accounts");
    let restored = app.json(&["restore", &id, "--yes"]);
    assert_eq!(restored["tables"]["public.accounts"], 25, "{restored}");
    assert!(restored["kept_as"]
        .as_str()
        .unwrap()
        .starts_with("postgres__pre_restore_"));
    assert_eq!(
        crate::support::psql_at(
            stack.port,
            "app_rw",
            "postgres",
            "select count(*) from accounts"
        ),
        "25"
    );
    let outsider = Command::new(format!("{PG_BIN}/psql"))
        .arg(format!(
            "--dbname=postgresql://outsider@127.0.0.1:{}/postgres",
            stack.port
        ))
        .args(["-c", "select 1"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&outsider.stderr).contains("permission denied"),
        "CONNECT stays revoked from PUBLIC"
    );
    let tested = app.json(&["backup", "verify", "--restore-test", &id]);
    assert_eq!(tested[0]["ok"], true, "{tested}");
    let loaded = stablehand::config::load(&app.path().join("stablehand.toml")).unwrap();
    let db = stablehand::db::Database::from_config(&loaded).unwrap();
    assert_eq!(db.maintenance_db, "template1");
    let snapshot = db.snapshot("t2").unwrap();
    stack.psql("postgres", "delete from accounts");
    db.swap_to_snapshot(&snapshot).unwrap();
    assert_eq!(
        stack.psql("postgres", "select count(*) from accounts"),
        "25"
    );
}

/// The database a non-superuser owns in the stack, with ~45 MB of rows, and an app
/// config that uses that role (so that a superuser session is beyond its reach).
fn owner_app(stack: &Stack) -> String {
    stack.psql("postgres", "create role owner login createdb");
    stack.psql("postgres", "create database ownerdb owner owner");
    let url = format!("postgresql://owner@127.0.0.1:{}/ownerdb", stack.port);
    let out = Command::new(format!("{PG_BIN}/psql"))
        .arg(format!("--dbname={url}"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "create table big (id bigint primary key, a text);
             insert into big select g, repeat(md5(g::text), 3) from generate_series(1, 150000) g;",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(
        stack.app.path().join("stablehand.toml"),
        format!(
            "[runtime]\nproject = \"{}\"\n\n[database]\nmode = \"compose\"\nuser = \"owner\"\nname = \"ownerdb\"\n",
            stack.project
        ),
    )
    .unwrap();
    url
}

fn side_databases(stack: &Stack) -> String {
    stack.psql(
        "postgres",
        "select coalesce(string_agg(datname, ','), '') from pg_database where datname like 'ownerdb\\_\\_%'",
    )
}

#[test]
fn compose_mode_interrupted_restores_and_failing_swaps_leave_the_live_database() {
    let Some(stack) = Stack::up() else { return };
    let url = owner_app(&stack);
    let app = &stack.app;
    let id = app.backup();
    stack.psql("ownerdb", "delete from big where id <= 10");
    let live = crate::restore::state(&url);

    // 1. The exec client feeding pg_restore is killed mid-restore.
    let start = |app: &App| {
        let child = app
            .std_cmd()
            .args(["restore", &id, "--yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let parent = child.id();
        let exec = wait_for(Duration::from_secs(60), || {
            // The exec client: `docker exec` into the service's container (or
            // `docker-compose exec` when the container was not found).
            let mut clients = children_named(parent, "docker");
            clients.extend(children_named(parent, "docker-compose"));
            let pid = clients.into_iter().find(|pid| {
                let argv = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&argv).contains("--exit-on-error")
            })?;
            let busy = stack.psql(
                "postgres",
                "select count(*) from pg_stat_activity where datname like 'ownerdb\\_\\_restore\\_%' and state = 'active'",
            );
            (busy != "0").then_some(pid)
        })
        .expect("pg_restore started restoring");
        (child, exec)
    };
    let (child, exec) = start(app);
    crate::support::kill9(exec);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the half-restored database"), "{stderr}");
    assert_eq!(crate::restore::state(&url), live);
    let gone = wait_for(Duration::from_secs(20), || {
        side_databases(&stack).is_empty().then_some(())
    });
    assert!(gone.is_some(), "stray: {}", side_databases(&stack));

    // 2. stablehand itself is killed mid-restore: the live database is untouched, and
    //    the next restore drops the leftover and finishes.
    let (mut child, _) = start(app);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(crate::restore::state(&url), live);
    let restored = app.json(&["restore", &id, "--yes"]);
    assert_eq!(
        restored["leftovers_dropped"].as_array().unwrap().len(),
        1,
        "{restored}"
    );
    assert_eq!(stack.psql("ownerdb", "select count(*) from big"), "150000");
    let kept = restored["kept_as"].as_str().unwrap().to_string();
    app.cmd()
        .args(["db", "drop-kept", &kept, "--yes"])
        .assert()
        .success();
    stack.psql("ownerdb", "delete from big where id <= 10");
    let live = crate::restore::state(&url);

    // 3. A superuser session the owner cannot end makes the swap fail: nothing changes.
    let holder = Session::sleeping(
        &format!("postgresql://app@127.0.0.1:{}/ownerdb", stack.port),
        "superuser-holder",
    );
    let out = app.cmd().args(["restore", &id, "--yes"]).output().unwrap();
    drop(holder);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the live database ownerdb was not changed"),
        "{stderr}"
    );
    assert_eq!(crate::restore::state(&url), live);
    assert_eq!(side_databases(&stack), "");
}
