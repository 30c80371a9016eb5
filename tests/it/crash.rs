//! Crash safety: stablehand is killed with SIGKILL at every journal step of a passing
//! and of a failing deploy (`STABLEHAND_FAILPOINT`, compiled only into test builds by the
//! `failpoints` feature), then `stablehand recover` runs. Each time: the app is healthy,
//! code and database match (the migrations applied in the database are exactly those of
//! the checked-out commit, and so are their tables), and no row that existed at backup
//! time is lost.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use crate::deploy::Stack;
use crate::support::wait_for;

/// A stack with v1 deployed and stable.
fn stack() -> Option<Stack> {
    Stack::fast_deployed()
}

/// Deploys a new release (with a migration; healthy or not), killed at `point`; then
/// recovers and checks the invariants.
fn crash_and_recover(s: &Stack, n: usize, point: &str, healthy: bool) {
    let table = format!("t{n}");
    s.add_migration(
        &format!("1{n:02}_{table}"),
        &format!("create table {table} (id int); insert into {table} values (1);"),
    );
    s.set_healthy(healthy);
    s.commit(&format!(
        "release {n} ({})",
        if healthy { "healthy" } else { "broken" }
    ));
    let marker = format!("before the deploy killed at {point}");
    s.psql(
        "appdb",
        &format!("insert into messages (body) values ('{marker}')"),
    );
    let rows_before = s.count("select count(*) from messages");

    let out = s
        .stablehand_cmd(&["deploy"])
        .env("STABLEHAND_FAILPOINT", point)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "killed at {point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        s.app().join(".stablehand/journal.json").exists(),
        "{point}: a killed deploy leaves its journal"
    );
    let (code, status, _) = s.stablehand(&["status"]);
    assert_eq!(code, 1, "{point}: status is loud about it: {status}");
    assert!(status.contains("UNFINISHED deploy"), "{status}");

    let (code, stdout, stderr) = s.stablehand(&["--json", "recover"]);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{point}: {e}: {stdout}\n{stderr}"));
    assert!(
        [0, 10, 11].contains(&code),
        "{point}: recover exit {code}: {v:#}"
    );
    assert!(
        !s.app().join(".stablehand/journal.json").exists(),
        "{point}: recover finished the journal"
    );

    // The app is healthy.
    wait_for(Duration::from_secs(30), || {
        (s.health_status() == Some(200)).then_some(())
    })
    .unwrap_or_else(|| panic!("{point}: the app is not healthy after recover: {v:#}"));

    // Code and database match: the ledger holds exactly the checked-out commit's
    // migrations, and the tables of later ones are gone.
    let mut in_tree: Vec<String> = fs::read_dir(s.app().join("prisma/migrations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    in_tree.sort();
    let applied: Vec<String> = s
        .psql(
            "appdb",
            "select migration_name from _prisma_migrations where finished_at is not null and rolled_back_at is null order by 1",
        )
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(applied, in_tree, "{point}: code and database match ({v:#})");
    for m in 1..=n {
        let t = format!("t{m}");
        let expected = in_tree.iter().any(|d| d.ends_with(&format!("_{t}")));
        assert_eq!(
            s.table_exists("appdb", &t),
            expected,
            "{point}: table {t} exists exactly when its migration is in the tree"
        );
    }

    // No row that existed at backup time is lost.
    assert!(
        s.count("select count(*) from messages") >= rows_before,
        "{point}: rows lost"
    );
    assert_eq!(
        s.count(&format!(
            "select count(*) from messages where body = '{marker}'"
        )),
        1
    );
    assert_eq!(
        s.count("select count(*) from messages where body like 'old %'"),
        100
    );
}

fn run_points(points: &[&str], healthy: bool) {
    let Some(s) = stack() else { return };
    for (i, point) in points.iter().enumerate() {
        crash_and_recover(&s, i + 1, point, healthy);
    }
}

// A passing deploy: killed after each of its journal steps.

#[test]
fn crash_passing_deploy_before_its_gate() {
    run_points(
        &[
            "checkout:done",
            "build:done",
            "backup:done",
            "stop:done",
            "start:done",
        ],
        true,
    );
}

#[test]
fn crash_passing_deploy_after_its_gate() {
    run_points(
        &[
            "gate:done",
            "mark_stable:done",
            "prune:done",
            "history:done",
        ],
        true,
    );
}

// A failing deploy: killed after each step, its rollback's included.

#[test]
fn crash_failing_deploy_before_its_gate() {
    run_points(&["checkout:done", "build:done", "backup:done"], false);
}

#[test]
fn crash_failing_deploy_around_its_gate() {
    run_points(&["stop:done", "start:done", "gate:done"], false);
}

#[test]
fn crash_failing_deploy_in_the_database_rollback() {
    run_points(
        &["stop_app:done", "database:done", "database_restore:done"],
        false,
    );
}

#[test]
fn crash_failing_deploy_in_the_code_rollback() {
    run_points(&["revert_code:done", "switch:done"], false);
}

#[test]
fn crash_failing_deploy_after_its_rollback_gate() {
    run_points(&["rollback_gate:done", "history:done"], false);
}
