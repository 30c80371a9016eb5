//! `stablehand check` through the real binary against a real PostgreSQL: exit 0 when
//! all is well, exit 1 naming each alert condition: no backup, a stale backup, a failed
//! verification, a stale verification, an unfinished deploy, an unhealthy release.

use std::fs;
use std::time::Duration;

use crate::support::{free_port, pg, App};

fn check(app: &App) -> (i32, serde_json::Value) {
    let out = app.cmd().args(["--json", "check"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

fn conditions(v: &serde_json::Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["condition"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn check_exits_1_for_each_alert_condition_and_0_when_all_is_well() {
    let Some(pg) = pg() else { return };
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "");

    // No backup yet.
    let (code, v) = check(&app);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(conditions(&v), ["no_backup"]);

    // A fresh backup (verified when it was written): all is well.
    let id = app.backup();
    let (code, v) = check(&app);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["ok"], true);

    // A backup that fails verification.
    app.truncate_backup(&id, |len| len / 2);
    assert_eq!(app.exit_code(&["backup", "verify", &id]), Some(1));
    let (code, v) = check(&app);
    assert_eq!(code, 1, "{v:#}");
    let c = conditions(&v);
    assert!(c.contains(&"verification_failed".to_string()), "{v:#}");
    assert!(
        c.contains(&"verification_stale".to_string()),
        "no passing verification is left: {v:#}"
    );
    fs::remove_file(app.backup_dir().join(format!("{id}.dump.zst"))).unwrap();
    fs::remove_file(app.backup_dir().join(format!("{id}.manifest.json"))).unwrap();

    // An unfinished deploy (its journal).
    app.json(&["backup"]);
    let state = app.path().join(".stablehand");
    fs::create_dir_all(&state).unwrap();
    fs::write(
        state.join("journal.json"),
        r#"{"id":"deploy-20261130-000000","command":"deploy","pid":1,"started_at":"2026-11-30T00:00:00Z","phase":"deploying","from":null,"target":"abc","stable_before":null,"backup":null,"snapshot":null,"rollback_to":null,"rollback_reason":null,"failed_commit":null,"db_action":null,"steps":[]}"#,
    )
    .unwrap();
    let (code, v) = check(&app);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(conditions(&v), ["unfinished_deploy"]);
    assert!(v["problems"][0]["fix"]
        .as_str()
        .unwrap()
        .contains("stablehand recover"));
    fs::remove_file(state.join("journal.json")).unwrap();
    assert_eq!(check(&app).0, 0);
}

#[test]
fn check_alerts_on_stale_backups_and_verifications() {
    let Some(pg) = pg() else { return };
    let db = pg.sample_db();
    let app = App::direct(
        &pg.url(&db),
        "\n[alerts]\nmax_backup_age = \"1s\"\nmax_verify_age = \"1s\"\n",
    );
    app.json(&["backup"]);
    std::thread::sleep(Duration::from_millis(2100));
    let (code, v) = check(&app);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(conditions(&v), ["backup_stale", "verification_stale"]);
    assert!(
        v["problems"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("max_backup_age = 1s"),
        "{v:#}"
    );
}

#[test]
fn check_alerts_when_the_release_is_unhealthy() {
    let Some(pg) = pg() else { return };
    let db = pg.sample_db();
    // Nothing listens on this port: the probe fails.
    let port = free_port();
    let app = App::direct(
        &pg.url(&db),
        &format!("\n[[health.http]]\nurl = \"http://127.0.0.1:{port}/health\"\ntimeout = \"1s\"\n"),
    );
    app.json(&["backup"]);
    let (code, v) = check(&app);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(conditions(&v), ["stable_unhealthy"]);
    assert!(
        v["problems"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("/health"),
        "{v:#}"
    );
    // The human view says the same.
    let out = app.cmd().arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ALERT: 1 condition(s) hold"), "{text}");
    assert!(text.contains("stable_unhealthy"), "{text}");
}

#[test]
fn the_metrics_textfile_parses_and_tracks_backups_and_failures() {
    let Some(pg) = pg() else { return };
    let db = pg.sample_db();
    let app = App::direct(
        &pg.url(&db),
        "\n[metrics]\ntextfile = \"metrics/stablehand.prom\"\n",
    );
    fs::create_dir_all(app.path().join("metrics")).unwrap();
    let id = app.backup();
    let read = || {
        let path = app.path().join("metrics/stablehand.prom");
        let text = fs::read_to_string(&path).unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o644, "readable by node_exporter");
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("the textfile parses");
        (text, scrape)
    };
    let value = |scrape: &prometheus_parse::Scrape, name: &str| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("no {name}"));
        match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name}: unexpected type"),
        }
    };
    let (text, scrape) = read();
    let size = app.json(&["backup", "show", &id])["size_bytes"]
        .as_f64()
        .unwrap();
    assert_eq!(
        value(&scrape, "stablehand_backup_last_size_bytes"),
        size,
        "{text}"
    );
    let now = jiff::Timestamp::now().as_second() as f64;
    let at = value(&scrape, "stablehand_backup_last_success_timestamp_seconds");
    assert!((now - at).abs() < 120.0, "{text}");
    assert!(value(&scrape, "stablehand_backup_last_verified_timestamp_seconds") >= at);
    assert_eq!(
        value(&scrape, "stablehand_backup_failures_total"),
        0.0,
        "{text}"
    );
    assert_eq!(value(&scrape, "stablehand_backups"), 1.0);

    // A failed backup (the database is gone) counts.
    pg.psql("postgres", &format!("drop database {db}"));
    assert_eq!(
        app.cmd().arg("backup").output().unwrap().status.code(),
        Some(1)
    );
    let (text, scrape) = read();
    assert_eq!(
        value(&scrape, "stablehand_backup_failures_total"),
        1.0,
        "{text}"
    );
    assert!(
        text.contains("stablehand_deploys_total{outcome=\"deployed\"} 0"),
        "{text}"
    );
}
