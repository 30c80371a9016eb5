//! Deploys that outlive the CI job: `deploy --detach` starts the deploy in a session of
//! its own (no terminal, SIGHUP ignored, output in `.stablehand/detached.log`), and
//! `stablehand wait` waits for whatever deploy, rollback or recover runs, then reports
//! its outcome from the history with its exit code.

use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::Loaded;
use crate::journal::{self, Journal, Release};

/// Commands `wait` waits for (a scheduled job of `serve` is not one).
const WAITED_FOR: &[&str] = &["deploy", "rollback", "recover"];

/// A deploy started in the background.
#[derive(Debug, Clone, Serialize)]
pub struct Detached {
    pub pid: u32,
    /// Where its output goes.
    pub log: PathBuf,
    /// False when it had already finished (or never took the lock) before this returned.
    pub running: bool,
}

/// Starts this same command line again without `--detach`, in a new session with no
/// terminal, stdin from /dev/null and its output appended to `.stablehand/detached.log`;
/// returns once it holds the deploy lock (or has exited), so a `wait` right after it
/// waits for this deploy, not for nothing.
pub fn detach(loaded: &Loaded, args: Vec<OsString>) -> anyhow::Result<Detached> {
    let state_dir = loaded.state_dir();
    fs_err::create_dir_all(&state_dir)?;
    let log = state_dir.join("detached.log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let program = std::env::current_exe().context("finding the stablehand binary")?;
    let args: Vec<OsString> = args
        .into_iter()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let mut cmd = Command::new(program);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the detached deploy")?;
    let pid = child.id();
    let started = Instant::now();
    let running = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        let holder = crate::lock::read_holder(&state_dir);
        if crate::lock::is_held(&state_dir) && holder.is_some_and(|h| h.pid == pid) {
            break true;
        }
        if started.elapsed() > Duration::from_secs(60) {
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Detached { pid, log, running })
}

/// What `wait` found.
#[derive(Debug, Clone, Serialize)]
pub struct Waited {
    /// How long it waited.
    pub waited_ms: u64,
    /// The last recorded outcome, when nothing is unfinished.
    pub release: Option<Release>,
    /// Set when a deploy or rollback was cut short and waits for `stablehand recover`.
    pub unfinished: Option<String>,
    pub exit_code: i32,
}

/// Waits while a deploy, rollback or recover holds the lock (up to `timeout`), then
/// reads the outcome: the last history record, or the unfinished journal (exit 12).
pub fn wait(loaded: &Loaded, timeout: Duration) -> anyhow::Result<Waited> {
    let state_dir = loaded.state_dir();
    let started = Instant::now();
    loop {
        let busy = crate::lock::is_held(&state_dir)
            && crate::lock::read_holder(&state_dir)
                .is_none_or(|h| WAITED_FOR.contains(&h.command.as_str()));
        if !busy {
            break;
        }
        if started.elapsed() > timeout {
            anyhow::bail!(
                "the deploy is still running after {} of waiting; it goes on: run `stablehand wait` again, or `stablehand status`",
                humantime::format_duration(timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let waited_ms = started.elapsed().as_millis() as u64;
    if let Some(j) = Journal::load(&state_dir)? {
        return Ok(Waited {
            waited_ms,
            release: None,
            unfinished: Some(crate::journal::unfinished_message(&j)),
            exit_code: super::EXIT_MANUAL,
        });
    }
    let release = journal::read_history(&state_dir)?.pop();
    let exit_code = release.as_ref().map_or(0, |r| r.exit_code);
    Ok(Waited {
        waited_ms,
        release,
        unfinished: None,
        exit_code,
    })
}
