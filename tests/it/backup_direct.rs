//! Backups in direct mode against a real PostgreSQL cluster: create, list, show, verify,
//! prune, pin; manifests; permissions; secrets; restorability of what was written.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use predicates::prelude::*;
use sha2::{Digest, Sha256};

use crate::require_pg;
use crate::support::{git_init_with_commit, App, PG_BIN, PW_SECRET, PW_USER};

#[test]
fn backup_is_complete_private_hashed_and_restorable() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "");
    let sha = git_init_with_commit(app.path());

    let v = app.json(&["backup", "--label", "pre-deploy"]);
    let id = v["backup"]["id"].as_str().unwrap().to_string();
    let re = regex_lite(&id);
    assert!(
        re,
        "id {id} should be pre-deploy_YYYYMMDD_HHMMSS_{}",
        &sha[..7]
    );
    assert!(id.ends_with(&sha[..7]));
    assert_eq!(v["backup"]["git_commit"], sha);
    assert_eq!(v["backup"]["database"]["name"], db.as_str());
    assert_eq!(v["backup"]["database"]["mode"], "direct");
    assert_eq!(v["backup"]["format"], "pg_dump-custom");
    assert_eq!(v["backup"]["verification"]["method"], "structural");

    let data = app.backup_dir().join(format!("{id}.dump.zst"));
    let manifest = app.backup_dir().join(format!("{id}.manifest.json"));
    for f in [&data, &manifest] {
        let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} must be 0600", f.display());
    }
    let bytes = fs::read(&data).unwrap();
    assert_eq!(v["backup"]["size_bytes"], bytes.len() as u64);
    assert_eq!(v["backup"]["sha256"], hex::encode(Sha256::digest(&bytes)));
    let on_disk: serde_json::Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(on_disk, v["backup"]);

    // What was written restores into a fresh database with every row.
    let target = pg.create_db("restored");
    let mut decompressed = Command::new("zstd")
        .args(["-dc"])
        .arg(&data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = Command::new(format!("{PG_BIN}/pg_restore"))
        .args(["--exit-on-error", "--no-owner"])
        .arg(format!("--dbname={}", pg.url(&target)))
        .stdin(decompressed.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(decompressed.wait().unwrap().success());
    assert_eq!(pg.psql(&target, "select count(*) from users"), "5000");
    assert_eq!(pg.psql(&target, "select count(*) from notes"), "20000");
}

fn regex_lite(id: &str) -> bool {
    // pre-deploy_YYYYMMDD_HHMMSS_xxxxxxx
    let parts: Vec<&str> = id.split('_').collect();
    parts.len() == 4
        && parts[0] == "pre-deploy"
        && parts[1].len() == 8
        && parts[1].chars().all(|c| c.is_ascii_digit())
        && parts[2].len() == 6
        && parts[2].chars().all(|c| c.is_ascii_digit())
        && parts[3].len() == 7
}

#[test]
fn outside_a_repository_the_commit_is_manual_and_list_show_work() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "");
    let id = app.backup();
    assert!(id.starts_with("manual_") && id.ends_with("_manual"), "{id}");

    app.cmd()
        .args(["backup", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains(&id))
        .stdout(predicate::str::contains("structural"));
    app.cmd()
        .args(["backup", "show", &id[..12]])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("backup    {id}")))
        .stdout(predicate::str::contains("no _prisma_migrations table"));
    app.cmd()
        .args(["backup", "show", "nope"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no backup with id \"nope\""));
    app.cmd()
        .args(["-q", "backup"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("manual_"));
}

#[test]
fn list_orders_by_manifest_time_not_file_name() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "");
    let first = app.json(&["backup", "--label", "aaa"])["backup"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = app.json(&["backup", "--label", "zzz"])["backup"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ids = |app: &App| -> Vec<String> {
        app.json(&["backup", "list"])["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&app), vec![second.clone(), first.clone()]);
    // Make "zzz" older by its manifest only (file names and mtimes unchanged).
    let path = app.backup_dir().join(format!("{second}.manifest.json"));
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    m["created_at"] = "2020-01-01T00:00:00Z".into();
    fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    assert_eq!(ids(&app), vec![first, second]);
}

#[test]
fn retention_prunes_after_backup_and_spares_pinned() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(
        &pg.url(&db),
        "[backup]\nkeep_last = 2\nkeep_within = \"0s\"\n",
    );
    let b1 = app.json(&["backup", "--label", "b1"])["backup"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.cmd()
        .args(["backup", "pin", &b1])
        .assert()
        .success()
        .stdout(predicate::str::contains("pinned"));
    let mut ids = vec![b1.clone()];
    for label in ["b2", "b3", "b4"] {
        let v = app.json(&["backup", "--label", label]);
        ids.push(v["backup"]["id"].as_str().unwrap().to_string());
    }
    let listed: Vec<String> = app.json(&["backup", "list"])["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![ids[3].clone(), ids[2].clone(), b1.clone()]);
    assert!(!app
        .backup_dir()
        .join(format!("{}.dump.zst", ids[1]))
        .exists());

    app.cmd()
        .args(["backup", "prune", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("keep: pinned"))
        .stdout(predicate::str::contains("keep: newest verified, last 2"))
        .stdout(predicate::str::contains("would delete 0 of 3"));

    app.cmd().args(["backup", "unpin", &b1]).assert().success();
    let v = app.json(&["backup", "prune", "--dry-run"]);
    let deleted: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["delete"] == true)
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, vec![b1.as_str()]);
    assert!(
        app.backup_dir().join(format!("{b1}.dump.zst")).exists(),
        "dry run deletes nothing"
    );
    app.cmd()
        .args(["backup", "prune"])
        .assert()
        .success()
        .stdout(predicate::str::contains("deleted 1 of 3"));
    assert!(!app.backup_dir().join(format!("{b1}.dump.zst")).exists());
    assert!(!app
        .backup_dir()
        .join(format!("{b1}.manifest.json"))
        .exists());
}

#[test]
fn verify_passes_then_catches_corruption_and_truncation() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "");
    let a = app.json(&["backup", "--label", "a"])["backup"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = app.json(&["backup", "--label", "b"])["backup"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let v = app.json(&["backup", "verify", "--all"]);
    assert!(v.as_array().unwrap().iter().all(|r| r["ok"] == true), "{v}");
    let shown = app.json(&["backup", "show", &a]);
    assert_eq!(shown["verification"]["method"], "full");

    // Flip one byte in the middle of backup a.
    let path_a = app.backup_dir().join(format!("{a}.dump.zst"));
    let mut bytes = fs::read(&path_a).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&path_a, &bytes).unwrap();
    app.cmd()
        .args(["backup", "verify", &a])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!("FAILED  {a}")))
        .stderr(predicate::str::contains("Do not restore from them"));
    assert!(app.json(&["backup", "show", &a])["verification"].is_null());

    // Truncate backup b.
    app.truncate_backup(&b, |len| len / 2);
    app.cmd()
        .args(["backup", "verify", &b])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("size mismatch"));
}

#[test]
fn prisma_migration_rows_are_recorded() {
    let pg = require_pg!();
    let db = pg.sample_db();
    pg.psql(
        &db,
        "create table _prisma_migrations (id varchar(36) primary key, checksum varchar(64) not null,
           finished_at timestamptz, migration_name varchar(255) not null, logs text,
           rolled_back_at timestamptz, started_at timestamptz not null default now(),
           applied_steps_count integer not null default 0);
         insert into _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count)
           values ('a1', 'c1', now(), '20230404095503_initial_migration', 1),
                  ('a2', 'c2', now(), '20230411134605_doc_208', 1);",
    );
    let app = App::direct(&format!("{}?schema=public", pg.url(&db)), "");
    let v = app.json(&["backup"]);
    let rows = v["backup"]["prisma_migrations"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0]["migration_name"],
        "20230404095503_initial_migration"
    );
    assert!(rows[0]["finished_at"].is_string());
}

#[test]
fn password_travels_in_the_environment_and_is_never_printed() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let url = format!(
        "postgresql://{PW_USER}:{PW_SECRET}@127.0.0.1:{}/{db}",
        pg.port
    );
    let app = App::direct(&url, "");
    let out = app.cmd().args(["-vv", "backup"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains(PW_SECRET),
        "secret leaked into output:\n{all}"
    );
    assert!(all.contains("running"), "-vv logs the commands run:\n{all}");
    for f in app.backup_files().iter().filter(|f| f.ends_with(".json")) {
        let text = fs::read_to_string(app.backup_dir().join(f)).unwrap();
        assert!(!text.contains(PW_SECRET));
    }

    // A wrong password fails clearly, and still does not print the one given.
    let wrong = App::direct(
        &format!(
            "postgresql://{PW_USER}:wrong-{PW_SECRET}@127.0.0.1:{}/{db}",
            pg.port
        ),
        "",
    );
    let out = wrong.cmd().arg("backup").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(PW_SECRET), "{err}");
    wrong.assert_no_backup_left();
}

#[test]
fn the_backup_of_the_latest_stable_release_is_never_pruned() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(
        &pg.url(&db),
        "[backup]\nkeep_last = 1\nkeep_within = \"0s\"\n\n[git]\npush = false\n",
    );
    git_init_with_commit(app.path());
    let b1 = app.json(&["backup", "--label", "pre-deploy"])["backup"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.cmd()
        .args(["stable", "mark", "--backup", &b1])
        .assert()
        .success();
    let b2 = app.json(&["backup", "--label", "b2"])["backup"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.json(&["backup", "--label", "b3"]);
    let listed: Vec<String> = app.json(&["backup", "list"])["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        listed.contains(&b1),
        "the stable release's backup survives: {listed:?}"
    );
    assert!(!listed.contains(&b2), "{listed:?}");
    assert_eq!(listed.len(), 2);
    app.cmd()
        .args(["backup", "prune", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("keep: backup of latest-stable"));
}
