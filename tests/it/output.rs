//! What an operator reads: the human output of deploy (plan, deployed, rolled back),
//! rollback, status, history, backup list, doctor and the main errors, snapshot-tested
//! on the real stack of `deploy.rs` (the demo app, PostgreSQL in compose). Times, ids,
//! commits, sizes, ports and paths are filtered; everything else is as printed.

use std::path::Path;

use crate::deploy::Stack;

/// Stdout and stderr of one command, with its exit code, filtered for what changes
/// from run to run.
fn shown(s: &Stack, args: &[&str]) -> String {
    let (code, stdout, stderr) = s.stablehand(args);
    // The gate's rounds before its verdict depend on timing (how many, and whether the
    // app was still starting): only the verdict line is kept.
    let round = regex::Regex::new(r"^\[ *\d+\.\ds\] (ok \(|not yet: )").unwrap();
    let stderr: String = stderr
        .lines()
        .filter(|l| !round.is_match(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut text = format!("$ stablehand {}\n[exit {code}]\n", args.join(" "));
    if !stdout.is_empty() {
        text.push_str(&format!("--- stdout\n{stdout}"));
    }
    if !stderr.is_empty() {
        text.push_str(&format!("--- stderr\n{stderr}"));
    }
    filtered(s, &text)
}

fn filtered(s: &Stack, text: &str) -> String {
    let root = s.path().to_string_lossy().into_owned();
    let real_root = std::fs::canonicalize(s.path())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| root.clone());
    let mut text = text
        .replace(&real_root, "[root]")
        .replace(&root, "[root]")
        .replace(&s.project, "[project]")
        .replace(&s.web_port.to_string(), "[web-port]")
        .replace(&s.db_port.to_string(), "[db-port]");
    // Order matters: stamps and times before the plain numbers they contain.
    for (pattern, to) in [
        (
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?Z?( UTC)?",
            "[time]",
        ),
        (r"\d{8}[_-]?\d{6}", "[stamp]"),
        (r"\b[0-9a-f]{7,40}\b", "[sha]"),
        (r"_[0-9a-f]{7}\b", "_[sha]"),
        (r"\b\d+[smhd] ago\b", "[age]"),
        (r"\b\d+(\.\d+)? ?(B|KiB|MiB|GiB|kB|MB|GB)\b", "[size]"),
        (r"\b\d+(\.\d+)?(ms|s)\b", "[dur]"),
        (r"\b\d+ ms\b", "[dur]"),
        (r"\b\d+\.\d+x\b", "[ratio]"),
        // Table columns and right-aligned cells are as wide as what was filtered out.
        (r"[ \t]+\n", "\n"),
        (r" {2,}", "  "),
    ] {
        text = replaced(&text, pattern, to);
    }
    text
}

fn replaced(text: &str, pattern: &str, to: &str) -> String {
    regex::Regex::new(pattern)
        .unwrap()
        .replace_all(text, to)
        .into_owned()
}

#[test]
fn what_an_operator_reads_through_a_deploy_a_rollback_and_the_reports() {
    let Some(s) = Stack::fast("") else { return };
    let mut seen = Vec::new();
    seen.push(shown(&s, &["deploy", "--dry-run"]));
    seen.push(shown(&s, &["deploy"]));

    // A broken release with a migration: rolled back, code and database.
    s.add_migration(
        "20261202000000_add_note",
        "alter table messages add column note text;",
    );
    s.set_healthy(false);
    s.commit("v2: a note column, broken health");
    // A nullable column: the old code could keep running beside it.
    seen.push(shown(&s, &["deploy", "--dry-run"]));
    seen.push(shown(&s, &["deploy"]));

    // Running latest-stable: a rollback by hand has nowhere to go.
    seen.push(shown(&s, &["rollback", "--yes"]));
    seen.push(shown(&s, &["status"]));
    seen.push(shown(&s, &["history"]));
    seen.push(shown(&s, &["backup", "list"]));
    seen.push(shown(&s, &["stable", "target"]));

    // A release that drops a column the old code reads: not compatible, and why.
    s.set_healthy(true);
    s.add_migration(
        "20261202000100_drop_body",
        "ALTER TABLE messages DROP COLUMN body;",
    );
    s.commit("v3: drop the body column");
    seen.push(shown(&s, &["deploy", "--dry-run"]));

    // The main errors: a typo in the config, an unknown backup, a missing --force.
    let config = s.app().join("stablehand.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        s.app().join("typo.toml"),
        good.replace("[database]\n", "[database]\nnmae = \"x\"\n"),
    )
    .unwrap();
    seen.push(shown(&s, &["--config", "typo.toml", "status"]));
    seen.push(shown(&s, &["restore", "nosuchbackup", "--yes"]));
    seen.push(shown(&s, &["unlock"]));
    seen.push(shown(&s, &["rollback"]));

    insta::assert_snapshot!(seen.join("\n"));
    assert!(Path::new(&config).exists());
}

#[test]
fn what_doctor_says_on_a_healthy_stack() {
    let Some(s) = Stack::fast("") else { return };
    let text = shown(&s, &["doctor"]);
    // Tool versions and free space are the machine's: keep the checks' names and verdicts.
    let mut text = text.replace("127.0.0.1", "LOOPBACK");
    for (pattern, to) in [
        (r"\b\d+(\.\d+)+([-+~][\w.+~-]*)?", "[version]"),
        (r" \((Debian|Ubuntu)[^)]*\)", ""),
    ] {
        text = replaced(&text, pattern, to);
    }
    let text = text.replace("LOOPBACK", "127.0.0.1");
    // What is shown is the tools' words, never a Rust debug form.
    assert!(!text.contains("{ text:"), "{text}");
    insta::assert_snapshot!(text);
}
