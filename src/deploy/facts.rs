//! The database facts of a deploy and what a rollback does with the database: the state before the deploy, whether a backup or snapshot still fits, and the decision.

use super::*;

/// The database state a rollback returns to, and the one it has now.
pub(super) struct PreDeployState {
    /// The verified pre-deploy backup of this deploy (or of the last deploy, by hand).
    pub(super) manifest: Option<crate::backup::manifest::Manifest>,
    /// The migration ledger in that backup, and in the live database now.
    pub(super) ledger_before: Ledger,
    pub(super) ledger_now: Ledger,
}

/// Whether a commit's code knows the database state a rollback returns to.
pub(super) enum Fit {
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
pub(super) fn matching_database(
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
pub(super) struct DbDecision {
    pub(super) action: DbAction,
    pub(super) policy: DbPolicy,
    pub(super) facts: DbFacts,
    pub(super) writes: Option<u64>,
    /// The down scripts, when the action is `Down`.
    pub(super) down_plan: Option<crate::migrations::DownPlan>,
}

/// The facts of the database decision, from the pre-deploy backup and the live database;
/// down scripts are read from `source`, the commit whose migrations were applied.
pub(super) fn decide_database(
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
