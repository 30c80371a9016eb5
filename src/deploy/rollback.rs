//! Rolling back a failed deploy: code to the last stable release, the database as decided, the snapshot settled, kept databases pruned.

use super::*;

/// After a rollback: the deploy's snapshot, when it was not swapped in, is dropped if
/// production is healthy again (the pre-deploy backup holds the same state) and kept
/// when it is not (the fastest way back to the pre-deploy state for whoever steps in;
/// the next successful deploy drops it). Returns the name of a snapshot kept.
pub(super) fn settle_snapshot(run: &mut Run, report: &RollbackReport) -> Option<String> {
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
pub(super) fn prune_kept(run: &mut Run) {
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

pub(super) fn report_exit(r: &RollbackReport) -> i32 {
    match &r.gate {
        Some(v) if v.passed => EXIT_ROLLED_BACK,
        _ => EXIT_MANUAL,
    }
}

pub(super) fn rollback_message(why: &str, r: &RollbackReport) -> String {
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
pub(super) fn roll_back(
    run: &mut Run,
    trigger: Trigger,
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
        trigger,
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
pub(super) fn roll_back_steps(
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

    // The old release still serves behind the proxy (a blue/green switch back): it is
    // stopped only when the database must be swapped under it.
    let warm = run.warm && run.journal.from.as_deref() == Some(target.as_str());
    run.warm = warm;
    let result = (|| -> anyhow::Result<()> {
        if !warm {
            zero::maintenance_while_stopped(run);
            run.step("stop_app", |r| r.runtime.stop_app().map(drop))?;
        }
        let source = failed.clone().unwrap_or_else(|| current.clone());
        let decided = run.step("database", |r| {
            let d = decide_database(r, policy, &source)?;
            r.note(format!("{}: {}", d.action.name(), d.action.reason()));
            Ok(d)
        })?;
        let stopped = !warm || zero::needs_stop(&decided.action);
        if warm && stopped {
            zero::maintenance_while_stopped(run);
            run.step("stop_app", |r| r.runtime.stop_app().map(drop))?;
        }
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
            DbAction::Impossible { reason } if warm => bail!(
                "{reason}; the old release {} goes on serving on the database as it is until you decide",
                git::abbrev(&target, 12)
            ),
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
        if !stopped {
            run.step("revert_code", |r| {
                r.repo.reset_hard(&target, true)?;
                r.runtime.restore_image_names(&target)
            })?;
            let verdict = run.step("rollback_gate", |r| r.gate(false))?;
            report.gate = Some(verdict);
            return Ok(());
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
