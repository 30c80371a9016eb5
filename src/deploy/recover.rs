//! The rollback and recover commands: a rollback asked for by hand, and finishing what a killed deploy or rollback left in the journal.

use super::*;

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
            && r.outcome == OutcomeKind::Deployed
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
        return refused_loudly(
            loaded,
            refused("rollback", Refusal::NoTarget, message, started),
        );
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
        warm: false,
    };
    run.save()?;
    let report = roll_back(&mut run, Trigger::Manual, None, requested, req.db);
    let maintenance_ms = report
        .as_ref()
        .ok()
        .and_then(|r| zero::after_rollback(&mut run, r));
    let outcome = report.map(|report| {
        if report.target.is_none() {
            // Refused before anything was stopped.
            return refused(
                "rollback",
                Refusal::NoTarget,
                format!("{} (nothing was changed)", report.target_reason),
                started,
            );
        }
        let exit_code = report_exit(&report);
        Outcome {
            outcome: rollback_outcome(exit_code),
            exit_code,
            message: rollback_message("rollback requested", &report),
            from: Some(current.clone()),
            target: report.target.clone(),
            backup: run.journal.backup.clone(),
            rollback: Some(report),
            maintenance_ms,
            ..Outcome::new("rollback")
        }
    });
    finish(&mut run, outcome, started, Trigger::Manual)
}

/// `stablehand recover`: finishes an interrupted deploy or rollback so code and
/// database match: after a passed gate, the marking; otherwise the rollback.
pub fn recover(loaded: &Loaded, progress: crate::printer::Progress) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let state_dir = loaded.state_dir();
    let _lock = match exclusive(loaded, "recover", true, started)? {
        Ok(lock) => lock,
        Err(refusal) => return Ok(refusal),
    };
    let nothing_to_do = |message: String| Outcome {
        outcome: OutcomeKind::NothingToDo,
        message,
        total_ms: started.elapsed().as_millis() as u64,
        ..Outcome::new("recover")
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
        warm: false,
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
            zero::recover_traffic(&mut run)?;
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
            outcome.outcome = OutcomeKind::Deployed;
            outcome.stable_tag = tag;
            outcome.message = format!(
                "finished the interrupted deploy of {}: its gate had passed; it is marked stable",
                git::abbrev(&target, 12)
            );
            Ok(outcome.clone())
        })(),
        Phase::Deploying | Phase::RollingBack => (|| {
            // Nothing had changed yet: back to the running code, the containers serve.
            let changed = run
                .journal
                .steps
                .iter()
                .any(|s| matches!(s.name.as_str(), "stop" | "migrate" | "start_next"));
            if run.journal.command == "deploy" && !changed {
                zero::maintenance_off(&mut run)?;
                let from = run
                    .journal
                    .from
                    .clone()
                    .context("the journal has no running commit")?;
                run.step("revert_code", |r| {
                    r.repo.reset_hard(&from, true)?;
                    r.runtime.restore_image_names(&from)
                })?;
                outcome.outcome = OutcomeKind::Refused;
                outcome.exit_code = EXIT_REFUSED;
                outcome.refusal = Some(Refusal::BeforeChange);
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
            outcome.switch_back_ms = zero::before_rollback(&mut run)?;
            let report = roll_back(&mut run, Trigger::Recover, failed, requested, policy)?;
            outcome.maintenance_ms = zero::after_rollback(&mut run, &report);
            outcome.exit_code = report_exit(&report);
            outcome.outcome = rollback_outcome(outcome.exit_code);
            outcome.message = rollback_message("recovering an interrupted deploy", &report);
            outcome.rollback = Some(report);
            Ok(outcome.clone())
        })(),
    };
    finish(&mut run, result, started, Trigger::Recover)
}
