//! The deploy journal (`.stablehand/journal.json`): every step is written before and
//! after it runs, atomically and fsynced, so a deploy killed at any point (SIGKILL, power
//! loss) leaves a record the next command finishes from. And the history
//! (`.stablehand/history.jsonl`): one line per finished deploy or rollback, append-only.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::decision::DbAction;

/// Where a deploy or rollback is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Changing things towards the target; a crash here means: roll back.
    Deploying,
    /// The gate passed; a crash here means: mark stable and finish.
    Passed,
    /// Returning to the rollback target; a crash here means: finish the rollback.
    RollingBack,
}

/// One named step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    /// started, done or failed.
    pub status: String,
    pub started_at: Timestamp,
    pub took_ms: Option<u64>,
    pub detail: Option<String>,
}

/// The state of the deploy or rollback in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    /// deploy or rollback.
    pub command: String,
    pub pid: u32,
    pub started_at: Timestamp,
    pub phase: Phase,
    /// The commit running when it started.
    pub from: Option<String>,
    /// The commit being deployed (deploy) or returned to (rollback).
    pub target: String,
    pub stable_before: Option<String>,
    /// The verified pre-deploy backup.
    pub backup: Option<String>,
    /// The pre-deploy snapshot database.
    pub snapshot: Option<String>,
    /// Set when rolling back: where to, and why.
    pub rollback_to: Option<String>,
    pub rollback_reason: Option<String>,
    /// The commit that failed its gate.
    pub failed_commit: Option<String>,
    pub db_action: Option<DbAction>,
    pub steps: Vec<Step>,
}

/// Writes `bytes` to `path` atomically and durably.
fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::backup::manifest::write_file_atomic(path, bytes)
}

impl Journal {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("journal.json")
    }

    /// The unfinished deploy or rollback, if any.
    pub fn load(state_dir: &Path) -> anyhow::Result<Option<Journal>> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!(
                    "the deploy journal {} is unreadable; inspect it, then remove it by hand once code and database are known to match",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn new(command: &str, target: &str) -> Journal {
        let now = Timestamp::now();
        Journal {
            id: format!("{}-{}", command, now.strftime("%Y%m%d-%H%M%S")),
            command: command.into(),
            pid: std::process::id(),
            started_at: now,
            phase: Phase::Deploying,
            from: None,
            target: target.into(),
            stable_before: None,
            backup: None,
            snapshot: None,
            rollback_to: None,
            rollback_reason: None,
            failed_commit: None,
            db_action: None,
            steps: Vec::new(),
        }
    }

    /// Writes the journal (atomic, fsynced).
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        fs_err::create_dir_all(state_dir)?;
        write_durably(&Self::path(state_dir), &serde_json::to_vec_pretty(self)?)
            .context("writing the deploy journal")
    }

    /// Removes the journal: the deploy or rollback is finished.
    pub fn finish(state_dir: &Path) -> anyhow::Result<()> {
        match std::fs::remove_file(Self::path(state_dir)) {
            Ok(()) => crate::backup::manifest::sync_dir(state_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context("removing the finished deploy journal"),
        }
    }

    /// The names of the steps that finished.
    pub fn done(&self, name: &str) -> bool {
        self.steps
            .iter()
            .any(|s| s.name == name && s.status == "done")
    }
}

/// One finished deploy or rollback, as the history records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    /// The journal id of the deploy or rollback (recover uses it to see that a run was
    /// recorded before it was killed).
    #[serde(default)]
    pub id: String,
    pub at: Timestamp,
    /// deploy, rollback, recover.
    pub command: String,
    /// What started it: "deploy", "manual", "automatic" (a failed gate), "recover".
    pub trigger: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// deployed, refused, rolled_back, rollback_failed, failed.
    pub outcome: String,
    pub exit_code: i32,
    pub backup: Option<String>,
    pub stable_tag: Option<String>,
    /// The commit that failed its health gate, if one did.
    pub failed_commit: Option<String>,
    pub db_action: Option<String>,
    pub db_reason: Option<String>,
    pub writes_since_backup: Option<u64>,
    /// The database kept aside by a database rollback.
    pub kept_database: Option<String>,
    pub reverted_commits: Vec<crate::git::CommitLine>,
    /// What each notification channel did with this outcome.
    #[serde(default)]
    pub notifications: Vec<crate::notify::Delivery>,
    pub message: String,
    pub total_ms: u64,
    pub rollback_ms: Option<u64>,
}

pub fn history_path(state_dir: &Path) -> PathBuf {
    state_dir.join("history.jsonl")
}

/// Appends one release to the history (fsynced).
pub fn append_history(state_dir: &Path, release: &Release) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    fs_err::create_dir_all(state_dir)?;
    let path = history_path(state_dir);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut line = serde_json::to_vec(release)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_all()?;
    Ok(())
}

/// The history, oldest first (a torn last line from a crash is skipped).
pub fn read_history(state_dir: &Path) -> anyhow::Result<Vec<Release>> {
    let path = history_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Commits that failed a health gate, from the history.
pub fn failed_commits(history: &[Release]) -> std::collections::HashSet<String> {
    history
        .iter()
        .filter_map(|r| r.failed_commit.clone())
        .collect()
}
