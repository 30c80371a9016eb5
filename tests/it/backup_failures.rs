//! Every way a backup can fail: each test asserts the exit code, the message, and that
//! no file that looks like a backup remains.

use std::os::unix::fs::symlink;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::require_pg;
use crate::support::{
    bytes_written, children_named, missing, wait_for, write_script, App, Pg, PG_BIN,
};
use crate::support::{PW_SECRET, PW_USER};

/// A database big enough that pg_dump streams for a while (about 90 MB of text).
fn big_db(pg: &Pg) -> String {
    let db = pg.create_db("big");
    pg.psql(
        &db,
        "create table big (id bigint, a text, b text);
         insert into big select g, md5(g::text) || md5((g+1)::text), repeat(md5(g::text), 2) from generate_series(1, 600000) g;",
    );
    db
}

#[test]
fn pg_dump_killed_mid_stream_leaves_nothing() {
    let pg = require_pg!();
    let db = big_db(pg);
    // One zstd thread and a high level slow the pipeline so the kill lands mid-stream.
    let app = App::direct(
        &pg.url(&db),
        "[backup]\nthreads = 1\ncompression_level = 12\n",
    );
    // The real pg_dump, once it has streamed more than 4 MB.
    let (child, pid) = backup_in_flight(&app);
    crate::support::kill9(pid);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("backup failed at stage dump (pg_dump)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("was killed by signal 9 (SIGKILL)"),
        "{stderr}"
    );
    assert!(stderr.contains("no backup was recorded"), "{stderr}");
    app.assert_no_backup_left();
}

#[test]
fn pg_dump_exiting_non_zero_leaves_nothing() {
    let pg = require_pg!();
    let db = pg.sample_db();
    // A real permission error: a role that may connect but not read a table.
    let role = crate::support::unique("limited");
    pg.psql(
        &db,
        &format!(
            "create role {role} login; create table secret (x int); insert into secret values (1);"
        ),
    );
    let app = App::direct(
        &format!("postgresql://{role}@127.0.0.1:{}/{db}", pg.port),
        "",
    );
    app.backup_fails_with(&[
        "backup failed at stage dump (pg_dump)",
        "`pg_dump` exited with status 1",
        "permission denied",
    ]);
}

#[test]
fn stalled_dump_is_killed_at_the_timeout() {
    let pg = require_pg!();
    let db = pg.sample_db();
    // A real stall: another session holds an exclusive lock, so pg_dump waits forever.
    // (A table with no defaults, indexes or constraints: reading the schema needs no
    // lock on it, so it is pg_dump that waits.)
    pg.psql(
        &db,
        "create table plain (v text); insert into plain values ('x')",
    );
    let locker = crate::support::TableLock::hold(&pg.url(&db), "plain");

    // Connect as a password user: while pg_dump waits, its argv and environment are checked.
    let url = format!(
        "postgresql://{PW_USER}:{PW_SECRET}@127.0.0.1:{}/{db}",
        pg.port
    );
    let app = App::direct(&url, "[backup]\ntimeout = \"3s\"\n");
    let started = Instant::now();
    let child = app
        .std_cmd()
        .arg("backup")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The dumping pg_dump (not `pg_dump --version`, and past Debian's perl wrapper).
    let dump = wait_for(Duration::from_secs(20), || {
        children_named(child.id(), "pg_dump")
            .into_iter()
            .find(|pid| {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                !exe.to_string_lossy().contains("perl")
                    && String::from_utf8_lossy(&argv).contains("--format=custom")
            })
    })
    .expect("pg_dump started");
    let argv = std::fs::read(format!("/proc/{dump}/cmdline")).unwrap();
    let environ = std::fs::read(format!("/proc/{dump}/environ")).unwrap();
    let out = child.wait_with_output().unwrap();

    let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
    assert!(argv.contains("--format=custom"), "{argv}");
    assert!(
        !argv.contains(PW_SECRET),
        "the password must not be in argv: {argv}"
    );
    assert!(String::from_utf8_lossy(&environ).contains(&format!("PGPASSWORD={PW_SECRET}")));

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`pg_dump` did not finish within 3s and was killed"),
        "{stderr}"
    );
    assert!(!stderr.contains(PW_SECRET));
    assert!(started.elapsed() < Duration::from_secs(30));
    // The killed dump's server session (still waiting for the lock) was ended.
    let left = pg.psql(
        "postgres",
        &format!("select count(*) from pg_stat_activity where datname = '{db}' and application_name like 'stablehand%'"),
    );
    drop(locker);
    assert_eq!(
        left, "0",
        "no stablehand session may outlive a failed backup"
    );
    app.assert_no_backup_left();
}

/// Mounts a small tmpfs; unmounts on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_the_write_and_leaves_nothing() {
    let pg = require_pg!();
    if !nix::unistd::geteuid().is_root()
        && missing("root (to mount a tmpfs)", "not running as root")
    {
        return;
    }
    let db = pg.create_db("noise");
    // Random hex compresses about 2x: several MB that cannot fit in 512 KiB.
    pg.psql(
        &db,
        "create table noise (v text); insert into noise select md5(random()::text) || md5(random()::text) from generate_series(1, 100000);",
    );
    let app = App::direct(&pg.url(&db), "");
    let dir = app.backup_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a tmpfs");
    let _mount = Tmpfs(dir.clone());

    app.backup_fails_with(&["backup failed at stage write", "No space left on device"]);
}

#[test]
fn unreachable_database_fails_at_preflight() {
    let pg = require_pg!();
    let _ = pg;
    let port = crate::support::free_port();
    let app = App::direct(
        &format!("postgresql://postgres@127.0.0.1:{port}/nothing"),
        "",
    );
    app.backup_fails_with(&[
        "backup failed at stage preflight",
        "cannot reach the database",
        "Connection refused",
    ]);
}

/// A `database.client_bin_dir` holding the real psql and nothing else.
fn client_dir_with_psql_only() -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    symlink(format!("{PG_BIN}/psql"), bin.path().join("psql")).unwrap();
    bin
}

#[test]
fn missing_pg_dump_is_named_with_advice() {
    let pg = require_pg!();
    let db = pg.sample_db();
    // A client directory that has psql but no pg_dump.
    let bin = client_dir_with_psql_only();
    let app = App::direct(
        &pg.url(&db),
        &format!("client_bin_dir = {:?}\n", bin.path()),
    );
    app.backup_fails_with(&[
        "backup failed at stage preflight",
        "pg_dump` was not found",
        "install the PostgreSQL client tools",
    ]);
}

#[test]
fn pg_dump_older_than_the_server_is_refused() {
    let pg = require_pg!();
    let db = pg.sample_db();
    // Failure injection: no older pg_dump is installed here, so a fake one reports 14.11.
    let bin = client_dir_with_psql_only();
    write_script(
        &bin.path().join("pg_dump"),
        "#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.11'\n",
    );
    let app = App::direct(
        &pg.url(&db),
        &format!("client_bin_dir = {:?}\n", bin.path()),
    );
    app.backup_fails_with(&[
        "pg_dump 14.11 is older than the PostgreSQL 15",
        "database.client_bin_dir",
    ]);
}

#[test]
fn backup_below_min_size_does_not_count() {
    let pg = require_pg!();
    let db = pg.create_db("empty");
    let app = App::direct(&pg.url(&db), "[backup]\nmin_size = \"1MiB\"\n");
    app.backup_fails_with(&[
        "backup failed at stage check",
        "below backup.min_size (1048576 bytes)",
    ]);
}

#[test]
fn leftovers_of_a_killed_stablehand_are_ignored_then_cleaned() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let app = App::direct(&pg.url(&db), "");
    std::fs::create_dir_all(app.backup_dir()).unwrap();
    let partial = app
        .backup_dir()
        .join(".manual_20200101_000000_manual.dump.zst.partial");
    std::fs::write(&partial, b"half a backup").unwrap();
    app.cmd()
        .args(["backup", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no backups yet"))
        .stderr(predicate::str::contains("unfinished write"));
    app.cmd().arg("backup").assert().success();
    assert!(
        !partial.exists(),
        "the next backup removes leftovers under the lock"
    );
}

/// Starts `stablehand backup` on a big database and returns it once pg_dump streams.
fn backup_in_flight(app: &App) -> (std::process::Child, u32) {
    let child = app
        .std_cmd()
        .arg("backup")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let parent = child.id();
    let dump = wait_for(Duration::from_secs(60), || {
        children_named(parent, "pg_dump")
            .into_iter()
            .find(|pid| bytes_written(*pid).unwrap_or(0) > 4 << 20)
    })
    .expect("pg_dump started streaming");
    (child, dump)
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting to be reaped by its (dead) parent's reaper is gone too.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn interrupt_kills_pg_dump_and_removes_the_partial_file() {
    let pg = require_pg!();
    let db = big_db(pg);
    let app = App::direct(
        &pg.url(&db),
        "[backup]\nthreads = 1\ncompression_level = 12\n",
    );
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let (child, dump) = backup_in_flight(&app);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{signal}: {stderr}");
        assert!(
            stderr.contains("stopped because stablehand was interrupted"),
            "{stderr}"
        );
        assert!(
            wait_for(Duration::from_secs(10), || process_gone(dump).then_some(())).is_some(),
            "pg_dump {dump} must not outlive stablehand"
        );
        app.assert_no_backup_left();
    }
}

#[test]
fn a_killed_stablehand_leaves_only_an_unfinished_file_that_never_counts() {
    let pg = require_pg!();
    let db = big_db(pg);
    let app = App::direct(
        &pg.url(&db),
        "[backup]\nthreads = 1\ncompression_level = 12\n",
    );
    let (mut child, dump) = backup_in_flight(&app);
    child.kill().unwrap(); // SIGKILL: no cleanup can run
    child.wait().unwrap();
    // pg_dump loses its reader and dies of SIGPIPE.
    assert!(wait_for(Duration::from_secs(20), || process_gone(dump).then_some(())).is_some());
    let files = app.backup_files();
    assert!(
        files
            .iter()
            .all(|f| f.starts_with('.') && f.ends_with(".partial")),
        "{files:?}"
    );
    app.cmd()
        .args(["--json", "backup", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"backups\": []"))
        .stdout(predicate::str::contains("unfinished write"));
}
