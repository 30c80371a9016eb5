//! Kept (replaced) databases against a real PostgreSQL (issue 15 point 5): pruning to
//! `database.keep_replaced_databases` never drops a database someone is connected to,
//! nor one holding rows written after the backup it replaced, and never by force.

use std::time::Duration;

use predicates::prelude::*;

use crate::require_pg;
use crate::support::{App, Session};

fn exists(pg: &crate::support::Pg, name: &str) -> bool {
    pg.psql(
        "postgres",
        &format!("select count(*) from pg_database where datname = '{name}'"),
    ) == "1"
}

fn kept_back(v: &serde_json::Value) -> Vec<(String, String)> {
    v["replaced_kept"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|k| {
                    (
                        k["name"].as_str().unwrap().to_string(),
                        k["reason"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kept_databases_with_sessions_or_unbacked_writes_are_never_dropped() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "keep_replaced_databases = 1\n");
    let first_backup = app.backup();
    // Rows no backup has: the database they are in must outlive the pruning.
    pg.psql(
        &db,
        "insert into notes (user_id, body) select 1, 'after the backup ' || g from generate_series(1, 7) g",
    );
    let r1 = app.json(&["restore", &first_backup, "--yes"]);
    let k1 = r1["kept_as"].as_str().unwrap().to_string();
    let second_backup = app.backup();
    std::thread::sleep(Duration::from_millis(1100));

    // k1 is beyond keep_replaced_databases = 1, and holds the 7 rows: kept, said why.
    let r2 = app.json(&["restore", &second_backup, "--yes"]);
    let k2 = r2["kept_as"].as_str().unwrap().to_string();
    let held = kept_back(&r2);
    assert_eq!(held.len(), 1, "{r2:#}");
    assert_eq!(held[0].0, k1);
    assert!(held[0].1.contains("written after backup"), "{}", held[0].1);
    assert!(exists(pg, &k1));
    assert_eq!(
        pg.psql(
            &k1,
            "select count(*) from notes where body like 'after the backup%'"
        ),
        "7"
    );

    // k2 holds nothing newer than the second backup, but someone is reading it.
    let reader = Session::sleeping(&pg.url(&k2), "kept_reader");
    std::thread::sleep(Duration::from_millis(1100));
    let r3 = app.json(&["restore", &second_backup, "--yes"]);
    let held = kept_back(&r3);
    let k2_reason = &held.iter().find(|(n, _)| *n == k2).expect("k2 kept").1;
    assert!(
        k2_reason.contains("session(s) are connected"),
        "{k2_reason}"
    );
    assert!(exists(pg, &k2) && exists(pg, &k1));
    assert_eq!(
        reader.sql(&format!(
            "select count(*) from pg_stat_activity where application_name = '{}'",
            reader.app
        )),
        "1",
        "the reader's session was not ended"
    );
    // status and backup list --databases say why each is kept.
    let status = app.json(&["status"]);
    let notes: Vec<String> = status["kept_databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d["name"], d["note"]))
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&k1) && n.contains("written after backup")),
        "{notes:#?}"
    );
    app.cmd()
        .args(["backup", "list", "--databases"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "kept beyond database.keep_replaced_databases",
        ));
    // drop-kept never drops from under a session either.
    app.cmd()
        .args(["db", "drop-kept", &k2, "--yes"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("session(s) are connected"));
    assert!(exists(pg, &k2));

    // Once the reader is gone, k2 goes with the next prune; k1 stays.
    drop(reader);
    std::thread::sleep(Duration::from_millis(1100));
    let r4 = app.json(&["restore", &second_backup, "--yes"]);
    let dropped: Vec<&str> = r4["replaced_dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(dropped.contains(&k2.as_str()), "{r4:#}");
    assert!(!exists(pg, &k2));
    assert!(
        exists(pg, &k1),
        "the database with unbacked rows is still kept"
    );
}
