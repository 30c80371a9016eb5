//! The command-line contract: help, usage errors, config errors (exit 78).

use crate::support::App;
use predicates::prelude::*;

#[test]
fn help_lists_the_backup_commands() {
    let app = App::new("");
    app.cmd()
        .args(["backup", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("create"))
        .stdout(predicate::str::contains("list"))
        .stdout(predicate::str::contains("verify"))
        .stdout(predicate::str::contains("prune"))
        .stdout(predicate::str::contains("pin"));
}

#[test]
fn unknown_command_is_a_usage_error() {
    App::new("").cmd().arg("frobnicate").assert().code(2);
    App::new("")
        .cmd()
        .args(["backup", "verify", "x", "--all"])
        .assert()
        .code(2);
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = App::new("").cmd().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!("stablehand {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    assert!(text.trim_end().ends_with(')'), "{text}");
}

#[test]
fn a_config_without_database_says_what_the_section_is_for() {
    App::new("[git]\nremote = \"origin\"\n")
        .cmd()
        .args(["backup", "list"])
        .assert()
        .code(78)
        .stderr(predicate::str::contains(
            "the [database] section is missing",
        ))
        .stderr(predicate::str::contains("stablehand init"))
        .stderr(predicate::str::contains("missing field").not());
}

#[test]
fn missing_config_exits_78_and_says_what_to_do() {
    let app = App::new("");
    std::fs::remove_file(app.path().join("stablehand.toml")).unwrap();
    app.cmd()
        .args(["backup", "list"])
        .assert()
        .code(78)
        .stderr(predicate::str::contains(
            "no config file at stablehand.toml",
        ))
        .stderr(predicate::str::contains("--config"));
}

#[test]
fn typo_in_config_names_line_and_valid_keys_and_touches_nothing() {
    let app = App::new("[database]\nmode = \"direct\"\n\n[backup]\nkeep_lats = 3\n");
    app.cmd()
        .arg("backup")
        .assert()
        .code(78)
        .stderr(predicate::str::contains(
            "stablehand.toml:5:1: unknown field `keep_lats`",
        ))
        .stderr(predicate::str::contains("`keep_last`, `keep_within`"));
    assert!(
        !app.backup_dir().exists(),
        "nothing may be created on a config error"
    );
}

#[test]
fn wrong_type_in_config_names_line_and_column() {
    let app = App::new("[database]\nmode = \"direct\"\n[backup]\ncompression_level = \"high\"\n");
    app.cmd()
        .arg("backup")
        .assert()
        .code(78)
        .stderr(predicate::str::contains(
            "stablehand.toml:4:21: invalid type: string \"high\", expected i32",
        ));
    assert!(!app.backup_dir().exists());
}

#[test]
fn config_from_env_var_and_json_error() {
    let app = App::new("[database]\nmode = \"sideways\"\n");
    let out = app
        .cmd()
        .env("STABLEHAND_CONFIG", app.path().join("stablehand.toml"))
        .current_dir("/")
        .args(["--json", "backup", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 78);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("unknown variant `sideways`, expected `compose` or `direct`"));
}

#[test]
fn direct_mode_without_url_is_a_config_error() {
    let app = App::new("[database]\nmode = \"direct\"\n");
    app.cmd()
        .arg("backup")
        .assert()
        .code(78)
        .stderr(predicate::str::contains("DATABASE_URL is not set"));
    assert!(app.backup_files().is_empty());
}

#[test]
fn list_with_no_backups_is_friendly() {
    let app = App::new("[database]\nmode = \"direct\"\n");
    app.cmd()
        .args(["backup", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no backups yet"));
}

/// The GitHub Actions example parses as YAML, runs stablehand over SSH the way that
/// survives a cancelled job (detach, then wait), reports every exit code of the
/// contract, and its shell steps are shellcheck-clean.
#[test]
fn the_github_actions_example_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/github-actions/deploy-production.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("valid YAML");
    let steps = doc["jobs"]["deploy"]["steps"].as_sequence().expect("steps");
    let scripts: Vec<&str> = steps
        .iter()
        .filter_map(|s| s.get("run").and_then(|r| r.as_str()))
        .collect();
    let deploy = scripts
        .iter()
        .find(|s| s.contains("stablehand deploy --detach"))
        .expect("a step runs stablehand deploy, detached");
    assert!(
        deploy.contains("stablehand --json wait"),
        "and waits for its outcome: {deploy}"
    );
    for code in ["0)", "10)", "11)", "12)"] {
        assert!(deploy.contains(code), "exit code {code} is handled");
    }
    let install = scripts
        .iter()
        .find(|s| s.contains("scp "))
        .expect("a step copies the binary to the server");
    assert!(
        install.contains("--version") && install.contains("sha256sum -c"),
        "only when the server's version differs, and checked: {install}"
    );
    let shellcheck = ["/usr/bin/shellcheck", "/bin/shellcheck"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(shellcheck) = shellcheck else {
        crate::support::missing("shellcheck", "apt-get install shellcheck");
        return;
    };
    for script in scripts {
        // GitHub expressions are only in env: blocks; the scripts are plain bash.
        assert!(
            !script.contains("${{"),
            "no expression inside a script: {script}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("step.sh");
        std::fs::write(
            &file,
            format!("#!/usr/bin/env bash\nset -euo pipefail\n{script}"),
        )
        .unwrap();
        let out = std::process::Command::new(shellcheck)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shellcheck:\n{}\n{script}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
