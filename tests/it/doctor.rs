//! `stablehand doctor` reports each blocking condition (and only those block), and
//! `stablehand init` on the demo app writes a config with which `deploy` works as is.

use std::fs;
use std::path::Path;

use crate::support::{git, pg, unique, App};

/// A direct-mode app in a git work tree with a bare remote.
fn app_with_remote(url: &str, extra: &str) -> (App, tempfile::TempDir) {
    let app = App::direct(url, extra);
    let remote = tempfile::tempdir().unwrap();
    git(remote.path(), &["init", "-q", "--bare", "-b", "main"]);
    git(app.path(), &["init", "-q", "-b", "main"]);
    git(app.path(), &["add", "stablehand.toml"]);
    git(app.path(), &["commit", "-q", "-m", "config"]);
    git(
        app.path(),
        &[
            "remote",
            "add",
            "origin",
            &remote.path().display().to_string(),
        ],
    );
    git(app.path(), &["push", "-q", "origin", "main"]);
    (app, remote)
}

fn doctor(app: &App) -> (i32, Vec<(String, String, String)>) {
    let out = app.cmd().args(["--json", "doctor"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), findings(&v))
}

/// `doctor --json`'s findings as (check, status, "detail / fix").
pub(crate) fn findings(v: &serde_json::Value) -> Vec<(String, String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["status"].as_str().unwrap().to_string(),
                format!(
                    "{} / {}",
                    f["detail"].as_str().unwrap(),
                    f["fix"].as_str().unwrap()
                ),
            )
        })
        .collect()
}

fn status_of<'a>(findings: &'a [(String, String, String)], check: &str) -> (&'a str, &'a str) {
    findings
        .iter()
        .find(|(c, _, _)| c == check)
        .map(|(_, s, d)| (s.as_str(), d.as_str()))
        .unwrap_or_else(|| panic!("no {check} in {findings:?}"))
}

#[test]
fn doctor_passes_a_healthy_setup_and_names_each_blocking_condition() {
    let Some(pg) = pg() else { return };
    let db = pg.sample_db();
    let (mut app, _remote) = app_with_remote(
        &pg.url(&db),
        "\n[notify]\nwebhook_url_env = \"DEPLOY_WEBHOOK_URL\"\n",
    );
    // All is well except a webhook variable that is not set: a warning, not a block.
    let (code, f) = doctor(&app);
    assert_eq!(code, 0, "{f:#?}");
    for check in [
        "git",
        "repository",
        "git remote",
        "tags pushable",
        "database",
        "pg_dump",
        "pg_restore",
        "privileges",
        "disk",
    ] {
        assert_eq!(status_of(&f, check).0, "ok", "{check}: {f:#?}");
    }
    assert_eq!(status_of(&f, "notify.webhook_url_env").0, "warn");

    // A user without CREATEDB: a rollback could not restore-and-swap.
    let role = unique("nocreate");
    pg.psql(
        "postgres",
        &format!("create role {role} login; grant all on database {db} to {role}"),
    );
    app.env.retain(|(k, _)| k != "DATABASE_URL");
    app.env.push((
        "DATABASE_URL".into(),
        pg.url(&db).replacen("postgres@", &format!("{role}@"), 1),
    ));
    let (code, f) = doctor(&app);
    assert_eq!(code, 1, "{f:#?}");
    let (status, detail) = status_of(&f, "privileges");
    assert_eq!(status, "fail");
    assert!(detail.contains("CREATEDB"), "{detail}");

    // An unreachable database.
    app.env.retain(|(k, _)| k != "DATABASE_URL");
    app.env.push((
        "DATABASE_URL".into(),
        "postgresql://app@127.0.0.1:9/none".into(),
    ));
    let (code, f) = doctor(&app);
    assert_eq!(code, 1);
    assert_eq!(status_of(&f, "database").0, "fail", "{f:#?}");

    // An unreachable remote and an unfinished deploy.
    app.env.retain(|(k, _)| k != "DATABASE_URL");
    app.env.push(("DATABASE_URL".into(), pg.url(&db)));
    git(
        app.path(),
        &["remote", "set-url", "origin", "/nonexistent/remote.git"],
    );
    fs::create_dir_all(app.path().join(".stablehand")).unwrap();
    fs::write(
        app.path().join(".stablehand/journal.json"),
        r#"{"id":"deploy-1","command":"deploy","pid":1,"started_at":"2026-11-30T00:00:00Z","phase":"deploying","from":null,"target":"abc","stable_before":null,"backup":null,"snapshot":null,"rollback_to":null,"rollback_reason":null,"failed_commit":null,"db_action":null,"steps":[]}"#,
    )
    .unwrap();
    let (code, f) = doctor(&app);
    assert_eq!(code, 1);
    assert_eq!(status_of(&f, "git remote").0, "fail", "{f:#?}");
    let (status, detail) = status_of(&f, "journal");
    assert_eq!(status, "fail");
    assert!(detail.contains("stablehand recover"), "{detail}");
    // The human table says the same.
    let out = app.cmd().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("problem(s) block a deploy"), "{text}");
}

#[test]
fn init_refuses_to_overwrite_and_writes_a_config_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_USER: shop\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n      POSTGRES_DB: shop\n  api:\n    build: .\n    ports: [\"8080:8080\"]\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        assert_cmd::Command::cargo_bin("stablehand")
            .unwrap()
            .current_dir(dir.path())
            .env_remove("STABLEHAND_CONFIG")
            .env_remove("COMPOSE_PROJECT_NAME")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(dir.path().join("stablehand.toml")).unwrap();
    let c = stablehand::config::parse(&text, Path::new("stablehand.toml")).unwrap();
    assert_eq!(c.database.service, "db");
    assert_eq!(c.database.user, "shop");
    assert_eq!(
        c.runtime.services.as_deref(),
        Some(&["api".to_string()][..])
    );
    // No healthcheck declared and nothing answers on its port during init: the guess is
    // written commented out, and the gate watches the container.
    assert!(c.health.http.is_empty(), "{text}");
    assert!(
        text.contains("# url = \"http://127.0.0.1:8080/health\""),
        "{text}"
    );
    assert_eq!(c.health.containers, ["api"]);
    assert_eq!(c.runtime.files, [std::path::PathBuf::from("compose.yaml")]);
    assert!(!text.contains("DB_PASSWORD"));
    // A second init refuses and changes nothing.
    fs::write(dir.path().join("stablehand.toml"), "# mine\n").unwrap();
    let out = run(&["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        fs::read_to_string(dir.path().join("stablehand.toml")).unwrap(),
        "# mine\n"
    );
    assert!(run(&["init", "--force"]).status.success());
}

#[test]
fn init_on_the_demo_app_writes_a_config_that_deploys_without_edits() {
    let Some(s) = crate::deploy::Stack::new("") else {
        return;
    };
    let out = s
        .stablehand_cmd(&["--config", "stablehand.init.toml", "init"])
        .env("COMPOSE_PROJECT_NAME", &s.project)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(s.app().join("stablehand.init.toml")).unwrap();
    assert!(text.contains("name = \"appdb\""), "{text}");
    let out = s
        .stablehand_cmd(&["--config", "stablehand.init.toml", "--json", "deploy"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{v:#}\n{text}");
    assert_eq!(v["outcome"], "deployed");
}
