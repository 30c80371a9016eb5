use std::time::Duration;

use super::*;

fn err(text: &str) -> String {
    parse(text, Path::new("stablehand.toml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse("[database]\nname = \"app\"\n", Path::new("x")).unwrap();
    assert_eq!(c.database.mode, DbMode::Compose);
    assert_eq!(c.database.service, "postgres");
    assert_eq!(c.backup.keep_last, 10);
    assert_eq!(c.backup.keep_within, Duration::from_secs(30 * 86400));
    assert_eq!(c.backup.dir, PathBuf::from("backups/database"));
}

#[test]
fn a_config_without_database_says_what_the_section_is_for() {
    let msg = err("[git]\nremote = \"origin\"\n");
    assert!(
        msg.starts_with("stablehand.toml: database: the [database] section is missing"),
        "{msg}"
    );
    assert!(msg.contains("stablehand init"), "{msg}");
    assert!(!msg.contains("missing field"), "{msg}");
}

#[test]
fn typo_names_line_column_and_valid_keys() {
    let msg = err("[database]\nname = \"app\"\n\n[backup]\nkeep_lats = 3\n");
    assert!(
        msg.starts_with("stablehand.toml:5:1: unknown field `keep_lats`"),
        "{msg}"
    );
    assert!(msg.contains("`keep_last`"), "{msg}");
    assert!(msg.contains("`keep_within`"), "{msg}");
}

#[test]
fn wrong_type_names_the_line() {
    let msg = err("[database]\nname = \"app\"\n[backup]\nkeep_last = \"ten\"\n");
    assert!(
        msg.starts_with("stablehand.toml:4:13: invalid type"),
        "{msg}"
    );
}

#[test]
fn bad_duration_is_explained() {
    let msg = err("[database]\nname = \"app\"\n[backup]\ntimeout = \"soon\"\n");
    assert!(msg.contains("invalid duration \"soon\""), "{msg}");
    assert!(msg.contains(":4:"), "{msg}");
}

#[test]
fn password_in_config_url_is_refused() {
    let msg = err("[database]\nmode = \"direct\"\nurl = \"postgres://u:pw@h/db\"\n");
    assert!(
        msg.starts_with("stablehand.toml:3:1: database.url:"),
        "{msg}"
    );
    assert!(!msg.contains("pw@"), "{msg}");
}

#[test]
fn empty_policy_is_refused_at_its_line() {
    let msg = err("[database]\nname = \"a\"\n[backup]\nkeep_within = \"0s\"\nkeep_last = 0\n");
    assert!(
        msg.starts_with("stablehand.toml:5:1: backup.keep_last:"),
        "{msg}"
    );
    assert!(msg.contains("keeps nothing"), "{msg}");
}

#[test]
fn out_of_range_level_names_its_line() {
    let msg = err("[database]\nname = \"a\"\n\n[backup]\n  compression_level = 40\n");
    assert!(
        msg.starts_with("stablehand.toml:5:3: backup.compression_level: 40 is out of range"),
        "{msg}"
    );
}

#[test]
fn stop_without_start_is_refused() {
    let msg = err("[database]\nname = \"a\"\n[runtime]\nstop = \"systemctl stop app\"\n");
    assert!(
        msg.contains("runtime.start: runtime.stop and runtime.start go together"),
        "{msg}"
    );
}

#[test]
fn runtime_kind_rules() {
    let db = "[database]\nname = \"a\"\n";
    let msg = err(&format!(
        "{db}[runtime]\nkind = \"compose\"\nstop = \"x\"\nstart = \"y\"\n"
    ));
    assert!(
        msg.contains("stablehand.toml:5:1: runtime.stop: is for kind = \"command\""),
        "{msg}"
    );
    let msg = err(&format!(
        "{db}[runtime]\nkind = \"command\"\nservices = [\"web\"]\n"
    ));
    assert!(
        msg.contains("runtime.services: is for kind = \"compose\""),
        "{msg}"
    );
    let msg = err(&format!("{db}[runtime]\nkind = \"command\"\n"));
    assert!(
        msg.contains("needs runtime.start and runtime.stop"),
        "{msg}"
    );
    let msg = err(&format!(
        "{db}[runtime]\nservices = [\"web\", \"postgres\"]\n"
    ));
    assert!(
        msg.contains("lists the database service \"postgres\""),
        "{msg}"
    );
    let msg = err(&format!("{db}[runtime]\nkeep_images = 0\n"));
    assert!(
        msg.contains("runtime.keep_images: must be at least 1"),
        "{msg}"
    );
    let msg = err(&format!("{db}[runtime]\nkind = \"docker\"\n"));
    assert!(msg.contains("compose") && msg.contains("command"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let kind = |toml: &str| {
        parse(&format!("{db}{toml}"), Path::new("x"))
            .unwrap()
            .runtime
            .effective_kind(dir.path())
    };
    assert_eq!(kind(""), None, "no compose file, no commands: no runtime");
    assert_eq!(
        kind("[runtime]\nstart = \"a\"\nstop = \"b\"\n"),
        Some(RuntimeKind::Command)
    );
    std::fs::write(dir.path().join("compose.yaml"), "services: {}\n").unwrap();
    assert_eq!(kind(""), Some(RuntimeKind::Compose));
    assert_eq!(parse(db, Path::new("x")).unwrap().runtime.keep_images, 5);
}

#[test]
fn an_invalid_body_regex_is_located() {
    let msg = err("[database]\nname = \"a\"\n[[health.http]]\nurl = \"http://127.0.0.1:1/\"\nmatches = \"ok(\"\n");
    assert!(
        msg.contains("health.matches: probe 1 has an invalid regular expression"),
        "{msg}"
    );
}

#[test]
fn git_defaults_and_bad_tag_names() {
    let c = parse("[database]\nname = \"a\"\n", Path::new("x")).unwrap();
    assert_eq!(c.git.remote, "origin");
    assert_eq!(c.git.stable_tag, "latest-stable");
    assert_eq!(c.git.stable_prefix, "stable-");
    assert!(c.git.push);
    let msg = err("[database]\nname = \"a\"\n[git]\nenvironment = \"prod env\"\n");
    assert!(
        msg.starts_with("stablehand.toml:4:1: git.environment:"),
        "{msg}"
    );
}

#[test]
fn remotes_and_encryption_are_checked() {
    let base = "[database]\nname = \"a\"\n";
    let ok = parse(
        &format!("{base}[[backup.remote]]\nname = \"s3\"\nurl = \"s3://bucket/app\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\nkeep_last = 3\n[[backup.remote]]\nname = \"nas\"\nurl = \"file:///mnt/nas/backups\"\n"),
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(ok.backup.remote.len(), 2);
    assert_eq!(ok.backup.remote[0].keep_last, Some(3));
    let msg = err(&format!("{base}[[backup.remote]]\nname = \"s3\"\nurl = \"s3://b\"\nendpoint = \"http://127.0.0.1:9000\"\n"));
    assert!(
        msg.contains("allow_http = true only for a local test endpoint"),
        "{msg}"
    );
    let msg = err(&format!(
        "{base}[[backup.remote]]\nname = \"x\"\nurl = \"ftp://host/dir\"\n"
    ));
    assert!(
        msg.contains("backup.remote.url") && msg.contains("ftp"),
        "{msg}"
    );
    let msg = err(&format!("{base}[[backup.remote]]\nname = \"a\"\nurl = \"s3://b\"\n[[backup.remote]]\nname = \"a\"\nurl = \"s3://c\"\n"));
    assert!(msg.contains("must be unique"), "{msg}");
    let msg = err(&format!(
        "{base}[[backup.remote]]\nname = \"a\"\nurl = \"s3://b\"\nsecret_access_key = \"x\"\n"
    ));
    assert!(msg.contains("unknown field `secret_access_key`"), "{msg}");
    let msg = err(&format!(
        "{base}[backup.encryption]\nrecipients = [\"age1nope\"]\n"
    ));
    assert!(
        msg.contains("backup.encryption.recipients") && msg.contains("age1nope"),
        "{msg}"
    );
    let msg = err(&format!("{base}[backup.encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\nencrypt_local = true\n"));
    assert!(msg.contains("set identity_file"), "{msg}");
    let msg = err("[database]\nname = \"a\"\n[schedule]\nbackup = \"every day\"\n");
    assert!(
        msg.contains("schedule.backup: \"every day\" is not a cron expression"),
        "{msg}"
    );
}

#[test]
fn webhook_urls_never_go_in_the_config() {
    let msg = err("[database]\nname = \"a\"\n[notify]\nslack_webhook = \"https://hooks.slack.com/services/T/B/x\"\n");
    assert!(msg.contains("secrets never go in the config file"), "{msg}");
    assert!(msg.contains("slack_webhook_env"), "{msg}");
    let msg = err(
        "[database]\nname = \"a\"\n[notify]\nwebhook_url_env = \"https://example.test/hook\"\n",
    );
    assert!(msg.contains("is not an environment variable name"), "{msg}");
    assert!(
        !msg.contains("example.test"),
        "the value is not echoed: {msg}"
    );
}

#[test]
fn secrets_are_masked_in_error_snippets() {
    let msg = err("[database]\nname = \"a\"\npasword = \"hunter2\"\n");
    assert!(msg.contains("unknown field `pasword`"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn docker_and_compose_paths_must_be_executables() {
    let msg =
        err("[database]\nname = \"app\"\n[runtime]\ncompose = \"/nonexistent/docker-compose\"\n");
    assert!(msg.contains("runtime.compose"), "{msg}");
    assert!(msg.contains("cannot be used"), "{msg}");
    let msg = err("[database]\nname = \"app\"\n[runtime]\ndocker = \"docker\"\n");
    assert!(
        msg.contains("runtime.docker") && msg.contains("not an absolute path"),
        "{msg}"
    );
    let plain = tempfile::NamedTempFile::new().unwrap();
    let msg = err(&format!(
        "[database]\nname = \"app\"\n[runtime]\ndocker = {:?}\n",
        plain.path().display().to_string()
    ));
    assert!(msg.contains("not an executable file"), "{msg}");
    let ok = parse(
        "[database]\nname = \"app\"\n[runtime]\ndocker = \"/bin/sh\"\nsudo = true\n",
        Path::new("x.toml"),
    )
    .unwrap();
    assert!(ok.runtime.sudo);
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("512"), Some(512));
    assert_eq!(parse_size("4KiB"), Some(4096));
    assert_eq!(parse_size("10MB"), Some(10_000_000));
    assert_eq!(parse_size("lots"), None);
}

/// An error in the second table of an array of tables points at that table's line, not
/// at the first table's.
#[test]
fn errors_in_the_second_array_table_point_at_it() {
    let base = "[database]\nname = \"a\"\n";
    let msg = err(&format!(
        "{base}[[backup.remote]]\nname = \"one\"\nurl = \"s3://bucket/app\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\n\
         [[backup.remote]]\nname = \"two\"\nurl = \"ftp://nas/backups\"\n"
    ));
    // Line 10 is the second table's url (the first table's is line 5).
    assert!(
        msg.starts_with("stablehand.toml:10:1: backup.remote.url: remote \"two\""),
        "{msg}"
    );
    let msg = err(&format!(
        "{base}[[health.http]]\nurl = \"http://127.0.0.1:1/health\"\n[[health.http]]\nurl = \"ftp://127.0.0.1/\"\n"
    ));
    assert!(
        msg.starts_with("stablehand.toml:6:1: health.http.url: probe 2 must be"),
        "{msg}"
    );
    // The name written in the second table (line 7), not the first one's (line 4).
    let msg = err(&format!(
        "{base}[[backup.remote]]\nname = \"one\"\nurl = \"/srv/a\"\n[[backup.remote]]\nname = \"bad name\"\nurl = \"/srv/b\"\n"
    ));
    assert!(
        msg.starts_with("stablehand.toml:7:1: backup.remote.name"),
        "{msg}"
    );
}
