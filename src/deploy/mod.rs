//! The guarded deploy and the rollback, as named steps recorded in the journal before
//! and after each runs:
//!
//! deploy: preflight -> checkout -> build -> backup -> stop -> [snapshot] -> [migrate]
//! -> start -> gate -> on pass: mark stable, prune; on fail: roll back.
//!
//! rollback: stop the app -> decide the target (git::rollback_target) and the database
//! action (decision::decide) -> database -> revert code -> start the target's retained
//! images -> gate again. Exit 11 when production is healthy on the target, 12 when not.

pub mod background;
pub mod decision;
mod facts;
pub mod kept;
mod pipeline;
mod recover;
mod rollback;
pub mod status;
pub mod zero;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::backup::catalog::Catalog;
use crate::config::Loaded;
use crate::db::inspect::Ledger;
use crate::db::{ops, Database};
use crate::git::{self, Repo, Target};
use crate::health::Verdict;
use crate::journal::{Journal, OutcomeKind, Phase, Refusal, Release, Step, StepStatus, Trigger};
use crate::lock::{AppLock, Held};
use crate::process::Cmd;
use crate::runtime::Runtime;
use decision::{DbAction, DbFacts, DbPolicy};
use facts::*;
pub use pipeline::*;
pub use recover::*;
use rollback::*;

/// Exit codes of deploy and rollback.
pub const EXIT_DEPLOYED: i32 = 0;
pub const EXIT_REFUSED: i32 = 10;
pub const EXIT_ROLLED_BACK: i32 = 11;
pub const EXIT_MANUAL: i32 = 12;

/// Limit for `database.migrate_command`.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(1800);

/// How a deploy was asked for.
pub struct DeployRequest<'a> {
    pub reference: Option<&'a str>,
    pub dry_run: bool,
    /// `--strategy`: overrides `proxy.strategy`.
    pub strategy: Option<crate::config::Strategy>,
    /// Where each step is said as it runs.
    pub progress: crate::printer::Progress<'a>,
}

/// How a rollback was asked for.
pub struct RollbackRequest<'a> {
    pub to: Option<&'a str>,
    pub db: Option<DbPolicy>,
    pub progress: crate::printer::Progress<'a>,
}

/// What a deploy, rollback or recover did: printed, and the last line of the history.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub command: String,
    /// deployed, planned, refused, rolled_back, rollback_failed, nothing_to_do.
    pub outcome: OutcomeKind,
    pub exit_code: i32,
    pub message: String,
    pub from: Option<String>,
    pub target: Option<String>,
    pub backup: Option<String>,
    pub stable_tag: Option<String>,
    pub gate: Option<Verdict>,
    pub rollback: Option<RollbackReport>,
    pub plan: Option<Plan>,
    pub steps: Vec<Step>,
    pub total_ms: u64,
    /// Behind the proxy: how long the switch back to the old release took, and the
    /// maintenance window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_back_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_ms: Option<u64>,
    /// Why it was refused, when it was (not in `--json`: the message says it).
    #[serde(skip)]
    pub refusal: Option<Refusal>,
}

/// What `deploy --dry-run` would do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub running: String,
    pub target: String,
    pub latest_stable: Option<String>,
    /// Commits the deploy brings, newest first.
    pub commits: Vec<git::CommitLine>,
    pub database: String,
    pub runtime: String,
    pub services: Vec<String>,
    pub snapshot: bool,
    /// What fetching did to the local `latest-stable`, when it differed from the
    /// remote's (see `git::reconcile_stable`).
    pub stable_sync: Option<String>,
    /// Whether the old code could keep running beside the release, judged from the
    /// migrations it would apply (Prisma ledgers only; None otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<crate::migrations::compat::Compatibility>,
    /// How the release is put in place (stop and start, blue/green, maintenance window).
    pub placement: zero::Placement,
}

/// The rollback part of an outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub trigger: Trigger,
    pub failed_commit: Option<String>,
    pub target: Option<String>,
    pub target_reason: String,
    /// Commits being reverted, newest first.
    pub reverted_commits: Vec<git::CommitLine>,
    pub db: Option<DbAction>,
    pub writes_since_backup: Option<u64>,
    pub kept_database: Option<String>,
    /// The deploy's snapshot, kept because the rollback did not end healthy (see
    /// `kept`); the next successful deploy drops it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_snapshot: Option<String>,
    pub database_ms: Option<u64>,
    pub images: Vec<crate::runtime::ServiceImage>,
    pub rebuilt: bool,
    pub gate: Option<Verdict>,
    pub took_ms: u64,
}

/// One deploy or rollback in progress: the journal, and what it works with.
struct Run<'a> {
    loaded: &'a Loaded,
    state_dir: PathBuf,
    journal: Journal,
    progress: crate::printer::Progress<'a>,
    repo: Repo,
    runtime: Runtime,
    /// The live database, connected once (Compose detection costs a second on v1).
    db: Option<Database>,
    /// Why the journal could not be written during a rollback (it goes on regardless).
    journal_error: Option<String>,
    /// The release the deploy started from still serves behind the proxy (blue/green
    /// before its promotion): a rollback to it need not stop it.
    warm: bool,
}

impl Run<'_> {
    fn db(&mut self) -> anyhow::Result<&Database> {
        if self.db.is_none() {
            self.db = Some(Database::from_config(self.loaded)?);
        }
        Ok(self.db.as_ref().expect("set above"))
    }

    fn say(&self, line: &str) {
        (self.progress)(line)
    }

    /// Writes the journal. While rolling back, a write that fails (a full disk) does
    /// not stop the way back to a healthy release: it is said, and remembered for the
    /// outcome.
    fn save(&mut self) -> anyhow::Result<()> {
        match self.journal.save(&self.state_dir) {
            Ok(()) => Ok(()),
            Err(e) if self.journal.phase == Phase::RollingBack => {
                let why = format!("{e:#}");
                tracing::warn!("the journal could not be written; rolling back regardless: {why}");
                self.journal_error.get_or_insert(why);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs one named step: journaled (fsynced) before and after.
    fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.say(&format!("==> {name}"));
        // The step's time counts from its start as journaled: started_at + took_ms is
        // when it ended (the zero-downtime tests place requests against it).
        let t = Instant::now();
        self.journal.steps.push(Step {
            name: name.into(),
            status: StepStatus::Started,
            started_at: jiff::Timestamp::now(),
            took_ms: None,
            detail: None,
        });
        self.save()?;
        failpoint(&format!("{name}:start"));
        let result = f(self);
        let last = self.journal.steps.last_mut().expect("pushed above");
        last.took_ms = Some(t.elapsed().as_millis() as u64);
        match &result {
            Ok(_) => last.status = StepStatus::Done,
            Err(e) => {
                last.status = StepStatus::Failed;
                last.detail = Some(format!("{e:#}"));
                self.say(&format!("    failed: {e:#}"));
            }
        }
        self.save()?;
        failpoint(&format!("{name}:done"));
        result
    }

    fn note(&mut self, detail: String) {
        self.say(&format!("    {detail}"));
        if let Some(last) = self.journal.steps.last_mut() {
            last.detail = Some(detail);
        }
    }

    /// The health gate. `deferrable`: a signal taken while shielded ends it early, as
    /// a failure to prove the release (the deploy's gate; never the rollback's).
    /// Behind the proxy its probes go to the main project's port (`proxy.upstream`),
    /// not through the proxy (which may answer 503 or send them elsewhere).
    fn gate(&mut self, deferrable: bool) -> anyhow::Result<Verdict> {
        crate::health::ensure_something_to_check(self.loaded)?;
        let health = match &self.loaded.config.proxy {
            None => self.loaded.config.health.clone(),
            Some(p) => zero::health_at(&self.loaded.config.health, p, &p.upstream),
        };
        let compose = crate::health::main_compose(self.loaded, &health)?;
        self.gate_on(&health, compose.as_ref(), deferrable)
    }

    /// The gate of `health`, its containers looked up through `compose`, its rounds said.
    fn gate_on(
        &self,
        health: &crate::config::HealthConfig,
        compose: Option<&crate::runtime::compose::Compose>,
        deferrable: bool,
    ) -> anyhow::Result<Verdict> {
        let progress = self.progress;
        crate::health::run_gate_on(
            health,
            compose,
            |round, decision| progress(&crate::health::round_line(round, decision)),
            deferrable,
        )
    }
}

/// Kills the process at a named journal point when `STABLEHAND_FAILPOINT` names it
/// (builds with the `failpoints` feature only: the crash-safety tests).
/// `STABLEHAND_FAILPOINT_SIGNAL` (TERM, INT, HUP; INT2 for two SIGINTs, an abort) sends
/// that signal instead, as a cancelled CI job or a dropped SSH session would.
fn failpoint(point: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("STABLEHAND_FAILPOINT").is_ok_and(|p| p == point) {
        use nix::sys::signal::{raise, Signal};
        let signal = std::env::var("STABLEHAND_FAILPOINT_SIGNAL").unwrap_or_default();
        let (sig, times) = match signal.as_str() {
            "TERM" => (Signal::SIGTERM, 1),
            "INT" => (Signal::SIGINT, 1),
            "HUP" => (Signal::SIGHUP, 1),
            "INT2" => (Signal::SIGINT, 2),
            _ => (Signal::SIGKILL, 1),
        };
        tracing::warn!("failpoint {point}: sending {sig} to stablehand");
        for _ in 0..times {
            let _ = raise(sig);
            // The handler runs on its own thread: let it take the signal.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let _ = point;
}

impl Outcome {
    /// An outcome with nothing filled in but the command.
    fn new(command: &str) -> Outcome {
        Outcome {
            command: command.into(),
            outcome: OutcomeKind::Deployed,
            exit_code: EXIT_DEPLOYED,
            message: String::new(),
            from: None,
            target: None,
            backup: None,
            stable_tag: None,
            gate: None,
            rollback: None,
            plan: None,
            steps: Vec::new(),
            total_ms: 0,
            switch_back_ms: None,
            maintenance_ms: None,
            refusal: None,
        }
    }
}

/// What a rollback that ended with `exit_code` is called.
fn rollback_outcome(exit_code: i32) -> OutcomeKind {
    match exit_code {
        EXIT_ROLLED_BACK => OutcomeKind::RolledBack,
        _ => OutcomeKind::RollbackFailed,
    }
}

fn refused(command: &str, why: Refusal, message: String, started: Instant) -> Outcome {
    Outcome {
        outcome: OutcomeKind::Refused,
        exit_code: EXIT_REFUSED,
        message,
        refusal: Some(why),
        total_ms: started.elapsed().as_millis() as u64,
        ..Outcome::new(command)
    }
}

/// Takes the app lock, or explains who has it (exit 10).
/// Takes the app lock for `command` and, unless `journal_ok`, checks that no deploy is
/// unfinished. `Err` is the refusal (exit 10) to report instead.
fn exclusive(
    loaded: &Loaded,
    command: &str,
    journal_ok: bool,
    started: Instant,
) -> anyhow::Result<Result<AppLock, Outcome>> {
    let lock = match AppLock::acquire(&loaded.state_dir(), command) {
        Ok(lock) => lock,
        Err(e) => {
            let msg = match e.downcast_ref::<Held>() {
                Some(held) => held.to_string(),
                None => format!("{e:#}"),
            };
            return Ok(Err(refused(command, Refusal::Locked, msg, started)));
        }
    };
    if !journal_ok {
        if let Some(j) = Journal::load(&loaded.state_dir())? {
            return Ok(Err(refused(
                command,
                Refusal::Unfinished,
                unfinished_message(&j),
                started,
            )));
        }
    }
    Ok(Ok(lock))
}

use crate::journal::unfinished_message;

/// Records the outcome in the history, removes the journal, and fills the steps.
/// A rollback aborted by a second signal keeps its journal for `stablehand recover`
/// (its outcome is recorded under no journal id, so recover does not take it for
/// finished). A history that cannot be written (a full disk) does not change the
/// outcome: the announcement still goes out, and the outcome says so.
fn finish(
    run: &mut Run,
    outcome: anyhow::Result<Outcome>,
    started: Instant,
    trigger: Trigger,
) -> anyhow::Result<Outcome> {
    let mut outcome = outcome?;
    outcome.steps = run.journal.steps.clone();
    outcome.total_ms = started.elapsed().as_millis() as u64;
    let aborted = crate::process::interrupted() && outcome.exit_code == EXIT_MANUAL;
    if aborted {
        let last = run
            .journal
            .steps
            .last()
            .map(|s| format!("{} ({})", s.name, s.status))
            .unwrap_or_else(|| "its start".into());
        outcome.message = format!(
            "{}; ABORTED by a second signal during {last}: production is not known to be healthy; the journal stays: run `stablehand recover` to finish the rollback",
            outcome.message
        );
    }
    if let Some(why) = &run.journal_error {
        outcome.message = format!(
            "{}; the journal could not be written during the rollback ({why})",
            outcome.message
        );
    }
    let id = if aborted { "" } else { run.journal.id.as_str() };
    if let Err(e) = record(run.loaded, id, &outcome, trigger) {
        tracing::error!("the outcome could not be written to the history: {e:#}");
        outcome.message = format!(
            "{}; the history could not be written ({e:#})",
            outcome.message
        );
    }
    failpoint("history:done");
    if !aborted {
        if let Err(e) = Journal::finish(&run.state_dir) {
            tracing::warn!("{e:#}");
        }
    }
    Ok(outcome)
}

/// Appends the outcome to the history and announces it (notifications, CI outputs);
/// a failed notification is recorded, never changes the outcome or the exit code.
fn record(loaded: &Loaded, id: &str, outcome: &Outcome, trigger: Trigger) -> anyhow::Result<()> {
    let rb = outcome.rollback.as_ref();
    let mut release = Release {
        id: id.to_string(),
        at: jiff::Timestamp::now(),
        command: outcome.command.clone(),
        trigger,
        from: outcome.from.clone(),
        to: match outcome.outcome {
            OutcomeKind::Deployed => outcome.target.clone(),
            OutcomeKind::Refused => outcome.from.clone(),
            _ => rb.and_then(|r| r.target.clone()),
        },
        outcome: outcome.outcome,
        exit_code: outcome.exit_code,
        backup: outcome.backup.clone(),
        stable_tag: outcome.stable_tag.clone(),
        failed_commit: rb.and_then(|r| r.failed_commit.clone()),
        db_action: rb.and_then(|r| r.db.as_ref().map(|d| d.name().to_string())),
        db_reason: rb.and_then(|r| r.db.as_ref().map(|d| d.reason().to_string())),
        writes_since_backup: rb.and_then(|r| r.writes_since_backup),
        kept_database: rb.and_then(|r| r.kept_database.clone()),
        reverted_commits: rb.map(|r| r.reverted_commits.clone()).unwrap_or_default(),
        message: outcome.message.clone(),
        total_ms: outcome.total_ms,
        rollback_ms: rb.map(|r| r.took_ms),
        notifications: Vec::new(),
    };
    if let Some(event) = crate::notify::Event::from_release(loaded, &release, outcome.refusal) {
        release.notifications = crate::notify::send(loaded, &event);
        crate::notify::github_actions(&event);
    }
    crate::journal::append_history(&loaded.state_dir(), &release)
}

/// A deploy or rollback refused before it started (lock held, an unfinished journal,
/// preflight): recorded and announced like any other outcome.
fn refused_loudly(loaded: &Loaded, outcome: Outcome) -> anyhow::Result<Outcome> {
    let trigger = if outcome.command == "rollback" {
        Trigger::Manual
    } else {
        Trigger::Deploy
    };
    record(loaded, "", &outcome, trigger)?;
    Ok(outcome)
}
