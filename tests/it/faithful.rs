//! Restores faithful to the live database (issue 15, points 1-3 and 7), against real
//! PostgreSQL: the shapes real schemas have (partitions, `"Order Items"`, a second
//! schema, an enum, pgcrypto, a serial that must go on, a materialized view), the
//! owner, grants, ACL and settings an app role depends on, the database named
//! `postgres`, and names that need percent-encoding in a URL.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use predicates::prelude::*;

use crate::require_pg;
use crate::support::{free_port, unique, App, Pg, PG_BIN};

/// The shapes of a real app's schema, with rows. `{role}` is the app's own role.
fn real_schema(role: &str) -> String {
    format!(
        r#"
create extension pgcrypto;
create type order_status as enum ('new', 'paid', 'shipped');
create schema billing;
create table billing.invoices (id serial primary key, amount numeric not null, token bytea default gen_random_bytes(8));
insert into billing.invoices (amount) select g from generate_series(1, 30) g;
create table events (id bigserial, at date not null, body text) partition by range (at);
create table events_2025 partition of events for values from ('2025-01-01') to ('2026-01-01');
create table events_2026 partition of events for values from ('2026-01-01') to ('2027-01-01');
insert into events (at, body) select date '2025-06-01' + (g % 400), 'event ' || g from generate_series(1, 500) g;
create table "Order Items" (id serial primary key, status order_status not null default 'new', "Quantity" int);
insert into "Order Items" ("Quantity") select g from generate_series(1, 40) g;
create materialized view event_days as select at, count(*) as n from events group by at;
create role {role} login;
grant usage on schema billing to {role};
grant select, insert on billing.invoices, "Order Items" to {role};
grant usage on billing.invoices_id_seq, "Order Items_id_seq" to {role};
grant select on events, event_days to {role};
alter default privileges in schema billing grant select on tables to {role};
"#
    )
}

/// Rows per table, as the library counts them.
fn counts(app: &App, id: &str) -> serde_json::Value {
    app.json(&["restore", id, "--yes"])["tables"].clone()
}

#[test]
fn a_restore_gives_back_partitions_quoted_names_schemas_enums_extensions_and_sequences() {
    let pg = require_pg!();
    let db = pg.create_db("shapes");
    let role = unique("app_rw");
    pg.psql(&db, &real_schema(&role));
    let app = App::direct(&pg.url(&db), "");
    let id = app.backup();
    // A restore test (scratch database) passes on these shapes.
    let v = app.json(&["backup", "verify", &id, "--restore-test"]);
    assert_eq!(v[0]["ok"], true, "{v:#}");
    pg.psql(
        &db,
        "delete from \"Order Items\"; delete from events; drop table billing.invoices;",
    );

    let tables = counts(&app, &id);
    assert_eq!(tables["public.Order Items"], 40, "{tables:#}");
    assert_eq!(tables["billing.invoices"], 30, "{tables:#}");
    // Partitions are counted where the rows are (the partitioned parent holds none).
    assert_eq!(
        tables["public.events_2025"].as_u64().unwrap()
            + tables["public.events_2026"].as_u64().unwrap(),
        500,
        "{tables:#}"
    );
    assert!(tables.get("public.events").is_none(), "{tables:#}");
    // The app works on the restored database: the serial goes on, the enum and the
    // extension are there, the materialized view has its rows.
    assert_eq!(
        pg.psql(
            &db,
            "insert into \"Order Items\" (status, \"Quantity\") values ('paid', 1) returning id"
        ),
        "41"
    );
    assert_eq!(
        pg.psql(
            &db,
            "insert into billing.invoices (amount) values (1) returning id, length(token)"
        ),
        "31|8"
    );
    assert_eq!(pg.psql(&db, "select count(*) from event_days"), "400");
    assert_eq!(pg.psql(&db, "select count(*) from only events"), "0");
    assert_eq!(pg.psql(&db, "select count(*) from events"), "500");
    // The app's own role keeps its grants (object ACLs are restored).
    let as_app = |sql: &str| psql_as(pg, &role, &db, sql);
    assert_eq!(
        as_app("select count(*) from billing.invoices").unwrap(),
        "31"
    );
    assert!(as_app("insert into \"Order Items\" (\"Quantity\") values (2)").is_ok());
    assert!(
        as_app("delete from billing.invoices").is_err(),
        "no more than it had"
    );
    pg.psql("postgres", &format!("drop database {db}"));
    drop_kept(pg, &db);
    pg.psql(
        "postgres",
        &format!("drop owned by {role}; drop role {role}"),
    );
}

/// Runs SQL connected as `role` (trust authentication in the test cluster).
fn psql_as(pg: &Pg, role: &str, db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(format!("{PG_BIN}/psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg(format!(
            "--dbname=postgresql://{role}@127.0.0.1:{}/{db}",
            pg.port
        ))
        .args(["-c", sql])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Drops the databases a test kept beside `db` (replaced ones).
fn drop_kept(pg: &Pg, db: &str) {
    let names = pg.psql(
        "postgres",
        &format!("select coalesce(string_agg(datname, ' '), '') from pg_database where datname like '{db}\\_\\_%'"),
    );
    for name in names.split_whitespace() {
        pg.psql(
            "postgres",
            &format!("drop database \"{name}\" with (force)"),
        );
    }
}

/// The database's owner, ACL and settings (and the role settings in it), as text.
fn properties(pg: &Pg, db: &str) -> String {
    pg.psql(
        "postgres",
        &format!(
            "select pg_get_userbyid(d.datdba) || ' ' || coalesce(d.datacl::text, 'default') || ' ' || d.datconnlimit || ' ' || \
             coalesce((select string_agg(coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '-') || ':' || s.setconfig::text, ' ' order by s.setrole) \
                       from pg_db_role_setting s where s.setdatabase = d.oid), '') \
             from pg_database d where d.datname = '{db}'"
        ),
    )
}

#[test]
fn owner_acl_and_settings_survive_a_swap_and_a_snapshot_and_connect_stays_revoked() {
    let pg = require_pg!();
    let db = pg.create_db("acl");
    let (owner, app_rw, outsider) = (unique("app_owner"), unique("app_rw"), unique("outsider"));
    pg.psql(
        "postgres",
        &format!(
            "create role {owner} login; create role {app_rw} login; create role {outsider} login;
             alter database {db} owner to {owner};
             revoke connect, temporary on database {db} from public;
             grant connect on database {db} to {app_rw};
             alter database {db} set work_mem = '17MB';
             alter database {db} set search_path = app, \"Other Schema\", public;
             alter role {app_rw} in database {db} set statement_timeout = '7s';"
        ),
    );
    pg.psql(
        &db,
        &format!(
            "set role {owner}; create schema app; create table app.items (id serial primary key, name text);
             insert into app.items (name) select 'item ' || g from generate_series(1, 50) g;
             grant usage on schema app to {app_rw}; grant select, insert on app.items to {app_rw};
             grant usage on sequence app.items_id_seq to {app_rw};"
        ),
    );
    let before = properties(pg, &db);
    assert!(before.contains("17MB") && before.contains("7s"), "{before}");
    let app = App::direct(&pg.url(&db), "");
    let id = app.backup();
    pg.psql(&db, "delete from app.items");

    let v = app.json(&["restore", &id, "--yes"]);
    assert_eq!(v["tables"]["app.items"], 50, "{v:#}");
    assert_eq!(
        properties(pg, &db),
        before,
        "owner, ACL, settings and role settings"
    );
    // The objects keep their owner, and the app role its grants and settings.
    assert_eq!(
        pg.psql(
            &db,
            "select tableowner from pg_tables where tablename = 'items'"
        ),
        owner
    );
    assert_eq!(
        psql_as(
            pg,
            &app_rw,
            &db,
            "insert into app.items (name) values ('x') returning id"
        )
        .unwrap(),
        "51"
    );
    assert_eq!(
        psql_as(pg, &app_rw, &db, "show statement_timeout").unwrap(),
        "7s"
    );
    // CONNECT is still revoked from PUBLIC: the outsider stays out.
    let refused = psql_as(pg, &outsider, &db, "select 1").unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");

    // A snapshot carries the same properties, so swapping back to it changes none.
    let snap_db = stablehand_db(&pg.url(&db));
    let snap = snap_db.snapshot("t1").unwrap();
    assert_eq!(
        properties(pg, &snap).replace(&snap, &db),
        before,
        "the snapshot's owner, ACL and settings"
    );
    snap_db.swap_to_snapshot(&snap).unwrap();
    assert_eq!(
        properties(pg, &db),
        before,
        "after the swap to the snapshot"
    );

    pg.psql("postgres", &format!("drop database {db}"));
    drop_kept(pg, &db);
    for role in [&owner, &app_rw, &outsider] {
        pg.psql(
            "postgres",
            &format!("drop owned by {role} cascade; drop role {role}"),
        );
    }
}

/// Direct-mode database access through the library.
fn stablehand_db(url: &str) -> stablehand::db::Database {
    let config = stablehand::config::parse(
        &format!("[database]\nmode = \"direct\"\nurl_env = \"STABLEHAND_TEST_NEVER_SET\"\nurl = {url:?}\n"),
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    stablehand::db::Database::from_config(&stablehand::config::Loaded {
        config,
        path: "t.toml".into(),
        app_dir: ".".into(),
    })
    .unwrap()
}

#[test]
fn a_non_superuser_owner_restores_faithfully_and_is_refused_what_it_cannot_reproduce() {
    let pg = require_pg!();
    let db = pg.create_db("nonsuper");
    let (stablehand, app_rw) = (unique("sh_owner"), unique("app_rw"));
    pg.psql(
        "postgres",
        &format!(
            "create role {stablehand} login createdb; create role {app_rw} login;
             alter database {db} owner to {stablehand};
             revoke connect on database {db} from public; grant connect on database {db} to {app_rw};"
        ),
    );
    pg.psql(
        &db,
        &format!(
            "set role {stablehand}; create table items (id serial primary key, name text);
             insert into items (name) select 'item ' || g from generate_series(1, 20) g;
             grant select on items to {app_rw};"
        ),
    );
    let url = format!("postgresql://{stablehand}@127.0.0.1:{}/{db}", pg.port);
    let app = App::direct(&url, "");
    let id = app.backup();
    pg.psql(&db, "delete from items");
    // The owner restores its own database: grants and the revoked CONNECT come back.
    let v = app.json(&["restore", &id, "--yes"]);
    assert_eq!(v["tables"]["public.items"], 20, "{v:#}");
    assert_eq!(
        psql_as(pg, &app_rw, &db, "select count(*) from items").unwrap(),
        "20"
    );
    assert_eq!(
        stablehand_db(&url).faithful_copy_problems().unwrap(),
        Vec::<String>::new()
    );
    assert!(
        properties(pg, &db).contains(&format!("{app_rw}=c/{stablehand}")),
        "{}",
        properties(pg, &db)
    );

    // A setting for another role in this database is beyond a role without CREATEROLE:
    // the restore is refused before any database is created, saying why.
    pg.psql(
        "postgres",
        &format!("alter role {app_rw} in database {db} set work_mem = '9MB'"),
    );
    let side_before = side_count(pg, &db);
    app.cmd()
        .args(["restore", &id, "--yes"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("cannot make a faithful copy")
                .and(predicate::str::contains(&app_rw))
                .and(predicate::str::contains("nothing was created or changed")),
        );
    assert_eq!(side_count(pg, &db), side_before, "nothing was created");
    // The deploy preflight and doctor see the same from the live database.
    let problems = stablehand_db(&url).faithful_copy_problems().unwrap();
    assert!(problems.iter().any(|p| p.contains(&app_rw)), "{problems:?}");
    assert_eq!(pg.psql(&db, "select count(*) from items"), "20");

    pg.psql("postgres", &format!("drop database {db}"));
    drop_kept(pg, &db);
    for role in [&stablehand, &app_rw] {
        pg.psql(
            "postgres",
            &format!("drop owned by {role} cascade; drop role {role}"),
        );
    }
}

fn side_count(pg: &Pg, db: &str) -> usize {
    pg.psql(
        "postgres",
        &format!("select count(*) from pg_database where datname like '{db}\\_\\_%'"),
    )
    .parse()
    .unwrap()
}

#[test]
fn a_database_whose_name_needs_percent_encoding_is_restored_under_its_real_name() {
    let pg = require_pg!();
    let name = format!("my app {}", unique("x"));
    pg.psql("postgres", &format!("create database \"{name}\""));
    pg.psql(
        &name.replace(' ', "%20"),
        "create table t (id int); insert into t select generate_series(1, 5)",
    );
    let url = pg.url(&name.replace(' ', "%20"));
    let app = App::direct(&url, "");
    let v = app.json(&["backup"]);
    assert_eq!(v["backup"]["database"]["name"], name.as_str(), "{v:#}");
    let id = v["backup"]["id"].as_str().unwrap().to_string();
    let v = app.json(&["restore", &id, "--yes"]);
    assert_eq!(v["database"], name.as_str());
    assert_eq!(v["tables"]["public.t"], 5);
    let kept = v["kept_as"].as_str().unwrap();
    assert!(kept.starts_with(&format!("{name}__pre_restore_")), "{kept}");
    pg.psql("postgres", &format!("drop database \"{name}\""));
    pg.psql("postgres", &format!("drop database \"{kept}\""));
}

/// A PostgreSQL cluster of the test's own (its `postgres` database can be swapped
/// without disturbing the shared cluster's other users); stopped and removed on drop.
struct OwnCluster {
    port: u16,
    dir: PathBuf,
}

impl OwnCluster {
    fn start() -> OwnCluster {
        let dir = std::env::temp_dir().join(unique("stablehand-own-pg"));
        fs::create_dir_all(&dir).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
        }
        let as_pg = |program: &str| {
            let mut c = if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--", program]);
                c
            } else {
                Command::new(program)
            };
            c.stdout(Stdio::null());
            c
        };
        let data = dir.join("data");
        assert!(as_pg(&format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-N"])
            .status()
            .unwrap()
            .success());
        let port = free_port();
        assert!(as_pg(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                dir.display()
            ))
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "start"])
            .status()
            .unwrap()
            .success());
        OwnCluster { port, dir }
    }

    fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        crate::support::psql_at(self.port, "postgres", db, sql)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let mut stop = if nix::unistd::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")]);
            c
        } else {
            Command::new(format!("{PG_BIN}/pg_ctl"))
        };
        let _ = stop
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_database_named_postgres_is_restored_snapshotted_and_swapped_from_template1() {
    let _ = require_pg!();
    let cluster = OwnCluster::start();
    cluster.psql(
        "postgres",
        "create table items (id serial primary key, name text); insert into items (name) select 'i' || g from generate_series(1, 30) g;",
    );
    let app = App::direct(&cluster.url("postgres"), "");
    let id = app.backup();
    cluster.psql("postgres", "delete from items");
    let v = app.json(&["restore", &id, "--yes"]);
    assert_eq!(v["database"], "postgres");
    assert_eq!(v["tables"]["public.items"], 30, "{v:#}");
    assert_eq!(cluster.psql("postgres", "select count(*) from items"), "30");
    assert!(v["kept_as"]
        .as_str()
        .unwrap()
        .starts_with("postgres__pre_restore_"));
    // A restore test and a snapshot swap work too.
    let v = app.json(&["backup", "verify", &id, "--restore-test"]);
    assert_eq!(v[0]["ok"], true, "{v:#}");
    let db = stablehand_db(&cluster.url("postgres"));
    assert_eq!(db.maintenance_db, "template1");
    let snap = db.snapshot("t1").unwrap();
    cluster.psql("postgres", "delete from items");
    db.swap_to_snapshot(&snap).unwrap();
    assert_eq!(cluster.psql("postgres", "select count(*) from items"), "30");
    // Naming the live database as the maintenance database is a clear config error.
    app.edit_config(|c| format!("{c}maintenance_db = \"postgres\"\n"));
    app.cmd()
        .args(["restore", &id, "--yes"])
        .assert()
        .code(78)
        .stderr(
            predicate::str::contains("database.maintenance_db")
                .and(predicate::str::contains("template1")),
        );
}

#[test]
fn the_table_of_contents_is_read_field_by_field() {
    let pg = require_pg!();
    let db = pg.create_db("toc");
    let role = unique("app_rw");
    pg.psql(&db, &real_schema(&role));
    let dump = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(format!("{PG_BIN}/pg_dump"))
        .args(["-Fc", "-Z0", "-f"])
        .arg(dump.path())
        .arg(pg.url(&db))
        .status()
        .unwrap();
    assert!(status.success());
    let toc = stablehand::backup::toc::read(std::io::BufReader::new(
        fs::File::open(dump.path()).unwrap(),
    ))
    .unwrap();
    let listing = Command::new(format!("{PG_BIN}/pg_restore"))
        .arg("-l")
        .arg(dump.path())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let entries = listing
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .count();
    // pg_restore lists every entry but the ones it handles itself (the session's
    // encoding, standard_conforming_strings and search_path, and the database itself,
    // which it lists only with --create).
    let special = ["ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE"];
    let listed: Vec<_> = toc
        .entries
        .iter()
        .filter(|e| !special.contains(&e.desc.as_str()))
        .collect();
    assert_eq!(listed.len(), entries, "as many entries as pg_restore lists");
    assert_eq!(toc.database.as_deref(), Some(db.as_str()));
    let mut tables = toc.tables();
    tables.sort();
    let expected: Vec<(String, String)> = [
        ("billing", "invoices"),
        ("public", "Order Items"),
        ("public", "events"),
        ("public", "events_2025"),
        ("public", "events_2026"),
    ]
    .iter()
    .map(|(s, t)| (s.to_string(), t.to_string()))
    .collect();
    assert_eq!(tables, expected);
    for e in listed {
        let line = format!(
            "{} {} {}",
            e.desc,
            e.namespace.as_deref().unwrap_or("-"),
            e.tag
        );
        assert!(listing.contains(&line), "{line:?} in\n{listing}");
    }
    assert_eq!(toc.owners(), vec!["postgres".to_string()]);
    // A truncated archive is an error, not a shorter table of contents.
    let bytes = fs::read(dump.path()).unwrap();
    assert!(stablehand::backup::toc::read(&bytes[..200]).is_err());
    pg.psql("postgres", &format!("drop database {db}"));
    pg.psql(
        "postgres",
        &format!("drop owned by {role}; drop role {role}"),
    );
}
