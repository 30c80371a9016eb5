//! Rollbacks that choose right (issue 14), end to end on the real stack (Docker +
//! Compose, git with a bare remote, PostgreSQL in a compose service): which commits are
//! targets, which stable tag wins, that the database ends in the state of the release
//! the code returns to, what `recover` resumes, signals and a full disk during a
//! rollback, and a torn history line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::deploy::{steps, Stack};
use crate::support::{wait_for, Session};

fn stack(extra: &str) -> Option<Stack> {
    Stack::fast(extra)
}

/// `stablehand stable target --to COMMIT` does not refuse the commit for having failed
/// a health gate (its latest verdict is not a failure).
fn is_target(s: &Stack, commit: &str) -> bool {
    let (_, stdout, stderr) = s.stablehand(&["--json", "stable", "target", "--to", commit]);
    !format!("{stdout}{stderr}").contains("failed a health gate")
}

/// The migrations applied in the database (Prisma's ledger).
fn applied(s: &Stack) -> Vec<String> {
    s.psql(
        "appdb",
        "select migration_name from _prisma_migrations where finished_at is not null and rolled_back_at is null order by 1",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// The migrations in the checked-out tree.
fn in_tree(s: &Stack) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(s.app().join("prisma/migrations"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Code and database match, and the app answers.
fn assert_healthy_and_matching(s: &Stack, at: &str, what: &str) {
    assert_eq!(s.head(), at, "{what}: the code");
    assert_eq!(applied(s), in_tree(s), "{what}: code and database match");
    wait_for(Duration::from_secs(30), || {
        (s.health_status() == Some(200)).then_some(())
    })
    .unwrap_or_else(|| panic!("{what}: the app is not healthy"));
}

/// The history, oldest first.
fn history(s: &Stack) -> Vec<serde_json::Value> {
    let (code, stdout, stderr) = s.stablehand(&["--json", "history", "--limit", "100"]);
    assert_eq!(code, 0, "{stderr}");
    let mut h: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    h.reverse();
    h
}

/// Point 1: a commit that failed once (an outside service was down) and then passed
/// is a proven release; a deploy refused before its release ran never marks it.
#[test]
fn a_commit_that_failed_once_and_then_passed_is_a_rollback_target() {
    let Some(s) = stack("") else { return };
    let v1 = s.head();
    assert_eq!(s.deploy(&[]).0, 0);

    // X needs an outside service (flags/outage stands for it being down); its first
    // gate meets an outage: back to v1.
    let start = s.dev().join("app/start.sh");
    let script = fs::read_to_string(&start).unwrap().replace(
        "if [ -f /flags/broken ];",
        "if [ -f /flags/broken ] || [ -f /flags/outage ];",
    );
    fs::write(&start, script).unwrap();
    let x = s.commit("x: healthy, but its first gate meets an outage");
    fs::write(s.path().join("flags/outage"), "").unwrap();
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["rollback"]["target"], v1);
    assert!(!is_target(&s, &x), "x's latest verdict is a failure");
    // The outage is over: x passes and becomes latest-stable.
    fs::remove_file(s.path().join("flags/outage")).unwrap();
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(s.remote_stable().as_deref(), Some(x.as_str()));
    assert!(is_target(&s, &x), "x passed since it failed");

    // Y is broken: back to x, not a dead end (exit 12) with y left serving.
    s.set_healthy(false);
    let y = s.commit("y: broken");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["rollback"]["target"], x, "{v:#}");
    assert_eq!(v["rollback"]["target_reason"], "latest-stable");
    assert_healthy_and_matching(&s, &x, "after y");
    assert!(!is_target(&s, &y));
}

/// Point 1: a deploy that fails before its release ran (here its snapshot is refused:
/// a session holds the database) rolls back, since the app was stopped, but never
/// marks the release failed: its next deploy passes and is marked stable.
#[test]
fn a_release_that_never_ran_is_not_marked_failed() {
    let Some(s) = stack("snapshot = true\n") else {
        return;
    };
    assert_eq!(s.deploy(&[]).0, 0);
    let z = s.commit("z: healthy");
    let session = Session::sleeping(
        &format!("postgres://app@127.0.0.1:{}/appdb", s.db_port),
        "holds_appdb",
    );
    let (code, v) = s.deploy(&[]);
    drop(session);
    assert_eq!(code, 11, "{v:#}");
    assert!(steps(&v).contains(&"snapshot:failed".to_string()), "{v:#}");
    assert_eq!(v["rollback"]["failed_commit"], serde_json::Value::Null);
    assert!(is_target(&s, &z), "a release that never ran is not failed");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 0, "{v:#}");
    assert_healthy_and_matching(&s, &z, "z deployed");
}

/// Installs a pre-receive hook in the bare remote that refuses tag pushes (a push of
/// the stable tags that fails), or removes it.
fn refuse_tag_pushes(s: &Stack, refuse: bool) {
    let hook = s.path().join("remote.git/hooks/pre-receive");
    if refuse {
        fs::write(
            &hook,
            "#!/bin/sh\nwhile read old new ref; do case $ref in refs/tags/*) echo 'tags refused' >&2; exit 1;; esac; done\nexit 0\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    } else {
        let _ = fs::remove_file(&hook);
    }
}

/// Point 2: a stable mark whose push failed stays the local `latest-stable` (the newer
/// mark wins, and says so), is pushed again, and the rollback returns to it: the code
/// never goes back to a release older than the schema.
#[test]
fn a_stable_tag_whose_push_failed_wins_over_the_remotes_older_one() {
    let Some(s) = stack("") else { return };
    let v1 = s.head();
    assert_eq!(s.deploy(&[]).0, 0);
    assert_eq!(s.remote_stable().as_deref(), Some(v1.as_str()));

    s.add_migration("002_audit", "create table audit (id serial primary key);");
    let v2 = s.commit("v2: a migration");
    refuse_tag_pushes(&s, true);
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 0, "a failed push does not fail the deploy: {v:#}");
    assert_eq!(
        s.remote_stable().as_deref(),
        Some(v1.as_str()),
        "push refused"
    );
    refuse_tag_pushes(&s, false);

    s.set_healthy(false);
    s.commit("v3: broken, no migration");
    let (code, stdout, stderr) = s.stablehand(&["--json", "deploy"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(code, 11, "{v:#}");
    assert!(
        stderr.contains("the local one wins") && stderr.contains("pushed it again"),
        "the output says which tag won: {stderr}"
    );
    assert_eq!(v["rollback"]["target"], v2, "{v:#}");
    assert_eq!(
        s.remote_stable().as_deref(),
        Some(v2.as_str()),
        "pushed again"
    );
    assert!(s.table_exists("appdb", "audit"));
    assert_healthy_and_matching(&s, &v2, "after v3");
}

/// Point 2: the target is checked against the database before "leave it alone". Here
/// the operator marked an older release stable by hand while the schema has moved on:
/// a failing release with no migration of its own returns to the release the database
/// belongs to, not to the older mark.
#[test]
fn a_rollback_target_older_than_the_schema_is_not_taken() {
    let Some(s) = stack("") else { return };
    let v1 = s.head();
    assert_eq!(s.deploy(&[]).0, 0);
    s.add_migration("002_audit", "create table audit (id serial primary key);");
    let v2 = s.commit("v2: a migration");
    assert_eq!(s.deploy(&[]).0, 0);
    let (code, _, stderr) = s.stablehand(&["stable", "mark", &v1]);
    assert_eq!(code, 0, "{stderr}");

    s.set_healthy(false);
    s.commit("v3: broken, no migration");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["rollback"]["target"], v2, "{v:#}");
    let reason = v["rollback"]["target_reason"].as_str().unwrap();
    assert!(
        reason.contains("002_audit") && reason.contains("running before this deploy"),
        "{reason}"
    );
    assert_healthy_and_matching(&s, &v2, "after v3");
}

/// Point 3: `recover` finishes an interrupted rollback by hand with its own choices
/// (`--to` and `--db`), not the config's.
#[test]
fn recover_finishes_a_rollback_with_its_journaled_choices() {
    let Some(s) = stack("") else { return };
    let v1 = s.head();
    assert_eq!(s.deploy(&[]).0, 0);
    s.add_migration("002_audit", "create table audit (id serial primary key);");
    s.commit("v2: a migration");
    assert_eq!(s.deploy(&[]).0, 0);

    // `--db none`, killed once the app is stopped (on_rollback = auto would restore).
    let out = s
        .stablehand_cmd(&["rollback", "--to", &v1, "--db", "none", "--yes"])
        .env("STABLEHAND_FAILPOINT", "stop_app:done")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9));
    let (code, stdout, stderr) = s.stablehand(&["--json", "recover"]);
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["rollback"]["target"], v1);
    assert_eq!(v["rollback"]["db"]["action"], "none", "{v:#}");
    assert_eq!(s.head(), v1);
    assert!(
        s.table_exists("appdb", "audit"),
        "--db none: the database was left as it was"
    );
    assert_eq!(s.health_status(), Some(200));
}

/// A failing release (with a migration, when `n` is given), deployed with a signal
/// sent at `point`.
fn deploy_signalled(
    s: &Stack,
    n: Option<usize>,
    point: &str,
    signal: &str,
) -> (i32, serde_json::Value) {
    if let Some(n) = n {
        s.add_migration(
            &format!("1{n:02}_t{n}"),
            &format!("create table t{n} (id int);"),
        );
    }
    s.set_healthy(false);
    s.commit(&format!("release {n:?}: broken, {signal} at {point}"));
    let (code, v, stderr) = s.deploy_at_failpoint(point, signal);
    assert!(!v.is_null(), "{point} {signal}: an outcome: {stderr}");
    // SIGHUP is ignored altogether; INT2 aborts.
    if !["INT2", "HUP"].contains(&signal) {
        assert!(
            stderr.contains("finishing the way back to a healthy release"),
            "{point} {signal}: says what it does: {stderr}"
        );
    }
    (code, v)
}

/// Sends `signal` at each rollback step in `points` of a failing release (with a
/// migration when `migrations`, so the database is restored): the rollback is finished
/// (exit 11, production healthy on the stable release, code and database matching),
/// never abandoned with the app stopped.
fn signal_each_rollback_step(points: &[(&str, &str)], migrations: bool) {
    let Some(s) = stack("") else { return };
    let v1 = s.head();
    assert_eq!(s.deploy(&[]).0, 0);
    for (n, (point, signal)) in points.iter().enumerate() {
        let (code, v) = deploy_signalled(&s, migrations.then_some(n + 1), point, signal);
        assert_eq!(code, 11, "{point} {signal}: {v:#}");
        assert_eq!(v["rollback"]["target"], v1);
        assert!(
            steps(&v).contains(&"rollback_gate:done".to_string()),
            "{point}: {v:#}"
        );
        assert!(!s.app().join(".stablehand/journal.json").exists());
        assert_healthy_and_matching(&s, &v1, point);
        // The next release has only its own migration.
        let dir = format!("prisma/migrations/1{:02}_t{}", n + 1, n + 1);
        if migrations {
            fs::remove_dir_all(s.dev().join(dir)).unwrap();
        }
    }
}

/// Point 4: a signal while the app is stopped and the database is decided and restored.
#[test]
fn a_signal_during_the_database_rollback_finishes_it() {
    signal_each_rollback_step(
        &[
            ("stop_app:start", "TERM"),
            ("database:start", "INT"),
            ("database_restore:start", "TERM"),
        ],
        true,
    );
}

/// Point 4: a signal while the code is reverted, the old release started and gated.
#[test]
fn a_signal_during_the_code_rollback_finishes_it() {
    signal_each_rollback_step(
        &[
            ("revert_code:start", "TERM"),
            ("switch:start", "TERM"),
            ("rollback_gate:start", "TERM"),
        ],
        false,
    );
}

/// Point 4: two signals in a row abort: the journal stays, the exit says so (12), and
/// `recover` brings production back. A signal during the deploy's own gate ends the
/// gate early and rolls back, without marking the release failed.
#[test]
fn an_aborted_rollback_keeps_its_journal_and_a_signalled_gate_condemns_nothing() {
    let Some(s) = stack("") else { return };
    let v1 = s.head();
    assert_eq!(s.deploy(&[]).0, 0);

    let (code, v) = deploy_signalled(&s, Some(1), "database_restore:start", "INT2");
    assert_eq!(code, 12, "{v:#}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("ABORTED") && message.contains("stablehand recover"),
        "{message}"
    );
    assert!(s.app().join(".stablehand/journal.json").exists());
    let (code, stdout, _) = s.stablehand(&["--json", "recover"]);
    assert_eq!(code, 11, "{stdout}");
    assert!(!s.app().join(".stablehand/journal.json").exists());
    assert_healthy_and_matching(&s, &v1, "recovered");
    fs::remove_dir_all(s.dev().join("prisma/migrations/101_t1")).unwrap();

    // A healthy release whose gate is interrupted: rolled back, not condemned.
    s.set_healthy(true);
    let h = s.commit("healthy, its gate interrupted");
    let (code, v, stderr) = s.deploy_at_failpoint("gate:start", "TERM");
    assert_eq!(code, 11, "{v:#}\n{stderr}");
    assert!(
        v["message"].as_str().unwrap().contains("interrupted"),
        "{v:#}"
    );
    assert_eq!(v["rollback"]["failed_commit"], serde_json::Value::Null);
    assert!(is_target(&s, &h));
    assert_healthy_and_matching(&s, &v1, "after the interrupted gate");
}

/// A small tmpfs mounted on a directory for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mounting a tmpfs on {} (tests run as root)",
            dir.display()
        );
        Tmpfs(dir.to_owned())
    }

    /// Writes until the filesystem is full.
    fn fill(&self) {
        let mut f = fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        use std::io::Write;
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Point 5: the disk of `.stablehand/` fills up while the gate of a broken release
/// runs: the journal and the history can no longer be written, yet the rollback runs,
/// is announced, and exits with a contract code (11), never a bare 1.
#[test]
fn a_full_disk_during_a_rollback_still_rolls_back_and_announces() {
    let events = tempfile::tempdir().unwrap();
    let hook = events.path().join("hook.sh");
    let got = events.path().join("event.json");
    fs::write(&hook, format!("#!/bin/sh\ncat > {}\n", got.display())).unwrap();
    let Some(s) = stack(&format!(
        "\n[notify]\non_rollback = \"sh {}\"\n",
        hook.display()
    )) else {
        return;
    };
    let v1 = s.head();
    let disk = Tmpfs::mount(&s.app().join(".stablehand"), "256k");
    assert_eq!(s.deploy(&[]).0, 0);

    s.set_healthy(false);
    s.commit("v2: broken");
    let (code, v, stderr) = s.deploy_during_gate(|| disk.fill());
    assert_eq!(code, 11, "{v:#}\n{stderr}");
    assert_eq!(v["rollback"]["target"], v1);
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("the journal could not be written during the rollback"),
        "{message}"
    );
    let event = fs::read_to_string(&got).expect("the rollback was announced");
    assert!(event.contains("rolled_back"), "{event}");
    // Recorded, or the outcome says it could not be (a history page may have had room).
    let recorded = fs::read_to_string(s.app().join(".stablehand/history.jsonl"))
        .unwrap_or_default()
        .contains("rolled_back");
    assert!(
        recorded || message.contains("the history could not be written"),
        "{message}"
    );
    drop(disk);
    assert_eq!(s.head(), v1);
    assert_eq!(s.health_status(), Some(200));
}

/// Point 5: a torn last line of history.jsonl (a crash mid-append) never swallows the
/// next record, and `status` and `history` report it instead of dropping it quietly.
#[test]
fn a_torn_history_line_is_reported_and_never_swallows_the_next_record() {
    let Some(s) = stack("") else { return };
    assert_eq!(s.deploy(&[]).0, 0);
    let path = s.app().join(".stablehand/history.jsonl");
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    use std::io::Write;
    f.write_all(b"{\"id\":\"deploy-2026").unwrap();
    drop(f);
    let v2 = s.commit("v2");
    assert_eq!(s.deploy(&[]).0, 0);
    let h = history(&s);
    assert_eq!(h.len(), 2, "{h:#?}");
    assert_eq!(h[1]["to"], v2);
    let (_, status, _) = s.stablehand(&["status"]);
    assert!(status.contains("1 damaged line(s) (2)"), "{status}");
    let (_, _, stderr) = s.stablehand(&["history"]);
    assert!(stderr.contains("damaged line"), "{stderr}");
}
