//! The deploy pipeline: preflight, backup, build, migrate, start, gate; then the stable tag, or the rollback.

use super::*;

/// `stablehand deploy`.
pub fn deploy(loaded: &Loaded, req: &DeployRequest) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let state_dir = loaded.state_dir();
    let _lock = match exclusive(loaded, "deploy", false, started)? {
        Ok(lock) => lock,
        Err(refusal) => return refused_loudly(loaded, refusal),
    };
    // Preflight: everything is checked before anything changes; a problem is exit 10.
    let pre = match preflight(loaded, req.reference, req.strategy) {
        Ok(p) => p,
        Err(e) => {
            return refused_loudly(
                loaded,
                refused(
                    "deploy",
                    Refusal::Preflight,
                    format!("preflight failed; nothing was changed: {e:#}"),
                    started,
                ),
            )
        }
    };
    if req.dry_run {
        let message = format!(
            "would deploy {} (running {}): back up {}, build and {} {}, run the health gate; nothing was changed",
            git::abbrev(&pre.plan.target, 12),
            git::abbrev(&pre.plan.running, 12),
            pre.plan.database,
            match pre.plan.placement.way {
                zero::Way::StopStart => "restart".to_string(),
                way => format!("put in place ({}: {})", way.words(), pre.plan.placement.reason),
            },
            if pre.plan.services.is_empty() { pre.plan.runtime.clone() } else { pre.plan.services.join(", ") },
        );
        return Ok(Outcome {
            outcome: OutcomeKind::Planned,
            message,
            from: Some(pre.plan.running.clone()),
            target: Some(pre.plan.target.clone()),
            plan: Some(pre.plan),
            total_ms: started.elapsed().as_millis() as u64,
            ..Outcome::new("deploy")
        });
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
        db: Some(pre.db),
        journal_error: None,
        warm: false,
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
    if let Some(c) = &pre.plan.compatibility {
        run.say(&format!("  old code beside it: {}", c.summary()));
    }
    if let Some(note) = &pre.plan.stable_sync {
        run.say(&format!("    {note}"));
    }
    if pre.plan.placement.way != zero::Way::StopStart {
        run.say(&format!(
            "  put in place: {} ({})",
            pre.plan.placement.way.words(),
            pre.plan.placement.reason
        ));
    }
    let outcome = deploy_steps(&mut run, started, &pre.plan.placement);
    finish(&mut run, outcome, started, Trigger::Deploy)
}

pub(super) struct Preflight {
    pub(super) repo: Repo,
    pub(super) runtime: Runtime,
    pub(super) plan: Plan,
    /// The live database, as preflight reached it (the deploy goes on with it).
    pub(super) db: Database,
}

pub(super) fn preflight(
    loaded: &Loaded,
    reference: Option<&str>,
    strategy: Option<crate::config::Strategy>,
) -> anyhow::Result<Preflight> {
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
    zero::check_proxy(loaded)?;
    let commits = repo.commits_between(&running, &target).unwrap_or_default();
    let services = match &runtime {
        Runtime::Compose(app) => app.services.clone(),
        _ => Vec::new(),
    };
    let compatibility = match loaded.config.database.migrations.as_str() {
        "prisma" => Some(crate::migrations::compat::of_release(
            &repo,
            &target,
            &loaded.config.database.migrations_dir,
            &db.migration_ledger()?,
        )?),
        _ => None,
    };
    let placement = zero::choose(
        loaded.config.proxy.as_ref(),
        strategy,
        matches!(runtime, Runtime::Compose(_)),
        compatibility.as_ref(),
    );
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
        compatibility,
        placement,
    };
    Ok(Preflight {
        repo,
        runtime,
        plan,
        db,
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
pub(super) fn deploy_steps(
    run: &mut Run,
    started: Instant,
    placement: &zero::Placement,
) -> anyhow::Result<Outcome> {
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
            outcome.outcome = OutcomeKind::Refused;
            outcome.exit_code = EXIT_REFUSED;
            let backup_failed = e
                .chain()
                .any(|c| c.is::<crate::backup::create::BackupFailed>());
            outcome.refusal = Some(
                match backup_failed && crate::process::interruption_in(&e).is_none() {
                    true => Refusal::BackupFailed,
                    false => Refusal::BeforeChange,
                },
            );
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
    let changed = match placement.way {
        zero::Way::BlueGreen => zero::blue_green_steps(run),
        zero::Way::Maintenance => zero::maintenance_on(run).and_then(|()| stop_start_steps(run)),
        zero::Way::StopStart => stop_start_steps(run),
    };
    let changed = match changed {
        Ok(verdict) if verdict.passed && placement.way == zero::Way::Maintenance => {
            zero::maintenance_off(run).map(|ms| {
                outcome.maintenance_ms = ms;
                verdict
            })
        }
        other => other,
    };

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
            outcome.outcome = OutcomeKind::Deployed;
            outcome.message = format!(
                "deployed {} and marked it stable ({tag}){}; pre-deploy backup {backup}{}",
                git::abbrev(&target, 12),
                match placement.way {
                    zero::Way::StopStart => String::new(),
                    way => format!(" by {} ({})", way.words(), placement.reason),
                },
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
                        matches!(
                            s.name.as_str(),
                            "migrate" | "start" | "start_next" | "gate" | "watch"
                        ) && s.status == StepStatus::Failed
                    }));
            let failed = release_failed.then(|| target.clone());
            outcome.switch_back_ms = match zero::before_rollback(run) {
                Ok(ms) => ms,
                Err(e) => {
                    run.say(&format!(
                        "    moving traffic before the rollback failed: {e:#}"
                    ));
                    None
                }
            };
            let report = roll_back(run, Trigger::Automatic, failed, None, None)?;
            if let Some(ms) = zero::after_rollback(run, &report) {
                outcome.maintenance_ms = Some(ms);
            }
            outcome.exit_code = report_exit(&report);
            outcome.outcome = rollback_outcome(outcome.exit_code);
            outcome.message = rollback_message(&why, &report);
            outcome.rollback = Some(report);
            Ok(outcome)
        }
    }
}

/// After a passed gate: prune images (keeping the new stable release and the one
/// before), drop the snapshot.
pub(super) fn after_success(run: &mut Run, target: &str) -> anyhow::Result<()> {
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

/// Stop the old release, snapshot, migrate, start the new one, gate it.
fn stop_start_steps(run: &mut Run) -> anyhow::Result<Verdict> {
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
    zero::run_migrate_command(run)?;
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
}
