//! Restore against real PostgreSQL (direct mode; compose mode is in backup_compose.rs):
//! the swap keeps the old database; damaged, foreign or interrupted restores and a
//! failing swap leave the live database exactly as it was and no stray database.

use sha2::Digest;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use predicates::prelude::*;
use stablehand::db::Database;

use crate::require_pg;
use crate::support::{children_named, unique, wait_for, App, Pg, Session, PG_BIN};

/// The live database's schema fingerprint and row counts, read through the library.
pub(crate) fn state(url: &str) -> (String, BTreeMap<String, u64>) {
    let db = database(url);
    (
        db.schema_fingerprint().unwrap(),
        db.table_row_counts().unwrap(),
    )
}

fn database(url: &str) -> Database {
    let config = stablehand::config::parse(
        &format!("[database]\nmode = \"direct\"\nurl_env = \"STABLEHAND_TEST_NEVER_SET\"\nurl = {url:?}\n"),
        Path::new("t.toml"),
    )
    .unwrap();
    Database::from_config(&stablehand::config::Loaded {
        config,
        path: "t.toml".into(),
        app_dir: ".".into(),
    })
    .unwrap()
}

/// Names of databases beside `db` (kept, snapshots, leftovers).
fn side_databases(pg: &Pg, db: &str) -> Vec<String> {
    let out = pg.psql(
        "postgres",
        &format!("select coalesce(string_agg(datname, ',' order by datname), '') from pg_database where datname like '{db}\\_\\_%'"),
    );
    out.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn backup(app: &App) -> String {
    app.backup()
}

#[test]
fn swap_restore_brings_back_the_backup_and_keeps_the_replaced_database() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(
        &pg.url(&db),
        "\n[runtime]\nstop = \"echo stopped >> events.log\"\nstart = \"echo started >> events.log\"\n",
    );
    let before = state(&pg.url(&db));
    let id = backup(&app);
    pg.psql(&db, "delete from notes where id <= 100; create table added_later (x int); insert into added_later values (1);");
    let changed = state(&pg.url(&db));
    assert_ne!(changed, before);

    let v = app.json(&["restore", &id, "--yes"]);
    assert_eq!(v["method"], "swap");
    assert_eq!(v["app_stopped"], true);
    assert_eq!(
        std::fs::read_to_string(app.path().join("events.log")).unwrap(),
        "stopped\nstarted\n",
        "the app is stopped for the swap and started again"
    );
    assert!(v["swap_ms"].as_u64().unwrap() < 1000, "{v}");
    assert_eq!(v["tables"]["public.notes"], 20000);
    assert_eq!(
        state(&pg.url(&db)),
        before,
        "the live database is the backup again"
    );
    let kept = v["kept_as"].as_str().unwrap().to_string();
    assert!(kept.starts_with(&format!("{db}__pre_restore_")), "{kept}");
    assert_eq!(
        state(&pg.url(&kept)),
        changed,
        "the replaced database is kept as it was"
    );
    assert_eq!(side_databases(pg, &db), vec![kept.clone()]);
    // The manifest's fingerprint is the live one again.
    let m = app.json(&["backup", "show", &id]);
    assert_eq!(m["schema_fingerprint"].as_str().unwrap(), before.0);

    app.cmd()
        .args(["backup", "list", "--databases"])
        .assert()
        .success()
        .stdout(predicate::str::contains(&kept))
        .stdout(predicate::str::contains("replaced"));
    app.cmd().args(["db", "drop-kept", &kept]).assert().code(2);
    app.cmd()
        .args(["db", "drop-kept", &db, "--yes"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing was dropped"));
    app.cmd()
        .args(["db", "drop-kept", &kept, "--yes"])
        .assert()
        .success();
    assert!(side_databases(pg, &db).is_empty());
}

#[test]
fn kept_databases_are_pruned_to_keep_replaced_databases() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "keep_replaced_databases = 1\n");
    // The premise: a backup whose transaction horizon is past every row of the database,
    // so the replaced copy holds no writes that backup lacks and may be pruned. The
    // horizon is the cluster's oldest running transaction, and another test's long one
    // on this shared cluster can hold it back before these rows (the copy is then kept,
    // rightly): back up again until the horizon is past them.
    let rows_done: u64 = pg.psql(&db, "select txid_current()").parse().unwrap();
    let mut id = backup(&app);
    for _ in 0..40 {
        let manifest = app.backup_dir().join(format!("{id}.manifest.json"));
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        if m["xid_horizon"].as_u64().unwrap_or(0) > rows_done {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        id = backup(&app);
    }
    let first = app.json(&["restore", &id, "--yes"])["kept_as"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let second = app.json(&["restore", &id, "--yes"]);
    assert_eq!(second["replaced_dropped"][0], first.as_str());
    assert_eq!(
        side_databases(pg, &db),
        vec![second["kept_as"].as_str().unwrap().to_string()]
    );
}

#[test]
fn damaged_or_foreign_backups_are_refused_before_anything_is_touched() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "");
    let id = backup(&app);
    pg.psql(
        &db,
        "insert into users (email) values ('after-backup@example.test')",
    );
    let live = state(&pg.url(&db));
    let data = app.backup_dir().join(format!("{id}.dump.zst"));
    let original = std::fs::read(&data).unwrap();

    // Truncated.
    std::fs::write(&data, &original[..original.len() / 2]).unwrap();
    app.cmd()
        .args(["restore", &id, "--yes"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is damaged and was refused"))
        .stderr(predicate::str::contains("size mismatch"));
    // Same size, one byte changed.
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    std::fs::write(&data, &flipped).unwrap();
    app.cmd()
        .args(["restore", &id, "--yes"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is damaged and was refused"));
    assert_eq!(state(&pg.url(&db)), live);
    assert!(side_databases(pg, &db).is_empty());

    // A good backup of another database.
    std::fs::write(&data, &original).unwrap();
    let other = pg.sample_db();
    let other_app = App::direct(
        &pg.url(&other),
        &format!("[backup]\ndir = {:?}\n", app.backup_dir()),
    );
    let other_live = state(&pg.url(&other));
    other_app
        .cmd()
        .args(["restore", &id, "--yes"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "is of database \"{db}\", not \"{other}\""
        )))
        .stderr(predicate::str::contains("--target-db"));
    assert_eq!(state(&pg.url(&other)), other_live);
    assert!(side_databases(pg, &other).is_empty());

    // ... which --target-db restores into a new database, leaving the live one alone.
    let copy = unique("copy");
    let v = other_app.json(&["restore", &id, "--target-db", &copy]);
    assert_eq!(v["restored_into"], copy.as_str());
    assert_eq!(pg.psql(&copy, "select count(*) from users"), "5000");
    assert_eq!(state(&pg.url(&other)), other_live);
}

/// Starts a restore and returns it with the pid of its pg_restore once rows flow.
pub(crate) fn restore_in_flight(
    app: &App,
    id: &str,
    pg: &Pg,
    db: &str,
) -> (std::process::Child, u32) {
    let child = app
        .std_cmd()
        .args(["restore", id, "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let parent = child.id();
    let restoring = wait_for(Duration::from_secs(60), || {
        let pid = children_named(parent, "pg_restore").into_iter().find(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&argv).contains("--exit-on-error")
        })?;
        // Wait until the restore database has data flowing in.
        let busy = pg.psql(
            "postgres",
            &format!("select count(*) from pg_stat_activity where datname like '{db}\\_\\_restore\\_%' and state = 'active'"),
        );
        (busy != "0").then_some(pid)
    })
    .expect("pg_restore started restoring");
    (child, restoring)
}

fn big_db(pg: &Pg) -> String {
    let db = pg.create_db("bigrestore");
    pg.psql(
        &db,
        "create table big (id bigint primary key, a text, b text);
         insert into big select g, md5(g::text) || md5((g+1)::text), repeat(md5(g::text), 2) from generate_series(1, 600000) g;
         create index big_a on big (a);",
    );
    db
}

#[test]
fn a_killed_pg_restore_leaves_the_live_database_and_no_stray_database() {
    let pg = require_pg!();
    let db = big_db(pg);
    let app = App::direct(&pg.url(&db), "");
    let id = backup(&app);
    pg.psql(&db, "delete from big where id <= 10");
    let live = state(&pg.url(&db));

    let (child, pg_restore) = restore_in_flight(&app, &id, pg, &db);
    crate::support::kill9(pg_restore);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was killed by signal 9"), "{stderr}");
    assert!(stderr.contains("the half-restored database"), "{stderr}");
    assert!(stderr.contains("was dropped"), "{stderr}");
    assert_eq!(state(&pg.url(&db)), live);
    assert!(
        side_databases(pg, &db).is_empty(),
        "{:?}",
        side_databases(pg, &db)
    );
    let leftovers: Vec<String> = app
        .backup_files()
        .into_iter()
        .filter(|f| f.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_killed_stablehand_leaves_the_live_database_and_the_next_restore_cleans_up() {
    let pg = require_pg!();
    let db = big_db(pg);
    let app = App::direct(&pg.url(&db), "");
    let id = backup(&app);
    pg.psql(&db, "delete from big where id <= 10");
    let live = state(&pg.url(&db));

    let (mut child, pg_restore) = restore_in_flight(&app, &id, pg, &db);
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    // Its pg_restore dies with it (it must not go on restoring unattended).
    let gone = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pg_restore}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
            .then_some(())
    });
    assert!(gone.is_some(), "pg_restore outlived the killed stablehand");
    assert_eq!(state(&pg.url(&db)), live, "the live database is untouched");
    let stray = side_databases(pg, &db);
    assert_eq!(stray.len(), 1, "{stray:?}");
    app.cmd()
        .args(["backup", "list", "--databases"])
        .assert()
        .success()
        .stdout(predicate::str::contains("leftover"));

    // The next restore drops the leftover, says so, and finishes the job.
    let v = app.json(&["restore", &id, "--yes"]);
    assert_eq!(v["leftovers_dropped"][0], stray[0].as_str());
    assert_eq!(
        side_databases(pg, &db),
        vec![v["kept_as"].as_str().unwrap().to_string()]
    );
    assert_eq!(pg.psql(&db, "select count(*) from big"), "600000");
}

#[test]
fn a_failing_swap_leaves_the_live_database_and_drops_the_restored_copy() {
    let pg = require_pg!();
    // The app's owner role may create databases but cannot end a superuser's session.
    let owner = unique("owner");
    pg.psql("postgres", &format!("create role {owner} login createdb"));
    let db = unique("swapfail");
    pg.psql("postgres", &format!("create database {db} owner {owner}"));
    let url = format!("postgresql://{owner}@127.0.0.1:{}/{db}", pg.port);
    Command::new(format!("{PG_BIN}/psql"))
        .arg(format!("--dbname={url}"))
        .args(["-X", "-q", "-c", "create table t (id int primary key, v text); insert into t select g, 'v' || g from generate_series(1, 1000) g;"])
        .status()
        .unwrap();
    let app = App::direct(&url, "");
    let id = backup(&app);
    pg.psql(&db, "delete from t where id <= 10");
    let live = state(&pg.url(&db));

    // A superuser session on the live database that the owner cannot end.
    let holder = Session::sleeping(&pg.url(&db), "superuser-holder");
    let out = app.cmd().args(["restore", &id, "--yes"]).output().unwrap();
    drop(holder);

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("the live database {db} was not changed")),
        "{stderr}"
    );
    assert!(
        stderr.contains("superuser-holder"),
        "the error names who is connected: {stderr}"
    );
    assert_eq!(state(&pg.url(&db)), live);
    assert!(
        side_databases(pg, &db).is_empty(),
        "{:?}",
        side_databases(pg, &db)
    );
}

#[test]
fn confirmation_is_asked_on_a_terminal_and_a_wrong_answer_changes_nothing() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "");
    let id = backup(&app);
    pg.psql(&db, "delete from notes where id <= 5");
    let live = state(&pg.url(&db));

    // No terminal and no --yes: refused (exit 2).
    app.cmd()
        .args(["restore", &id])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("pass --yes"));
    // Without an id: the list, exit 2.
    app.cmd()
        .arg("restore")
        .assert()
        .code(2)
        .stdout(predicate::str::contains(&id))
        .stderr(predicate::str::contains("restore needs a backup id"));

    // A real pseudo-terminal (script(1)), answered through it.
    let on_terminal = |answer: &str| {
        let bin = assert_cmd::cargo::cargo_bin("stablehand");
        let mut child = Command::new("script")
            .args([
                "-qec",
                &format!("{} restore {id}", bin.display()),
                "/dev/null",
            ])
            .current_dir(app.path())
            .env("DATABASE_URL", pg.url(&db))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(Duration::from_millis(700));
        stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, screen) = on_terminal("not-the-name");
    // A confirmation refused is a usage error (2), as for rollback and migrate down.
    assert_eq!(code, Some(2), "{screen}");
    assert!(
        screen.contains("Type the database name to continue"),
        "{screen}"
    );
    assert!(screen.contains("nothing was changed"), "{screen}");
    assert_eq!(state(&pg.url(&db)), live);
    assert!(side_databases(pg, &db).is_empty());

    let (code, screen) = on_terminal(&db);
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("swapped in within"), "{screen}");
    assert_eq!(pg.psql(&db, "select count(*) from notes"), "20000");
}

#[test]
fn restore_test_restores_checks_drops_and_records() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "");
    let id = backup(&app);
    let live = state(&pg.url(&db));
    let v = app.json(&["backup", "verify", "--restore-test", "--latest"]);
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["tables"], 2);
    assert_eq!(v[0]["rows"], 25000);
    let m = app.json(&["backup", "show", &id]);
    assert_eq!(m["verification"]["method"], "restore-test");
    assert_eq!(m["verification"]["rows"], 25000);
    assert!(side_databases(pg, &db).is_empty());
    assert_eq!(state(&pg.url(&db)), live);
}

#[test]
fn in_place_restore_warns_that_newer_objects_remain() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "");
    let id = backup(&app);
    pg.psql(
        &db,
        "delete from notes where id <= 5; create table newer (x int)",
    );
    let out = app
        .cmd()
        .args(["--json", "restore", &id, "--in-place", "--yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["warning"]
        .as_str()
        .unwrap()
        .contains("objects created after the backup"));
    // Invariant 1: the state it overwrote was backed up first.
    let safety = v["safety_backup"].as_str().unwrap().to_string();
    assert!(safety.starts_with("pre-restore_"), "{v}");
    let m = app.json(&["backup", "show", &safety]);
    assert_eq!(m["database"]["name"], db.as_str());
    assert_eq!(pg.psql(&db, "select count(*) from notes"), "20000");
    assert_eq!(
        pg.psql(
            &db,
            "select count(*) from pg_tables where tablename = 'newer'"
        ),
        "1"
    );
    assert!(side_databases(pg, &db).is_empty());
}

/// The backup is checked in the pass that loads it into the new database: a stored
/// file that decompresses and loads cleanly but does not hash to its manifest's
/// SHA-256 is found out only once its data is in. The copy is dropped, the live
/// database is untouched, and a restore test clears the backup's verified mark.
#[test]
fn a_checksum_found_wrong_after_the_data_loaded_drops_the_copy() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "[backup]\nrestore_jobs = 1\n");
    let id = backup(&app);
    pg.psql(&db, "delete from notes where id <= 5");
    let live = state(&pg.url(&db));
    let manifest = app.backup_dir().join(format!("{id}.manifest.json"));
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["sha256"] = "0".repeat(64).into();
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    // By one stream (one job) and by parallel loaders (one per CPU, at least two).
    for (jobs, args) in [
        (1, vec!["restore", id.as_str(), "--yes"]),
        (2, vec!["restore", id.as_str(), "--yes"]),
        (2, vec!["restore", id.as_str(), "--target-db", "never_kept"]),
    ] {
        app.edit_config(|c| {
            c.replace("restore_jobs = 1", "restore_jobs = JOBS")
                .replace("restore_jobs = 2", "restore_jobs = JOBS")
                .replace("JOBS", &jobs.to_string())
        });
        let out = app.cmd().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("is damaged and was refused"), "{stderr}");
        assert!(stderr.contains("SHA-256 mismatch"), "{stderr}");
        assert!(stderr.contains("was dropped"), "{stderr}");
        assert_eq!(state(&pg.url(&db)), live, "{args:?}");
        assert!(side_databases(pg, &db).is_empty(), "{args:?}");
        assert_eq!(
            pg.psql(
                "postgres",
                "select count(*) from pg_database where datname = 'never_kept'"
            ),
            "0"
        );
    }
    let out = app
        .cmd()
        .args(["--json", "backup", "verify", "--restore-test", "--latest"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["ok"], false, "{v}");
    assert!(side_databases(pg, &db).is_empty());
    let shown = app.json(&["backup", "show", &id]);
    assert!(shown["verification"].is_null(), "{shown:#}");
    assert!(
        shown["verification_failure"]["problem"]
            .as_str()
            .unwrap()
            .contains("SHA-256 mismatch"),
        "{shown:#}"
    );
}

/// A backup of several frames damaged in a late one: its first frames' data is already
/// in the new database when the damage is found. The restore is refused as damaged
/// (not as a pg_restore failure), the copy dropped, the live database untouched: found
/// by the SHA-256, and (the manifest rewritten to the damaged file's size and SHA-256)
/// by the frames' own checksums alone, by one stream and by parallel loaders.
#[test]
fn damage_in_a_late_frame_is_found_while_loading_and_drops_the_copy() {
    let pg = require_pg!();
    let db = big_db(pg);
    // A second table, before `big` in the archive: two loaders with two jobs.
    pg.psql(
        &db,
        "create table aaa_small (id int primary key); insert into aaa_small select generate_series(1, 100);",
    );
    let app = App::direct(&pg.url(&db), "[backup]\nrestore_jobs = 1\n");
    let id = backup(&app);
    let live = state(&pg.url(&db));
    let data = app.backup_dir().join(format!("{id}.dump.zst"));
    let mut bytes = std::fs::read(&data).unwrap();
    let frames = zstd_frames(&bytes);
    assert!(
        frames.len() >= 2,
        "the backup has {} frame(s)",
        frames.len()
    );
    let last = frames[frames.len() - 1];
    let middle = last + (bytes.len() - last) / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&data, &bytes).unwrap();
    let manifest = app.backup_dir().join(format!("{id}.manifest.json"));
    for (jobs, matching_sha) in [(1, false), (2, false), (1, true), (2, true)] {
        if matching_sha {
            let mut m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
            m["sha256"] = hex::encode(sha2::Sha256::digest(&bytes)).into();
            m["size_bytes"] = bytes.len().into();
            std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        }
        app.edit_config(|c| {
            c.replace("restore_jobs = 1", "restore_jobs = JOBS")
                .replace("restore_jobs = 2", "restore_jobs = JOBS")
                .replace("JOBS", &jobs.to_string())
        });
        let out = app.cmd().args(["restore", &id, "--yes"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let case = format!("jobs {jobs}, matching SHA-256 {matching_sha}: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{case}");
        assert!(stderr.contains("is damaged and was refused"), "{case}");
        if matching_sha {
            // Only the frames' checksums could tell.
            assert!(!stderr.contains("SHA-256 mismatch"), "{case}");
            assert!(
                stderr.contains("the compressed stream is damaged"),
                "{case}"
            );
        }
        assert!(stderr.contains("was dropped"), "{case}");
        assert_eq!(state(&pg.url(&db)), live, "{case}");
        assert!(side_databases(pg, &db).is_empty(), "{case}");
    }
}

/// Where each zstd frame of `bytes` starts.
fn zstd_frames(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        starts.push(at);
        at += zstd::zstd_safe::find_frame_compressed_size(&bytes[at..]).unwrap();
    }
    starts
}
