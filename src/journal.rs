//! The deploy journal (`.stablehand/journal.json`): every step is written before and
//! after it runs, atomically and fsynced, so a deploy killed at any point (SIGKILL, power
//! loss) leaves a record the next command finishes from. And the history
//! (`.stablehand/history.jsonl`): one line per finished deploy or rollback, append-only.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::deploy::decision::{DbAction, DbPolicy};

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
    pub status: StepStatus,
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
    /// What a rollback by hand was asked for (`--to`, resolved, and `--db`): `recover`
    /// finishes it with the same choices instead of re-deciding from the config.
    #[serde(default)]
    pub requested: Option<String>,
    #[serde(default)]
    pub db_policy: Option<DbPolicy>,
    /// Blue/green: the colour the new release runs as beside the old one, until it is
    /// removed (`recover` removes it and puts traffic on a healthy release).
    #[serde(default)]
    pub colour: Option<String>,
    /// The proxy answers 503 (maintenance) for this deploy until it ends.
    #[serde(default)]
    pub maintenance: bool,
    pub steps: Vec<Step>,
}

/// Writes `bytes` to `path` atomically and durably.
fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::files::write_file_atomic(path, bytes)
}

impl Journal {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("journal.json")
    }

    /// The unfinished deploy or rollback, if any.
    pub fn load(state_dir: &Path) -> anyhow::Result<Option<Journal>> {
        let path = Self::path(state_dir);
        let Some(bytes) = crate::files::read_if_exists(&path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "the deploy journal {} is unreadable; inspect it, then remove it by hand once code and database are known to match",
                path.display()
            )
        })
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
            requested: None,
            db_policy: None,
            colour: None,
            maintenance: false,
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
            Ok(()) => crate::files::sync_dir(state_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context("removing the finished deploy journal"),
        }
    }

    /// The names of the steps that finished.
    pub fn done(&self, name: &str) -> bool {
        self.steps
            .iter()
            .any(|s| s.name == name && s.status == StepStatus::Done)
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
    /// What started it.
    pub trigger: Trigger,
    pub from: Option<String>,
    pub to: Option<String>,
    /// deployed, refused, rolled_back, rollback_failed, failed.
    pub outcome: OutcomeKind,
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
    pub notifications: Vec<Delivery>,
    pub message: String,
    pub total_ms: u64,
    pub rollback_ms: Option<u64>,
}

pub fn history_path(state_dir: &Path) -> PathBuf {
    state_dir.join("history.jsonl")
}

/// Appends one release to the history (fsynced). A torn last line (a crash mid-append)
/// is closed first, so it never swallows this record.
pub fn append_history(state_dir: &Path, release: &Release) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    fs_err::create_dir_all(state_dir)?;
    let path = history_path(state_dir);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut line = Vec::new();
    if f.seek(SeekFrom::End(0))? > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.push(b'\n');
        }
    }
    line.extend(serde_json::to_vec(release)?);
    line.push(b'\n');
    f.write_all(&line)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("appending to {}", path.display()))?;
    Ok(())
}

/// The history as read: the releases, oldest first, and the lines that could not be
/// read (1-based line numbers: a crash mid-append, or an edit by hand).
#[derive(Debug, Default)]
pub struct History {
    pub releases: Vec<Release>,
    pub damaged: Vec<usize>,
}

impl History {
    /// A warning naming the damaged lines, if any.
    pub fn damage_warning(&self, state_dir: &Path) -> Option<String> {
        if self.damaged.is_empty() {
            return None;
        }
        let lines = self
            .damaged
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "{} has {} damaged line(s) ({lines}) that could not be read (a crash while a record was written?): they are left as they are; inspect them",
            history_path(state_dir).display(),
            self.damaged.len()
        ))
    }
}

/// The history with its damaged lines named.
pub fn read_history_checked(state_dir: &Path) -> anyhow::Result<History> {
    let path = history_path(state_dir);
    let text = match std::fs::read(&path) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(History::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut history = History::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(release) => history.releases.push(release),
            Err(_) => history.damaged.push(n + 1),
        }
    }
    Ok(history)
}

/// The history, oldest first (damaged lines skipped: `read_history_checked` names them).
pub fn read_history(state_dir: &Path) -> anyhow::Result<Vec<Release>> {
    Ok(read_history_checked(state_dir)?.releases)
}

/// The latest health verdict of each commit the history knows: a commit that failed a
/// gate and later passed one (a retry after an outside outage) is proven again.
#[derive(Debug, Default, Clone)]
pub struct Verdicts {
    /// Commits whose latest gate verdict is a failure.
    pub failed: std::collections::HashSet<String>,
    /// Commits whose latest gate verdict is a pass (deployed, or a rollback to it passed).
    pub passed: std::collections::HashSet<String>,
}

/// Reads the verdicts from the history, oldest first: a record's failed commit failed;
/// a deployed release, and the target of a rollback that passed its gate, passed.
pub fn verdicts(history: &[Release]) -> Verdicts {
    let mut v = Verdicts::default();
    for r in history {
        if let Some(failed) = &r.failed_commit {
            v.passed.remove(failed);
            v.failed.insert(failed.clone());
        }
        let passed = match r.outcome {
            OutcomeKind::Deployed | OutcomeKind::RolledBack => r.to.as_ref(),
            _ => None,
        };
        if let Some(commit) = passed {
            v.failed.remove(commit);
            v.passed.insert(commit.clone());
        }
    }
    v
}

/// Commits whose latest health verdict is a failure: never a rollback target.
pub fn failed_commits(history: &[Release]) -> std::collections::HashSet<String> {
    verdicts(history).failed
}

/// An enum written as a fixed set of snake_case words (in `--json`, history.jsonl,
/// the journal and notifications): `as_str`, `Display` (which pads, for tables) and
/// comparison with the written word (`status == "done"`).
macro_rules! words {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        $vis enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// The word written for it.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word,)+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

words! {
    /// How a deploy, rollback or recover ended: `outcome` in `--json`, history.jsonl and
    /// notifications, always one of these words.
    pub enum OutcomeKind {
        Deployed => "deployed",
        Planned => "planned",
        Refused => "refused",
        RolledBack => "rolled_back",
        RollbackFailed => "rollback_failed",
        NothingToDo => "nothing_to_do",
    }
}

words! {
    /// Where one journaled step is.
    pub enum StepStatus {
        Started => "started",
        Done => "done",
        Failed => "failed",
    }
}

words! {
    /// What started a deploy, rollback or recover (`trigger` in history.jsonl, `--json`
    /// and notifications).
    pub enum Trigger {
        /// `stablehand deploy`.
        Deploy => "deploy",
        /// A rollback asked for by hand.
        Manual => "manual",
        /// A failed health gate.
        Automatic => "automatic",
        /// `stablehand recover` finishing an interrupted run.
        Recover => "recover",
    }
}

/// Why a deploy or rollback was refused before it changed production. Not written
/// anywhere (the message says it in words); it decides which event is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another deploy, rollback or recover holds the app lock.
    Locked,
    /// An unfinished deploy or rollback must be recovered first.
    Unfinished,
    /// A preflight check failed.
    Preflight,
    /// The pre-deploy backup failed.
    BackupFailed,
    /// Checkout, build or a signal stopped it before production was touched.
    BeforeChange,
    /// A rollback with no release to return to.
    NoTarget,
}

/// What one channel did with an event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Delivery {
    /// slack, webhook, or hook:<name>.
    pub channel: String,
    /// Where it went, without secrets (a webhook's host, a hook's command).
    pub target: String,
    pub ok: bool,
    pub attempts: u32,
    pub error: Option<String>,
    pub took_ms: u64,
}

/// The refusal of a command that must not run while `j` is unfinished.
pub fn unfinished_message(j: &Journal) -> String {
    format!(
        "an unfinished {} ({}, started {} by pid {}) is in the journal {}; run `stablehand recover` to finish it first",
        j.command,
        j.id,
        j.started_at,
        j.pid,
        ".stablehand/journal.json"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(outcome: &str, to: Option<&str>, failed: Option<&str>) -> Release {
        Release {
            id: String::new(),
            at: Timestamp::now(),
            command: "deploy".into(),
            trigger: Trigger::Deploy,
            from: None,
            to: to.map(str::to_string),
            outcome: serde_json::from_value(outcome.into()).expect("an outcome word"),
            exit_code: 0,
            backup: None,
            stable_tag: None,
            failed_commit: failed.map(str::to_string),
            db_action: None,
            db_reason: None,
            writes_since_backup: None,
            kept_database: None,
            reverted_commits: Vec::new(),
            notifications: Vec::new(),
            message: String::new(),
            total_ms: 0,
            rollback_ms: None,
        }
    }

    /// The word of each outcome is the one serde writes and reads (the --json and
    /// history contract).
    #[test]
    fn outcome_words_are_the_written_ones() {
        for (kind, word) in [
            (OutcomeKind::Deployed, "deployed"),
            (OutcomeKind::Planned, "planned"),
            (OutcomeKind::Refused, "refused"),
            (OutcomeKind::RolledBack, "rolled_back"),
            (OutcomeKind::RollbackFailed, "rollback_failed"),
            (OutcomeKind::NothingToDo, "nothing_to_do"),
        ] {
            assert_eq!(kind.as_str(), word);
            assert_eq!(serde_json::to_value(kind).unwrap(), word);
            assert_eq!(
                serde_json::from_value::<OutcomeKind>(word.into()).unwrap(),
                kind
            );
        }
        assert!(serde_json::from_value::<OutcomeKind>("done".into()).is_err());
    }

    /// A history line as the first releases wrote it (no id, no notifications) still reads,
    /// beside one written today.
    #[test]
    fn history_lines_from_the_first_releases_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"at":"2026-11-01T10:15:00Z","command":"deploy","trigger":"manual","from":"aaa","to":"bbb","outcome":"deployed","exit_code":0,"backup":"pre-deploy_x","stable_tag":"stable-20261101-101500","failed_commit":null,"db_action":null,"db_reason":null,"writes_since_backup":null,"kept_database":null,"reverted_commits":[],"message":"deployed bbb","total_ms":1200,"rollback_ms":null}"#;
        std::fs::write(dir.path().join("history.jsonl"), format!("{old}\n")).unwrap();
        let history = read_history(dir.path()).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].outcome, "deployed");
        assert_eq!(history[0].id, "");
        assert!(history[0].notifications.is_empty());
    }

    #[test]
    fn the_latest_verdict_of_a_commit_counts() {
        let history = [
            release("deployed", Some("v"), None),
            // x fails (an outside service was down): back to v.
            release("rolled_back", Some("v"), Some("x")),
            // x again: it passes.
            release("deployed", Some("x"), None),
            // y fails, and its rollback to x fails too.
            release("rollback_failed", Some("x"), Some("y")),
            // a refusal proves and condemns nothing.
            release("refused", Some("x"), None),
        ];
        let v = verdicts(&history);
        assert_eq!(failed_commits(&history), ["y".to_string()].into());
        assert!(v.passed.contains("x") && v.passed.contains("v"));
        // x fails again later: failed again.
        let mut more = history.to_vec();
        more.push(release("rolled_back", Some("v"), Some("x")));
        assert!(failed_commits(&more).contains("x"));
        assert!(!verdicts(&more).passed.contains("x"));
    }

    #[test]
    fn a_torn_last_line_never_swallows_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        append_history(dir.path(), &release("deployed", Some("a"), None)).unwrap();
        // A crash mid-append: half a record, no newline.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(history_path(dir.path()))
            .unwrap();
        f.write_all(b"{\"id\":\"torn").unwrap();
        append_history(dir.path(), &release("deployed", Some("b"), None)).unwrap();
        let h = read_history_checked(dir.path()).unwrap();
        let to: Vec<_> = h.releases.iter().map(|r| r.to.clone().unwrap()).collect();
        assert_eq!(to, ["a", "b"]);
        assert_eq!(h.damaged, [2]);
        assert!(h
            .damage_warning(dir.path())
            .unwrap()
            .contains("1 damaged line(s) (2)"));
    }
}
