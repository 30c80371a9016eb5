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
pub mod kept;
pub mod status;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::io::Write;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::backup::catalog::Catalog;
use crate::config::Loaded;
use crate::db::inspect::Ledger;
use crate::db::{ops, Database};
use crate::git::{self, Repo, Target};
use crate::health::Verdict;
use crate::journal::{Journal, Phase, Release, Step};
use crate::lock::{AppLock, Held};
use crate::process::Cmd;
use crate::runtime::Runtime;
use decision::{DbAction, DbFacts, DbPolicy};

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
    /// Print each step to stderr as it runs.
    pub progress: bool,
}

/// How a rollback was asked for.
pub struct RollbackRequest<'a> {
    pub to: Option<&'a str>,
    pub db: Option<DbPolicy>,
    pub progress: bool,
}

/// What a deploy, rollback or recover did: printed, and the last line of the history.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub command: String,
    /// deployed, planned, refused, rolled_back, rollback_failed, nothing_to_do.
    pub outcome: String,
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
}

/// The rollback part of an outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub trigger: String,
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
    progress: bool,
    repo: Repo,
    runtime: Runtime,
    /// The live database, connected once (Compose detection costs a second on v1).
    db: Option<Database>,
    /// Why the journal could not be written during a rollback (it goes on regardless).
    journal_error: Option<String>,
}

impl Run<'_> {
    fn db(&mut self) -> anyhow::Result<&Database> {
        if self.db.is_none() {
            self.db = Some(Database::from_config(self.loaded)?);
        }
        Ok(self.db.as_ref().expect("set above"))
    }

    fn say(&self, line: &str) {
        if self.progress {
            // A closed terminal (a dropped SSH session) must not stop a deploy.
            let _ = writeln!(std::io::stderr(), "{line}");
        }
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
        self.journal.steps.push(Step {
            name: name.into(),
            status: "started".into(),
            started_at: jiff::Timestamp::now(),
            took_ms: None,
            detail: None,
        });
        self.save()?;
        failpoint(&format!("{name}:start"));
        let t = Instant::now();
        let result = f(self);
        let last = self.journal.steps.last_mut().expect("pushed above");
        last.took_ms = Some(t.elapsed().as_millis() as u64);
        match &result {
            Ok(_) => last.status = "done".into(),
            Err(e) => {
                last.status = "failed".into();
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
    fn gate(&mut self, deferrable: bool) -> anyhow::Result<Verdict> {
        let progress = self.progress;
        crate::health::run_gate_stopping(
            self.loaded,
            |round, decision| {
                if progress {
                    crate::health::print_round(round, decision);
                }
            },
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
        let _ = writeln!(
            std::io::stderr(),
            "failpoint {point}: sending {sig} to stablehand"
        );
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
            outcome: String::new(),
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
        }
    }
}

fn refused(command: &str, message: String, started: Instant) -> Outcome {
    Outcome {
        outcome: "refused".into(),
        exit_code: EXIT_REFUSED,
        message,
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
            return Ok(Err(refused(command, msg, started)));
        }
    };
    if !journal_ok {
        if let Some(j) = Journal::load(&loaded.state_dir())? {
            return Ok(Err(refused(command, unfinished_message(&j), started)));
        }
    }
    Ok(Ok(lock))
}

use crate::journal::unfinished_message;

/// `stablehand deploy`.
pub fn deploy(loaded: &Loaded, req: &DeployRequest) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let state_dir = loaded.state_dir();
    let _lock = match exclusive(loaded, "deploy", false, started)? {
        Ok(lock) => lock,
        Err(refusal) => return refused_loudly(loaded, refusal),
    };
    // Preflight: everything is checked before anything changes; a problem is exit 10.
    let pre = match preflight(loaded, req.reference) {
        Ok(p) => p,
        Err(e) => {
            return refused_loudly(
                loaded,
                refused(
                    "deploy",
                    format!("preflight failed; nothing was changed: {e:#}"),
                    started,
                ),
            )
        }
    };
    if req.dry_run {
        let mut o = refused("deploy", String::new(), started);
        o.outcome = "planned".into();
        o.exit_code = EXIT_DEPLOYED;
        o.message = format!(
            "would deploy {} (running {}): back up database {}, build and restart {}, run the health gate; nothing was changed",
            git::abbrev(&pre.plan.target, 12),
            git::abbrev(&pre.plan.running, 12),
            pre.plan.database,
            if pre.plan.services.is_empty() { pre.plan.runtime.clone() } else { pre.plan.services.join(", ") },
        );
        o.from = Some(pre.plan.running.clone());
        o.target = Some(pre.plan.target.clone());
        o.plan = Some(pre.plan);
        return Ok(o);
    }

    let mut journal = Journal::new("deploy", &pre.plan.target);
    journal.from = Some(pre.plan.running.clone());
    journal.stable_before = pre.plan.latest_stable.clone();
    let mut run = Run {
        loaded,
        state_dir,
        journal,
        progress: req.progress,
        repo: pre.repo,
        runtime: pre.runtime,
        db: None,
        journal_error: None,
    };
    run.journal.save(&run.state_dir)?;
    run.say(&format!(
        "deploying {} (running {}, latest-stable {})",
        git::abbrev(&pre.plan.target, 12),
        git::abbrev(&pre.plan.running, 12),
        pre.plan
            .latest_stable
            .as_deref()
            .map_or("none yet", |s| git::abbrev(s, 12))
    ));
    if let Some(note) = &pre.plan.stable_sync {
        run.say(&format!("    {note}"));
    }
    let outcome = deploy_steps(&mut run, started);
    finish(&mut run, outcome, started, "deploy")
}

struct Preflight {
    repo: Repo,
    runtime: Runtime,
    plan: Plan,
}

fn preflight(loaded: &Loaded, reference: Option<&str>) -> anyhow::Result<Preflight> {
    crate::health::ensure_something_to_check(loaded)?;
    let repo = Repo::open(&loaded.app_dir, &loaded.config.git)?;
    let branch = match &loaded.config.git.branch {
        Some(b) => b.clone(),
        None => repo.default_branch()?,
    };
    let sync = repo.fetch_branch(&branch)?;
    let reference = reference
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}/{branch}", repo.remote()));
    let target = repo
        .resolve(&reference)
        .with_context(|| format!("the target {reference:?} does not resolve to a commit"))?;
    let running = repo.head()?;
    let changes = repo.local_changes()?;
    if !changes.is_empty() && !loaded.config.git.discard_local_changes {
        bail!(
            "the work tree has local changes to {}: commit or stash them (or set git.discard_local_changes = true)",
            changes.join(", ")
        );
    }
    let db = Database::from_config(loaded)?;
    db.server_version()
        .context("the database does not answer")?;
    // A rollback may restore the backup or swap in the snapshot: it must be able to give
    // the app back the database it has (owners, grants, ACL, settings).
    let problems = db.faithful_copy_problems()?;
    if !problems.is_empty() {
        bail!(
            "a rollback could not restore {} faithfully: {}",
            db.name,
            problems.join("; ")
        );
    }
    let runtime = Runtime::load(loaded)?;
    if let Runtime::Compose(app) = &runtime {
        app.compose.ensure_engine()?;
    }
    check_disk_room(loaded)?;
    let commits = repo.commits_between(&running, &target).unwrap_or_default();
    let services = match &runtime {
        Runtime::Compose(app) => app.services.clone(),
        _ => Vec::new(),
    };
    let plan = Plan {
        running,
        latest_stable: repo.latest_stable()?,
        target,
        commits,
        database: db.describe(),
        runtime: runtime.kind_name().into(),
        services,
        snapshot: loaded.config.database.snapshot,
        stable_sync: sync.note,
    };
    Ok(Preflight {
        repo,
        runtime,
        plan,
    })
}

/// Room for a backup: twice the newest backup's size free in the backup directory.
pub fn check_disk_room(loaded: &Loaded) -> anyhow::Result<()> {
    let catalog = Catalog::new(loaded.backup_dir());
    let newest = catalog
        .list()
        .ok()
        .and_then(|l| l.backups.first().map(|m| m.size_bytes))
        .unwrap_or(0);
    // The directory may not exist yet: its nearest existing ancestor is the same disk.
    let existing = catalog
        .dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(&catalog.dir);
    let stat = nix::sys::statvfs::statvfs(existing)
        .with_context(|| format!("reading free space of {}", existing.display()))?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let need = newest.saturating_mul(2);
    if free < need {
        bail!(
            "only {} MiB free in {} and the last backup took {} MiB: free some space (or prune backups) first",
            free >> 20,
            catalog.dir.display(),
            newest >> 20
        );
    }
    Ok(())
}

/// The deploy's steps after preflight; returns the outcome (a rollback included).
fn deploy_steps(run: &mut Run, started: Instant) -> anyhow::Result<Outcome> {
    let target = run.journal.target.clone();
    let running = run.journal.from.clone().expect("set by deploy");
    let mut outcome = Outcome {
        from: Some(running.clone()),
        target: Some(target.clone()),
        ..Outcome::new("deploy")
    };

    // Steps that change nothing production sees: a failure is a refusal, and the code
    // goes back to the running commit.
    let before_change = (|| -> anyhow::Result<(String, Option<String>)> {
        run.step("checkout", |r| {
            let adopted = r.runtime.adopt_running(&running)?;
            if !adopted.is_empty() {
                r.note(format!(
                    "kept the running release's images as {}",
                    adopted.join(", ")
                ));
            }
            r.repo
                .reset_hard(&target, r.loaded.config.git.discard_local_changes)
        })?;
        run.step("build", |r| {
            let built = r.runtime.build(&target)?;
            if !built.tagged.is_empty() {
                r.note(format!("built and tagged {}", built.tagged.join(", ")));
            }
            Ok(())
        })?;
        run.step("backup", |r| {
            let created = crate::backup::create_backup_locked(
                r.loaded,
                &Catalog::new(r.loaded.backup_dir()),
                &Catalog::new(r.loaded.backup_dir()).lock()?,
                "pre-deploy",
                Some(&running),
                false,
            )?;
            let mut not_offsite = None;
            let offsite = match (created.backup.uploads.len(), created.upload_failures.len()) {
                (0, 0) => String::new(),
                (n, 0) => format!("; copied to {n} remote(s)"),
                (_, _) => {
                    let failed = created
                        .upload_failures
                        .iter()
                        .map(|f| format!("{}: {}", f.remote, f.error))
                        .collect::<Vec<_>>()
                        .join("; ");
                    crate::notify::announce_upload_failure(r.loaded, &created);
                    tracing::warn!("the pre-deploy backup is only local: {failed}");
                    not_offsite = Some(failed.clone());
                    format!("; NOT offsite ({failed}): `stablehand backup sync` later")
                }
            };
            r.note(format!(
                "backup {} ({}, verified){offsite}",
                created.backup.id,
                indicatif::HumanBytes(created.backup.size_bytes)
            ));
            Ok((created.backup.id, not_offsite))
        })
    })();
    // From here on a signal no longer abandons production (the first one ends the gate
    // early and rolls back); one that came before is a refusal, nothing touched.
    let _shield = crate::process::shield_production();
    let before_change = before_change.and_then(|done| match crate::process::interrupted() {
        true => Err(anyhow::anyhow!(
            "interrupted by a signal before production was touched"
        )),
        false => Ok(done),
    });
    let (backup, not_offsite) = match before_change {
        Ok(done) => done,
        Err(e) => {
            // Back to the running commit's code and image names; its containers never
            // stopped.
            let reverted = run
                .repo
                .reset_hard(&running, true)
                .and_then(|()| run.runtime.restore_image_names(&running))
                .map_err(|r| format!("; and resetting the code to {running} failed: {r:#}"))
                .err()
                .unwrap_or_default();
            outcome.outcome = "refused".into();
            outcome.exit_code = EXIT_REFUSED;
            let why = match crate::process::interruption_in(&e) {
                Some(cause) => format!("interrupted ({cause})"),
                None => format!("{e:#}"),
            };
            outcome.message =
                format!("the deploy was refused before any change to production: {why}{reverted}");
            return Ok(outcome);
        }
    };
    run.journal.backup = Some(backup.clone());
    run.journal.save(&run.state_dir)?;
    outcome.backup = Some(backup.clone());

    // From here production changes: any failure rolls back.
    let changed = (|| -> anyhow::Result<Verdict> {
        run.step("stop", |r| r.runtime.stop_app().map(drop))?;
        if run.loaded.config.database.snapshot {
            let snapshot = run.step("snapshot", |r| {
                let db = r.db()?;
                db.drop_leftovers()?;
                let id = ops::stamp();
                let name = db.snapshot(&id)?;
                r.note(format!("snapshot {name}"));
                Ok(name)
            })?;
            run.journal.snapshot = Some(snapshot);
            run.journal.save(&run.state_dir)?;
        }
        let migrate = run.loaded.config.database.migrate_command.clone();
        if !migrate.trim().is_empty() {
            run.step("migrate", |r| {
                Cmd::new("sh")
                    .args(["-c", &migrate])
                    .current_dir(&r.loaded.app_dir)
                    .timeout(MIGRATE_TIMEOUT)
                    .output()
                    .with_context(|| format!("database.migrate_command {migrate:?} failed"))
                    .map(drop)
            })?;
        }
        run.step("start", |r| r.runtime.start_app())?;
        // The verdict is journaled with the step: a crash right after it is recovered
        // by marking (passed) or by rolling back a commit known to have failed.
        run.step("gate", |r| {
            let verdict = r.gate(true)?;
            if verdict.passed {
                r.journal.phase = Phase::Passed;
            } else {
                r.journal.failed_commit = Some(r.journal.target.clone());
            }
            Ok(verdict)
        })
    })();

    match changed {
        Ok(verdict) if verdict.passed => {
            outcome.gate = Some(verdict);
            let tag = run.step("mark_stable", |r| {
                let marked = r
                    .repo
                    .mark_stable(&target, Some(&backup), jiff::Timestamp::now())?;
                let push_wanted = r.loaded.config.git.push;
                if let (false, true, Some(e)) = (marked.pushed, push_wanted, &marked.push_error) {
                    // The release is stable here; the remote learns it on the next push.
                    r.note(format!("tagged locally; the push failed: {e}"));
                    tracing::warn!("stable tags not pushed: {e}");
                }
                Ok(marked.tag)
            })?;
            outcome.stable_tag = Some(tag.clone());
            run.step("prune", |r| after_success(r, &target))?;
            outcome.outcome = "deployed".into();
            outcome.message = format!(
                "deployed {} and marked it stable ({tag}); pre-deploy backup {backup}{}",
                git::abbrev(&target, 12),
                not_offsite
                    .as_deref()
                    .map(|f| format!(" (stored locally only: its upload failed: {f}; run `stablehand backup sync`)"))
                    .unwrap_or_default()
            );
            let _ = started;
            Ok(outcome)
        }
        other => {
            let why = match other {
                Ok(verdict) => {
                    let why = verdict
                        .reason
                        .clone()
                        .unwrap_or_else(|| "the health gate failed".into());
                    outcome.gate = Some(verdict);
                    format!("the health gate failed: {why}")
                }
                Err(e) if crate::process::deferred_interrupt() => {
                    format!("interrupted before the release was proven ({e:#})")
                }
                Err(e) => format!("the deploy failed: {e:#}"),
            };
            run.say(&format!("{why}; rolling back"));
            // The commit failed only when the release itself ran and failed: not when
            // stopping the old one or the snapshot failed, nor on an interrupt.
            let release_failed = !crate::process::deferred_interrupt()
                && !crate::process::interrupted()
                && (run.journal.failed_commit.is_some()
                    || run.journal.steps.iter().any(|s| {
                        matches!(s.name.as_str(), "migrate" | "start" | "gate")
                            && s.status == "failed"
                    }));
            let failed = release_failed.then(|| target.clone());
            let report = roll_back(run, "automatic", failed, None, None)?;
            outcome.exit_code = report_exit(&report);
            outcome.outcome = if outcome.exit_code == EXIT_ROLLED_BACK {
                "rolled_back".into()
            } else {
                "rollback_failed".into()
            };
            outcome.message = rollback_message(&why, &report);
            outcome.rollback = Some(report);
            Ok(outcome)
        }
    }
}

/// After a passed gate: prune images (keeping the new stable release and the one
/// before), drop the snapshot.
fn after_success(run: &mut Run, target: &str) -> anyhow::Result<()> {
    let mut protected = vec![target.to_string()];
    protected.extend(run.journal.from.clone());
    let pruned = run.runtime.prune_images(&protected)?;
    if !pruned.removed.is_empty() {
        run.note(format!("removed old images {}", pruned.removed.join(", ")));
    }
    let own = run.journal.snapshot.clone();
    if let Some(snapshot) = &own {
        run.db()?.drop_snapshot(snapshot)?;
    }
    // A snapshot kept from an earlier deploy whose rollback needed manual intervention
    // is kept until now: this deploy succeeded.
    if run.loaded.config.database.snapshot || own.is_some() {
        let dropped = kept::drop_stale_snapshots(run.db()?, own.as_deref());
        if !dropped.is_empty() {
            run.note(format!(
                "dropped the snapshot(s) kept from an earlier deploy: {}",
                dropped.join(", ")
            ));
        }
    }
    Ok(())
}

/// After a rollback: the deploy's snapshot, when it was not swapped in, is dropped if
/// production is healthy again (the pre-deploy backup holds the same state) and kept
/// when it is not (the fastest way back to the pre-deploy state for whoever steps in;
/// the next successful deploy drops it). Returns the name of a snapshot kept.
fn settle_snapshot(run: &mut Run, report: &RollbackReport) -> Option<String> {
    let snapshot = run.journal.snapshot.clone()?;
    let db = match run.db() {
        Ok(db) => db,
        Err(e) => {
            tracing::warn!("the snapshot {snapshot} could not be checked: {e:#}");
            return Some(snapshot);
        }
    };
    match db.database_exists(&snapshot) {
        Ok(false) => return None,
        Ok(true) => {}
        Err(e) => {
            tracing::warn!("the snapshot {snapshot} could not be checked: {e:#}");
            return Some(snapshot);
        }
    }
    if report.gate.as_ref().is_some_and(|v| v.passed) {
        match db.drop_kept_database(&snapshot) {
            Ok(()) => {
                run.say(&format!(
                    "    dropped the snapshot {snapshot}: production is healthy and the pre-deploy backup holds the same state"
                ));
                None
            }
            Err(e) => {
                tracing::warn!("the snapshot {snapshot} was kept: {e:#}");
                Some(snapshot)
            }
        }
    } else {
        run.say(&format!(
            "    the snapshot {snapshot} (the pre-deploy state) is kept for manual intervention; the next successful deploy drops it"
        ));
        Some(snapshot)
    }
}

/// After a rollback swapped a database in: prunes the replaced ones (never a forced
/// drop, never one holding writes no backup has) and says what it kept back.
fn prune_kept(run: &mut Run) {
    let loaded = run.loaded;
    let pruned = run.db().and_then(|db| kept::prune_replaced(loaded, db));
    match pruned {
        Ok(p) => {
            if !p.dropped.is_empty() {
                run.say(&format!(
                    "    dropped older replaced databases (database.keep_replaced_databases): {}",
                    p.dropped.join(", ")
                ));
            }
            for k in &p.kept {
                run.say(&format!("    kept {}: {}", k.name, k.reason));
            }
        }
        Err(e) => tracing::warn!("the replaced databases were not pruned: {e:#}"),
    }
}

fn report_exit(r: &RollbackReport) -> i32 {
    match &r.gate {
        Some(v) if v.passed => EXIT_ROLLED_BACK,
        _ => EXIT_MANUAL,
    }
}

fn rollback_message(why: &str, r: &RollbackReport) -> String {
    let target = r
        .target
        .as_deref()
        .map_or("nowhere".to_string(), |t| git::abbrev(t, 12).to_string());
    let db =
        r.db.as_ref()
            .map(|d| format!("database: {} ({})", d.name(), d.reason()))
            .unwrap_or_else(|| "database: untouched".into());
    match report_exit(r) {
        EXIT_ROLLED_BACK => format!(
            "{why}; rolled back to {target} ({}), which passed the health gate; {db}",
            r.target_reason
        ),
        _ => format!(
            "{why}; MANUAL INTERVENTION REQUIRED: {}; {db}{}. Next: check `stablehand status` and the app's logs, fix the release, then `stablehand deploy --ref <good commit>` or `stablehand rollback --to <commit>`",
            match &r.gate {
                Some(v) => format!(
                    "the rollback to {target} did not pass the health gate ({})",
                    v.reason.as_deref().unwrap_or("failed")
                ),
                None => r.target_reason.clone(),
            },
            r.kept_snapshot
                .as_deref()
                .map(|s| format!("; the pre-deploy snapshot is kept as {s} (the next successful deploy drops it)"))
                .unwrap_or_default()
        ),
    }
}

/// Rolls back to the decided target: code, database and app, then the gate again.
/// `failed` is the commit that failed its gate (None for a rollback by hand, or when
/// the release never ran). `requested` and `policy` are the choices of a rollback by
/// hand; they are journaled, and a recover passes the journaled ones back. Never an
/// error once it started: what went wrong is in the report (exit 12), so the outcome
/// is still recorded and announced.
fn roll_back(
    run: &mut Run,
    trigger: &str,
    failed: Option<String>,
    requested: Option<String>,
    policy: Option<DbPolicy>,
) -> anyhow::Result<RollbackReport> {
    let started = Instant::now();
    let _shield = crate::process::shield_production();
    run.journal.phase = Phase::RollingBack;
    run.journal.failed_commit = failed.clone();
    run.journal.requested = requested.clone();
    run.journal.db_policy = policy;
    run.save()?;
    let mut report = RollbackReport {
        trigger: trigger.into(),
        failed_commit: failed.clone(),
        target: None,
        target_reason: String::new(),
        reverted_commits: Vec::new(),
        db: None,
        writes_since_backup: None,
        kept_database: None,
        kept_snapshot: None,
        database_ms: None,
        images: Vec::new(),
        rebuilt: false,
        gate: None,
        took_ms: 0,
    };
    let stepped = roll_back_steps(run, &mut report, failed, requested, policy);
    report.kept_snapshot = settle_snapshot(run, &report);
    if let Err(e) = stepped {
        report.target_reason = match &report.target {
            Some(target) => format!(
                "the rollback to {} ({}) failed: {e:#}",
                git::abbrev(target, 12),
                report.target_reason
            ),
            None => format!("the rollback failed before it chose a target: {e:#}"),
        };
    }
    report.took_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The rollback's target and steps, filling `report` as they go.
fn roll_back_steps(
    run: &mut Run,
    report: &mut RollbackReport,
    failed: Option<String>,
    requested: Option<String>,
    policy: Option<DbPolicy>,
) -> anyhow::Result<()> {
    let current = run.repo.head()?;
    let history = crate::journal::read_history(&run.state_dir).unwrap_or_default();
    let mut failed_set: HashSet<String> = crate::journal::failed_commits(&history);
    failed_set.extend(failed.clone());
    let previous = run.journal.from.clone().filter(|p| *p != current);
    let inputs = git::TargetInputs {
        current: current.clone(),
        latest_stable: run.repo.latest_stable()?,
        previous: previous.clone(),
        failed: failed_set.clone(),
        requested: requested.clone(),
    };
    // A rollback already under way (recover) keeps its target.
    let decided = match (&run.journal.rollback_to, &run.journal.rollback_reason) {
        (Some(t), reason) => Target::Commit {
            commit: t.clone(),
            reason: reason
                .clone()
                .unwrap_or_else(|| "the interrupted rollback's target".into()),
        },
        _ => {
            let target = git::rollback_target(&inputs);
            let policy = policy.unwrap_or(run.loaded.config.database.on_rollback);
            matching_database(run, target, previous.as_deref(), &failed_set, policy)?
        }
    };
    let target = match decided {
        Target::Commit { commit, reason } => {
            report.target_reason = reason;
            commit
        }
        Target::None { reason } => {
            // Nothing is destroyed: the database stays, the app is started again (a
            // rollback by hand has stopped nothing yet).
            report.target_reason = reason;
            if requested.is_none() {
                let _ = run.step("restart", |r| r.runtime.start_app());
            }
            return Ok(());
        }
    };
    report.target = Some(target.clone());
    report.reverted_commits = run
        .repo
        .commits_between(&target, &current)
        .unwrap_or_default();
    run.journal.rollback_to = Some(target.clone());
    run.journal.rollback_reason = Some(report.target_reason.clone());
    run.save()?;
    run.say(&format!(
        "rolling back to {} ({}), reverting {} commit(s): {}",
        git::abbrev(&target, 12),
        report.target_reason,
        report.reverted_commits.len(),
        report
            .reverted_commits
            .iter()
            .map(|c| format!("{} {}", git::abbrev(&c.sha, 7), c.subject))
            .collect::<Vec<_>>()
            .join("; ")
    ));

    let result = (|| -> anyhow::Result<()> {
        run.step("stop_app", |r| r.runtime.stop_app().map(drop))?;
        let source = failed.clone().unwrap_or_else(|| current.clone());
        let decided = run.step("database", |r| {
            let d = decide_database(r, policy, &source)?;
            r.note(format!("{}: {}", d.action.name(), d.action.reason()));
            Ok(d)
        })?;
        report.writes_since_backup = decided.writes;
        let mut action = decided.action.clone();
        run.journal.db_action = Some(action.clone());
        run.save()?;
        report.db = Some(action.clone());
        let t = Instant::now();
        if let (DbAction::Down { .. }, Some(plan)) = (&action, &decided.down_plan) {
            let expected = decided.facts.fingerprint_before.clone();
            let down = run.step("database_down", |r| {
                let applied = crate::migrations::apply(r.db()?, plan, expected.as_deref())?;
                r.note(format!(
                    "down.sql of {} applied ({}, {} ms); the schema matches the pre-deploy fingerprint; ledger rows marked rolled back",
                    applied.migrations.join(", "),
                    if applied.transactional { "in one transaction" } else { "statement by statement" },
                    applied.took_ms
                ));
                Ok(applied)
            });
            if let Err(e) = down {
                // Fall back to the next rung: the decision without the down path.
                let mut facts = decided.facts.clone();
                facts.down = decision::DownPath::Unavailable {
                    why: format!("{e:#}"),
                };
                action = decision::decide(decided.policy, &facts);
                run.say(&format!(
                    "    falling back: {}: {}",
                    action.name(),
                    action.reason()
                ));
                run.journal.db_action = Some(action.clone());
                run.save()?;
                report.db = Some(action.clone());
            }
        }
        match &action {
            DbAction::None { .. } | DbAction::Down { .. } => {}
            DbAction::Impossible { reason } => bail!(
                "{reason}; the app is left stopped at {} (its database untouched) until you decide",
                git::abbrev(&current, 12)
            ),
            DbAction::SwapSnapshot { snapshot, .. } => {
                let kept = run.step("database_swap", |r| {
                    // swap_in ends the sessions itself, inside the same statement.
                    let (kept, took) = r
                        .db()?
                        .swap_to_snapshot_keeping(snapshot, ops::FAILED_SUFFIX)?;
                    r.note(format!(
                        "snapshot swapped in ({} ms); the failed database is kept as {kept}",
                        took.as_millis()
                    ));
                    Ok(kept)
                })?;
                report.kept_database = Some(kept);
            }
            DbAction::Restore { backup, .. } => {
                let restored = run.step("database_restore", |r| {
                    let done = crate::restore::restore_for_rollback(r.loaded, backup)?;
                    r.note(format!(
                        "backup {} restored ({} tables, {} ms) and swapped in ({} ms); the failed database is kept as {}",
                        done.backup, done.tables, done.restore_ms, done.swap_ms, done.kept_as
                    ));
                    Ok(done)
                })?;
                report.kept_database = Some(restored.kept_as);
            }
        }
        report.database_ms = Some(t.elapsed().as_millis() as u64);
        if let Some(kept) = report.kept_database.clone() {
            // The failed database was live when the pre-deploy backup was taken.
            if let Some(backup) = run.journal.backup.clone() {
                kept::remember(run.loaded, &kept, &backup);
            }
            prune_kept(run);
        }
        run.step("revert_code", |r| r.repo.reset_hard(&target, true))?;
        let switched = run.step("switch", |r| {
            let s = r.runtime.switch_to(&target)?;
            if s.rebuilt {
                r.note("rebuilt: no retained images for the target".into());
            }
            Ok(s)
        })?;
        report.images = switched.images;
        report.rebuilt = switched.rebuilt;
        let verdict = run.step("rollback_gate", |r| r.gate(false))?;
        report.gate = Some(verdict);
        Ok(())
    })();
    result
}

/// The database state a rollback returns to, and the one it has now.
struct PreDeployState {
    /// The verified pre-deploy backup of this deploy (or of the last deploy, by hand).
    manifest: Option<crate::backup::manifest::Manifest>,
    /// The migration ledger in that backup, and in the live database now.
    ledger_before: Ledger,
    ledger_now: Ledger,
}

/// Whether a commit's code knows the database state a rollback returns to.
enum Fit {
    Fits,
    /// The migrations that state holds and the commit's tree lacks.
    Lacks(Vec<String>),
    /// Not tracked (`database.migrations = "none"`) and another commit's state.
    Unknown,
}

impl PreDeployState {
    fn read(run: &mut Run) -> anyhow::Result<PreDeployState> {
        let manifest = match &run.journal.backup {
            Some(id) => Some(Catalog::new(run.loaded.backup_dir()).find(id)?),
            None => None,
        };
        let ledger_before: Ledger = manifest
            .as_ref()
            .and_then(|m| m.prisma_migrations.clone())
            .map(|rows| serde_json::from_value(rows).map(|rows| Ledger { rows }))
            .transpose()
            .context("reading the backup's migration ledger")?
            .unwrap_or_default();
        let ledger_now = run.db()?.migration_ledger()?;
        Ok(PreDeployState {
            manifest,
            ledger_before,
            ledger_now,
        })
    }

    /// The commit whose database state the backup (or the live database) holds.
    fn state_of(&self, run: &Run) -> Option<String> {
        self.manifest
            .as_ref()
            .and_then(|m| m.git_commit.clone())
            .or_else(|| run.journal.from.clone())
    }

    /// Does `commit`'s code know the state a rollback returns the database to (the
    /// backup's, else the live one)? With Prisma: every migration applied in it has its
    /// directory in the commit's tree (migrations the commit adds are applied as it
    /// starts).
    fn fit(&self, run: &Run, commit: &str) -> anyhow::Result<Fit> {
        if self.state_of(run).as_deref() == Some(commit) {
            return Ok(Fit::Fits);
        }
        let database = &run.loaded.config.database;
        if database.migrations != "prisma" {
            return Ok(Fit::Unknown);
        }
        let end = if self.manifest.is_some() {
            &self.ledger_before
        } else {
            &self.ledger_now
        };
        let known = run.repo.dirs_at(commit, &database.migrations_dir)?;
        let mut lacks: Vec<String> = end
            .rows
            .iter()
            .filter(|r| r.is_applied() && !known.contains(&r.migration_name))
            .map(|r| r.migration_name.clone())
            .collect();
        lacks.sort();
        lacks.dedup();
        Ok(if lacks.is_empty() {
            Fit::Fits
        } else {
            Fit::Lacks(lacks)
        })
    }
}

/// Checks the rollback target against the database before anything is stopped: the
/// code must return to a release that knows the database state it will run on. When
/// the chosen target does not (a `latest-stable` older than the schema: marked by hand,
/// or a local mark lost), an automatic rollback returns instead to the commit whose
/// state the database holds, the one running before this deploy, if it has not failed;
/// a rollback by hand to such a target is refused (nothing was changed).
fn matching_database(
    run: &mut Run,
    decided: Target,
    previous: Option<&str>,
    failed: &HashSet<String>,
    policy: DbPolicy,
) -> anyhow::Result<Target> {
    let Target::Commit { commit, reason } = &decided else {
        return Ok(decided);
    };
    if policy == DbPolicy::None {
        return Ok(decided);
    }
    let state = PreDeployState::read(run)?;
    let lacks = match state.fit(run, commit)? {
        Fit::Fits => return Ok(decided),
        Fit::Lacks(names) => Some(names),
        Fit::Unknown => None,
    };
    let why = match &lacks {
        Some(names) => format!(
            "the database holds migration(s) {} that {} does not have",
            names.join(", "),
            git::abbrev(commit, 12)
        ),
        None => format!(
            "the database holds the state of {}, and whether {} can run on it is not known (database.migrations = \"none\")",
            state.state_of(run).as_deref().map_or("another release", |s| git::abbrev(s, 12)),
            git::abbrev(commit, 12)
        ),
    };
    if reason == "requested" {
        return Ok(match lacks {
            Some(_) => Target::None {
                reason: format!(
                    "--to {}: {why}, so its code would run on a schema it does not know; restore a backup of that release first (`stablehand restore ID`), or pass --db none to leave the database as it is",
                    git::abbrev(commit, 12)
                ),
            },
            None => decided,
        });
    }
    let alternative = previous.filter(|p| p != commit && !failed.contains(*p));
    if let Some(p) = alternative {
        if matches!(state.fit(run, p)?, Fit::Fits) {
            return Ok(Target::Commit {
                commit: p.to_string(),
                reason: format!(
                    "the release running before this deploy, whose database state this is: {why}, so not {reason} {}",
                    git::abbrev(commit, 12)
                ),
            });
        }
    }
    Ok(decided)
}

/// The database decision with what it was made from.
struct DbDecision {
    action: DbAction,
    policy: DbPolicy,
    facts: DbFacts,
    writes: Option<u64>,
    /// The down scripts, when the action is `Down`.
    down_plan: Option<crate::migrations::DownPlan>,
}

/// The facts of the database decision, from the pre-deploy backup and the live database;
/// down scripts are read from `source`, the commit whose migrations were applied.
fn decide_database(
    run: &mut Run,
    policy: Option<DbPolicy>,
    source: &str,
) -> anyhow::Result<DbDecision> {
    let policy = policy.unwrap_or(run.loaded.config.database.on_rollback);
    let loaded = run.loaded;
    let journal = run.journal.clone();
    let target = journal.rollback_to.clone().unwrap_or_default();
    let state = PreDeployState::read(run)?;
    let target_lacks = match state.fit(run, &target)? {
        Fit::Fits => Some(Vec::new()),
        Fit::Lacks(names) => Some(names),
        Fit::Unknown => None,
    };
    let PreDeployState {
        manifest,
        ledger_before,
        ledger_now,
    } = state;
    let db = run.db()?;
    let writes = match manifest.as_ref().and_then(|m| m.write_counters.clone()) {
        Some(before) => Some(db.write_counters()?.since(&before)),
        None => None,
    };
    let mut facts = DbFacts {
        ledger_diff: ledger_before.diff(&ledger_now),
        fingerprint_before: manifest.as_ref().and_then(|m| m.schema_fingerprint.clone()),
        fingerprint_now: Some(db.schema_fingerprint()?),
        snapshot: journal.snapshot.clone(),
        backup: journal.backup.clone(),
        writes_since_backup: writes.unwrap_or(0),
        state_of: manifest
            .as_ref()
            .and_then(|m| m.git_commit.clone())
            .or_else(|| journal.from.clone()),
        target,
        target_lacks,
        down: decision::DownPath::NotConsidered,
    };
    let mut down_plan = None;
    let database = &loaded.config.database;
    if database.migrations == "prisma"
        && matches!(policy, DbPolicy::Auto | DbPolicy::Down)
        && !facts.ledger_diff.applied.is_empty()
    {
        let names =
            crate::migrations::applied_newest_first(&ledger_now, Some(&facts.ledger_diff.applied));
        let repo = &run.repo;
        let plan = crate::migrations::plan(&names, &database.migrations_dir, |path| {
            repo.file_at(source, path)
        })?;
        facts.down = match plan {
            Err(why) => decision::DownPath::Unavailable { why },
            Ok(plan) => {
                let horizon = manifest.as_ref().and_then(|m| m.xid_horizon);
                let db = run.db.as_ref().expect("connected above");
                let at_risk = crate::migrations::data_at_risk(db, &plan, horizon)?;
                if at_risk.is_empty() {
                    let migrations = plan.migrations();
                    down_plan = Some(plan);
                    decision::DownPath::Ready { migrations }
                } else {
                    decision::DownPath::Unavailable {
                        why: crate::migrations::at_risk_reason(&at_risk, "the pre-deploy backup"),
                    }
                }
            }
        };
    }
    // A rollback by hand without a journaled backup: use the newest backup of the
    // target commit? No: without a recorded pre-deploy state the database stays.
    let action = if manifest.is_none() && facts.snapshot.is_none() {
        match policy {
            DbPolicy::Restore => DbAction::Impossible {
                reason: "--db restore, but this rollback has no pre-deploy backup; restore one by hand with `stablehand restore ID`".into(),
            },
            _ => DbAction::None {
                reason: "no pre-deploy backup is recorded for this rollback: the database is left alone (restore one by hand with `stablehand restore ID` if needed)".into(),
            },
        }
    } else {
        decision::decide(policy, &facts)
    };
    Ok(DbDecision {
        action,
        policy,
        facts,
        writes,
        down_plan,
    })
}

/// Records the outcome in the history, removes the journal, and fills the steps.
/// A rollback aborted by a second signal keeps its journal for `stablehand recover`
/// (its outcome is recorded under no journal id, so recover does not take it for
/// finished). A history that cannot be written (a full disk) does not change the
/// outcome: the announcement still goes out, and the outcome says so.
fn finish(
    run: &mut Run,
    outcome: anyhow::Result<Outcome>,
    started: Instant,
    trigger: &str,
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
        let _ = writeln!(
            std::io::stderr(),
            "stablehand: the outcome could not be written to the history: {e:#}"
        );
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
fn record(loaded: &Loaded, id: &str, outcome: &Outcome, trigger: &str) -> anyhow::Result<()> {
    let rb = outcome.rollback.as_ref();
    let mut release = Release {
        id: id.to_string(),
        at: jiff::Timestamp::now(),
        command: outcome.command.clone(),
        trigger: trigger.into(),
        from: outcome.from.clone(),
        to: match outcome.outcome.as_str() {
            "deployed" => outcome.target.clone(),
            "refused" => outcome.from.clone(),
            _ => rb.and_then(|r| r.target.clone()),
        },
        outcome: outcome.outcome.clone(),
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
    if let Some(event) = crate::notify::Event::from_release(loaded, &release) {
        release.notifications = crate::notify::send(loaded, &event);
        crate::notify::github_actions(&event);
    }
    crate::journal::append_history(&loaded.state_dir(), &release)
}

/// A deploy or rollback refused before it started (lock held, an unfinished journal,
/// preflight): recorded and announced like any other outcome.
fn refused_loudly(loaded: &Loaded, outcome: Outcome) -> anyhow::Result<Outcome> {
    let trigger = if outcome.command == "rollback" {
        "manual"
    } else {
        "deploy"
    };
    record(loaded, "", &outcome, trigger)?;
    Ok(outcome)
}

/// `stablehand rollback`: by hand, to latest-stable (or `--to`).
pub fn rollback(loaded: &Loaded, req: &RollbackRequest) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let state_dir = loaded.state_dir();
    let _lock = match exclusive(loaded, "rollback", false, started)? {
        Ok(lock) => lock,
        Err(refusal) => return refused_loudly(loaded, refusal),
    };
    let repo = Repo::open(&loaded.app_dir, &loaded.config.git)?;
    let runtime = Runtime::load(loaded)?;
    let current = repo.head()?;
    let requested = match req.to {
        Some(r) => Some(
            repo.resolve(r)
                .with_context(|| format!("--to {r:?} does not resolve to a commit"))?,
        ),
        None => None,
    };
    // The pre-deploy backup of the last deploy of the running commit, if it is known.
    let history = crate::journal::read_history(&state_dir).unwrap_or_default();
    let last_deploy = history.iter().rev().find(|r| {
        r.command == "deploy"
            && r.outcome == "deployed"
            && r.to.as_deref() == Some(current.as_str())
    });
    // Nowhere to go is a refusal: nothing is stopped for it.
    let latest_stable = repo.latest_stable()?;
    let previous = last_deploy
        .and_then(|r| r.from.clone())
        .filter(|p| *p != current);
    let inputs = git::TargetInputs {
        current: current.clone(),
        latest_stable: latest_stable.clone(),
        previous,
        failed: crate::journal::failed_commits(&history),
        requested: requested.clone(),
    };
    if let Target::None { reason } = git::rollback_target(&inputs) {
        let message = if requested.is_none() && latest_stable.as_deref() == Some(current.as_str()) {
            format!(
                "the running commit {} is latest-stable: there is no earlier stable release to roll back to; name one with `stablehand rollback --to <commit>` (nothing was changed)",
                git::abbrev(&current, 12)
            )
        } else {
            format!("{reason} (nothing was changed)")
        };
        return refused_loudly(loaded, refused("rollback", message, started));
    }
    let mut journal = Journal::new("rollback", requested.as_deref().unwrap_or(""));
    journal.phase = Phase::RollingBack;
    journal.from = last_deploy.and_then(|r| r.from.clone());
    journal.backup = last_deploy.and_then(|r| r.backup.clone());
    journal.stable_before = latest_stable;
    let mut run = Run {
        loaded,
        state_dir,
        journal,
        progress: req.progress,
        repo,
        runtime,
        db: None,
        journal_error: None,
    };
    run.save()?;
    let report = roll_back(&mut run, "manual", None, requested, req.db);
    let outcome = report.map(|report| {
        if report.target.is_none() {
            // Refused before anything was stopped.
            return refused(
                "rollback",
                format!("{} (nothing was changed)", report.target_reason),
                started,
            );
        }
        let exit_code = report_exit(&report);
        Outcome {
            outcome: if exit_code == EXIT_ROLLED_BACK {
                "rolled_back"
            } else {
                "rollback_failed"
            }
            .into(),
            exit_code,
            message: rollback_message("rollback requested", &report),
            from: Some(current.clone()),
            target: report.target.clone(),
            backup: run.journal.backup.clone(),
            rollback: Some(report),
            ..Outcome::new("rollback")
        }
    });
    finish(&mut run, outcome, started, "manual")
}

/// `stablehand recover`: finishes an interrupted deploy or rollback so code and
/// database match: after a passed gate, the marking; otherwise the rollback.
pub fn recover(loaded: &Loaded, progress: bool) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let state_dir = loaded.state_dir();
    let _lock = match exclusive(loaded, "recover", true, started)? {
        Ok(lock) => lock,
        Err(refusal) => return Ok(refusal),
    };
    let nothing_to_do = |message: String| {
        let mut o = refused("recover", message, started);
        o.outcome = "nothing_to_do".into();
        o.exit_code = 0;
        o
    };
    let Some(journal) = Journal::load(&state_dir)? else {
        return Ok(nothing_to_do(
            "no unfinished deploy or rollback: nothing to do".into(),
        ));
    };
    // Killed after recording its outcome, before removing the journal: it finished.
    let history = crate::journal::read_history(&state_dir)?;
    if let Some(done) = history.iter().rev().find(|r| r.id == journal.id) {
        let message = format!(
            "the {} {} had finished ({}) before it was interrupted; nothing to do",
            journal.command, journal.id, done.outcome
        );
        Journal::finish(&state_dir)?;
        return Ok(nothing_to_do(message));
    }
    let repo = Repo::open(&loaded.app_dir, &loaded.config.git)?;
    let runtime = Runtime::load(loaded)?;
    let phase = journal.phase;
    let mut run = Run {
        loaded,
        state_dir,
        journal,
        progress,
        repo,
        runtime,
        db: None,
        journal_error: None,
    };
    run.say(&format!(
        "recovering {} {} (phase {:?}, last step {})",
        run.journal.command,
        run.journal.id,
        phase,
        run.journal
            .steps
            .last()
            .map(|s| format!("{} {}", s.name, s.status))
            .unwrap_or_else(|| "none".into())
    ));
    let target = run.journal.target.clone();
    let mut outcome = Outcome {
        from: run.journal.from.clone(),
        target: Some(target.clone()),
        backup: run.journal.backup.clone(),
        ..Outcome::new("recover")
    };
    let result = match phase {
        Phase::Passed => (|| {
            let backup = run.journal.backup.clone();
            let tag = match run.repo.latest_stable()? {
                Some(s) if s == target => None,
                _ => Some(run.step("mark_stable", |r| {
                    Ok(r.repo
                        .mark_stable(&target, backup.as_deref(), jiff::Timestamp::now())?
                        .tag)
                })?),
            };
            run.step("prune", |r| after_success(r, &target))?;
            outcome.outcome = "deployed".into();
            outcome.stable_tag = tag;
            outcome.message = format!(
                "finished the interrupted deploy of {}: its gate had passed; it is marked stable",
                git::abbrev(&target, 12)
            );
            Ok(outcome.clone())
        })(),
        Phase::Deploying | Phase::RollingBack => (|| {
            // Nothing had changed yet: back to the running code, the containers serve.
            let changed = run.journal.steps.iter().any(|s| s.name == "stop");
            if run.journal.command == "deploy" && !changed {
                let from = run
                    .journal
                    .from
                    .clone()
                    .context("the journal has no running commit")?;
                run.step("revert_code", |r| {
                    r.repo.reset_hard(&from, true)?;
                    r.runtime.restore_image_names(&from)
                })?;
                outcome.outcome = "refused".into();
                outcome.exit_code = EXIT_REFUSED;
                outcome.message = format!(
                    "the interrupted deploy of {} had not changed production; the code is back at {}",
                    git::abbrev(&target, 12),
                    git::abbrev(&from, 12)
                );
                return Ok(outcome.clone());
            }
            // Only a commit that failed its gate counts as failed; one whose deploy was
            // interrupted is just not proven.
            let failed = run.journal.failed_commit.clone();
            let (requested, policy) = (run.journal.requested.clone(), run.journal.db_policy);
            let report = roll_back(&mut run, "recover", failed, requested, policy)?;
            outcome.exit_code = report_exit(&report);
            outcome.outcome = if outcome.exit_code == EXIT_ROLLED_BACK {
                "rolled_back"
            } else {
                "rollback_failed"
            }
            .into();
            outcome.message = rollback_message("recovering an interrupted deploy", &report);
            outcome.rollback = Some(report);
            Ok(outcome.clone())
        })(),
    };
    finish(&mut run, result, started, "recover")
}
