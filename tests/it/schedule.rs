//! `serve`'s scheduled jobs and deploys never collide (issue 14, point 7): a job due while
//! a deploy runs waits for it, says so, and never connects during the deploy's snapshot
//! step (which refuses while anyone is connected to the app database). The test names say
//! `compose` so that nextest gives them the Compose tests' time limit (.config/nextest.toml).

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use jiff::Timestamp;

use crate::deploy::{steps, Stack};
use crate::serve::Server;
use crate::support::wait_for;

/// The scheduled backups in `dir`: (id, created_at).
fn scheduled_backups(dir: &Path) -> Vec<(String, Timestamp)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
        .filter_map(|e| {
            let m: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(e.path()).ok()?).ok()?;
            (m["label"] == "scheduled").then(|| {
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["created_at"].as_str().unwrap().parse().unwrap(),
                )
            })
        })
        .collect()
}

/// Serve's stderr lines so far, appended to `seen`; the first (index >= `from`) holding
/// every one of `needles`.
fn line_with(
    server: &Server,
    seen: &mut Vec<String>,
    from: usize,
    needles: &[&str],
) -> Option<usize> {
    seen.extend(server.lines.try_iter());
    (from..seen.len()).find(|&i| needles.iter().all(|n| seen[i].contains(n)))
}

#[test]
fn a_scheduled_backup_due_during_a_compose_deploy_waits_for_it_and_stays_out_of_its_snapshot() {
    let Some(s) = Stack::with_health(
        "consecutive = 1\nstable_for = \"1s\"\ntimeout = \"30s\"\ninterval = \"300ms\"\n",
        "snapshot = true\n\n[schedule]\nbackup = \"* * * * * *\"\n\n[backup]\nkeep_last = 1000\n",
    ) else {
        return;
    };
    let backups_dir = s.app().join("backups/database");
    let server = Server::start(s.stablehand_cmd(&[]), "127.0.0.1:0");
    let mut seen = Vec::new();
    wait_for(Duration::from_secs(60), || {
        line_with(&server, &mut seen, 0, &["scheduled backup done: backup"]).map(|_| ())
    })
    .unwrap_or_else(|| panic!("serve runs scheduled backups: {seen:#?}"));

    // The first release (the Stack's v1): a deploy with every step, the snapshot included.
    let mut child = s
        .stablehand_cmd(&["--json", "deploy"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let journal_path = s.app().join(".stablehand/journal.json");
    let journal = || -> Option<serde_json::Value> {
        serde_json::from_str(&fs::read_to_string(&journal_path).ok()?).ok()
    };
    // The deploy has started (its journal is written once it holds the lock).
    let started: Timestamp = wait_for(Duration::from_secs(120), || {
        journal()?["started_at"].as_str()?.parse().ok()
    })
    .expect("the deploy writes its journal");
    let deploy_pid = format!("a deploy (pid {pid} on ");
    let waiting = match wait_for(Duration::from_secs(120), || {
        let exited = child.try_wait().unwrap().is_some();
        match line_with(
            &server,
            &mut seen,
            0,
            &["scheduled backup waiting: ", &deploy_pid, " is running;"],
        ) {
            Some(i) => Some(Some(i)),
            None => exited.then_some(None),
        }
    })
    .expect("the deploy ends within 120 s")
    {
        Some(i) => i,
        None => {
            let out = child.wait_with_output().unwrap();
            panic!(
                "no scheduled job came due and waited while the deploy ran (deploy exit {:?}): {seen:#?}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout)
            )
        }
    };
    // The job is still waiting when the deploy reaches its snapshot step, and after it.
    wait_for(Duration::from_secs(120), || {
        let j = journal()?;
        j["steps"]
            .as_array()?
            .iter()
            .any(|st| st["name"] == "snapshot" && st["status"] == "done")
            .then_some(())
    })
    .expect("the deploy took its snapshot");
    assert!(
        line_with(&server, &mut seen, waiting, &["running scheduled backup"]).is_none(),
        "no scheduled job ran during the deploy: {:#?}",
        &seen[waiting..]
    );

    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert!(steps(&v).contains(&"snapshot:done".to_string()), "{v:#}");
    let ended = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            let at: Timestamp = st["started_at"].as_str().unwrap().parse().unwrap();
            at + jiff::SignedDuration::from_millis(st["took_ms"].as_i64().unwrap_or(0))
        })
        .max()
        .unwrap();
    assert!(!journal_path.exists(), "the deploy finished its journal");

    // Right after the deploy, the job that waited runs, and says what it waited for.
    let ran = wait_for(Duration::from_secs(60), || {
        line_with(&server, &mut seen, waiting, &["running scheduled backup"])
    })
    .expect("the job runs once the deploy is done");
    assert!(
        seen[ran].contains("(waited ")
            && seen[ran].contains(&deploy_pid)
            && seen[ran].ends_with(" was running)"),
        "the job says what it waited for: {}",
        seen[ran]
    );
    let done = wait_for(Duration::from_secs(60), || {
        line_with(&server, &mut seen, ran, &["scheduled backup done (waited "])
    })
    .unwrap_or_else(|| panic!("the job that waited succeeds: {:#?}", &seen[ran..]));
    // And the schedule goes on as before.
    wait_for(Duration::from_secs(60), || {
        line_with(
            &server,
            &mut seen,
            done + 1,
            &["scheduled backup done: backup"],
        )
        .map(|_| ())
    })
    .unwrap_or_else(|| panic!("the next job runs normally: {:#?}", &seen[done..]));
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("SKIPPED") || l.contains("FAILED")),
        "{seen:#?}"
    );

    let all = scheduled_backups(&backups_dir);
    let during: Vec<_> = all
        .iter()
        .filter(|(_, at)| *at >= started && *at <= ended)
        .collect();
    assert!(
        during.is_empty(),
        "no scheduled backup was made while the deploy ran ({started} to {ended}): {during:?}"
    );
    assert!(
        all.iter().any(|(_, at)| *at > ended),
        "scheduled backups after the deploy: {all:?}"
    );
}
