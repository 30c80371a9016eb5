//! Deploys that survive the CI job (issue 20), end to end on the real stack: SIGTERM,
//! SIGINT and SIGHUP at each deploy step (the failpoints send them, as a cancelled
//! workflow or a dropped SSH session would), a deploy whose terminal closes, and
//! `deploy --detach` + `wait`. Each ends with production healthy on a matching release
//! and nothing written before the deploy lost. (Signals at each rollback step:
//! tests/it/rollback_rules.rs.)

use std::process::Command;
use std::time::Duration;

use crate::deploy::Stack;
use crate::support::wait_for;

/// A stack with v1 deployed and stable.
fn stack() -> Option<Stack> {
    Stack::fast_deployed()
}

/// Deploys a new release (healthy unless the test broke it) with `signal` sent at `point`; returns the exit code,
/// the outcome and stderr, and checks what always holds: the journal is gone, the app is
/// healthy, and the rows written before the deploy are all there.
fn deploy_signalled(s: &Stack, point: &str, signal: &str) -> (i32, serde_json::Value, String) {
    s.commit(&format!("release, {signal} at {point}"));
    s.psql(
        "appdb",
        &format!("insert into messages (body) values ('before {signal} at {point}')"),
    );
    let rows = s.count("select count(*) from messages");
    let (code, v, stderr) = s.deploy_at_failpoint(point, signal);
    assert!(!v.is_null(), "{point} {signal}: an outcome: {stderr}");
    assert!(
        !s.app().join(".stablehand/journal.json").exists(),
        "{point} {signal}: finished, journal removed: {v:#}"
    );
    wait_for(Duration::from_secs(30), || {
        (s.health_status() == Some(200)).then_some(())
    })
    .unwrap_or_else(|| panic!("{point} {signal}: the app is not healthy: {v:#}"));
    assert!(
        s.count("select count(*) from messages") >= rows,
        "{point}: rows lost"
    );
    (code, v, stderr)
}

/// Before production is touched, SIGINT/SIGTERM refuse cleanly: exit 10, the code back
/// at the running commit, the old containers never stopped, the error says
/// "interrupted" (never that a tool is missing).
#[test]
fn a_signal_before_stop_refuses_and_puts_the_code_back() {
    let Some(s) = stack() else { return };
    for (point, signal) in [
        ("checkout:done", "TERM"),
        ("build:done", "INT"),
        ("backup:done", "TERM"),
    ] {
        let running = s.head();
        let (code, v, stderr) = deploy_signalled(&s, point, signal);
        assert_eq!(code, 10, "{point} {signal}: {v:#}\n{stderr}");
        let message = v["message"].as_str().unwrap();
        assert!(message.contains("interrupted"), "{point}: {message}");
        assert!(
            !message.contains("works on this machine") && !message.contains("resetting the code"),
            "{point}: blames nothing else, and the code went back: {message}"
        );
        assert_eq!(s.head(), running, "{point}: the code is back");
    }
    // Nothing was left behind: the next deploy goes through.
    let v2 = s.commit("v2");
    assert_eq!(s.deploy(&[]).0, 0);
    assert_eq!(s.head(), v2);
}

/// A stack whose deploys have every step: a snapshot and a migrate command too.
fn stack_with_every_step() -> Option<Stack> {
    let s = Stack::fast("snapshot = true\nmigrate_command = \"true\"\n")?;
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 0, "{v:#}");
    Some(s)
}

/// Sends `signal` at each deploy step in `points` of a healthy release: the deploy ends
/// with exit `expect` (11: rolled back, the release not marked failed; 0: deployed and
/// marked stable), saying what it does.
fn signal_each_deploy_step(s: &Stack, points: &[&str], signal: &str, expect: i32) {
    for point in points {
        let running = s.head();
        let (code, v, stderr) = deploy_signalled(s, point, signal);
        assert_eq!(code, expect, "{point} {signal}: {v:#}\n{stderr}");
        if signal != "HUP" {
            assert!(
                stderr.contains("finishing the way back to a healthy release"),
                "{point}: says what it does: {stderr}"
            );
        }
        if expect == 11 {
            assert_eq!(s.head(), running, "{point}");
            assert_eq!(v["rollback"]["failed_commit"], serde_json::Value::Null);
        } else {
            assert_eq!(
                s.head(),
                s.remote_stable().unwrap(),
                "{point}: marked stable"
            );
        }
    }
}

/// From `stop` on, before the gate passed, a signal does not abandon production: the
/// gate ends (or is never begun) and the release is rolled back, not marked failed.
#[test]
fn a_signal_after_stop_before_the_gate_passed_rolls_back() {
    let Some(s) = stack_with_every_step() else {
        return;
    };
    for (point, signal) in [
        ("stop:done", "TERM"),
        ("snapshot:start", "TERM"),
        ("migrate:start", "INT"),
        ("start:done", "TERM"),
    ] {
        signal_each_deploy_step(&s, &[point], signal, 11);
    }
}

/// Once the gate passed, a signal lets the deploy finish: marked stable, exit 0.
#[test]
fn a_signal_after_the_gate_passed_finishes_the_deploy() {
    let Some(s) = stack() else { return };
    signal_each_deploy_step(&s, &["gate:done", "mark_stable:start"], "TERM", 0);
    signal_each_deploy_step(&s, &["prune:start"], "INT", 0);
}

/// SIGHUP (the SSH session dropped) is not an interrupt at all: the deploy runs to
/// completion wherever it arrives (the first half of the steps).
#[test]
fn a_hangup_at_each_early_deploy_step_lets_the_deploy_complete() {
    let Some(s) = stack_with_every_step() else {
        return;
    };
    signal_each_deploy_step(
        &s,
        &[
            "checkout:start",
            "build:start",
            "backup:start",
            "stop:start",
            "snapshot:start",
        ],
        "HUP",
        0,
    );
}

/// SIGHUP at each of the later deploy steps.
#[test]
fn a_hangup_at_each_late_deploy_step_lets_the_deploy_complete() {
    let Some(s) = stack_with_every_step() else {
        return;
    };
    signal_each_deploy_step(
        &s,
        &[
            "migrate:start",
            "start:start",
            "gate:start",
            "mark_stable:start",
            "prune:start",
        ],
        "HUP",
        0,
    );
}

/// SIGHUP at each step of a rollback (a failing release with a migration, the
/// snapshot swapped back in): the rollback completes, exit 11, healthy on v1.
#[test]
fn a_hangup_at_each_rollback_step_lets_the_rollback_complete() {
    let Some(s) = Stack::fast("snapshot = true\n") else {
        return;
    };
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 0, "{v:#}");
    let v1 = s.head();
    s.set_healthy(false);
    for (n, point) in [
        "stop_app:start",
        "database:start",
        "database_swap:start",
        "revert_code:start",
        "switch:start",
        "rollback_gate:start",
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("2{n:02}_h{n}");
        s.add_migration(&name, &format!("create table h{n} (id int);"));
        let (code, v, stderr) = deploy_signalled(&s, point, "HUP");
        assert_eq!(code, 11, "{point}: {v:#}\n{stderr}");
        assert!(
            crate::deploy::steps(&v).contains(&point.replace(":start", ":done")),
            "{point} ran: {v:#}"
        );
        assert_eq!(s.head(), v1, "{point}");
        assert!(!s.table_exists("appdb", &format!("h{n}")), "{point}");
        std::fs::remove_dir_all(s.dev().join("prisma/migrations").join(name)).unwrap();
    }
}

/// A deploy run on a terminal that then closes (the SSH connection drops during the
/// gate): it goes on, writing to a terminal that is gone, and its outcome is readable
/// afterwards with `stablehand wait`.
#[test]
fn a_deploy_whose_terminal_closes_finishes_and_its_outcome_stays_readable() {
    let Some(s) = stack() else { return };
    let v2 = s.commit("v2: deployed from a terminal that closes");
    // A pty whose master is closed once the deploy reaches its gate: the kernel sends
    // SIGHUP to the deploy, and every later write to the terminal fails.
    let script = r#"
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
seen = b""
deadline = time.time() + 180
while b"==> gate" not in seen and time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 1)
    if ready:
        try:
            seen += os.read(fd, 4096)
        except OSError:
            break
os.close(fd)
print("closed" if b"==> gate" in seen else "no gate: " + seen.decode(errors="replace"))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_stablehand"))
        .arg("deploy")
        .current_dir(s.app())
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.trim(), "closed", "{said}");
    let (code, stdout, stderr) = s.stablehand(&["--json", "wait", "--timeout", "4m"]);
    let w: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(code, 0, "{w:#}");
    assert_eq!(w["release"]["outcome"], "deployed", "{w:#}");
    assert_eq!(w["release"]["to"], v2);
    assert_eq!(s.head(), v2);
    assert_eq!(s.remote_stable().as_deref(), Some(v2.as_str()));
    assert_eq!(s.health_status(), Some(200));
}

/// `deploy --detach` returns at once with the deploy running in its own session;
/// `wait` waits for it and exits with its code (0 deployed, 11 rolled back).
#[test]
fn a_detached_deploy_is_waited_for_with_its_exit_code() {
    let Some(s) = stack() else { return };
    let v2 = s.commit("v2: detached");
    let (code, stdout, stderr) = s.stablehand(&["--json", "deploy", "--detach"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let d: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(d["running"], true, "{d:#}");
    assert!(
        s.app().join(".stablehand/lock").exists(),
        "the detached deploy holds the lock when --detach returns"
    );
    let (code, stdout, _) = s.stablehand(&["--json", "wait"]);
    let w: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(code, 0, "{w:#}");
    assert_eq!(w["release"]["to"], v2);
    let log = std::fs::read_to_string(s.app().join(".stablehand/detached.log")).unwrap();
    assert!(log.to_lowercase().contains("deployed"), "{log}");

    s.set_healthy(false);
    s.commit("v3: broken, detached");
    let (code, _, _) = s.stablehand(&["deploy", "--detach"]);
    assert_eq!(code, 0);
    let (code, stdout, _) = s.stablehand(&["wait"]);
    assert_eq!(code, 11, "{stdout}");
    assert!(stdout.contains("rolled_back"), "{stdout}");
    assert_eq!(s.head(), v2);
}
