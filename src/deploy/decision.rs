//! The database decision of a rollback: a pure function of what the deploy recorded
//! and what the database looks like now, with the reason it gives.

use serde::Serialize;

use crate::db::inspect::LedgerDiff;

pub use crate::config::DbPolicy;

/// What the deploy recorded and what the database looks like now.
#[derive(Debug, Clone, Default)]
pub struct DbFacts {
    /// Migrations applied, failed or rolled back since the pre-deploy backup.
    pub ledger_diff: LedgerDiff,
    /// The schema fingerprint at backup time and now (None when unknown).
    pub fingerprint_before: Option<String>,
    pub fingerprint_now: Option<String>,
    /// A snapshot taken while the app was stopped, if any.
    pub snapshot: Option<String>,
    /// The verified pre-deploy backup, if any.
    pub backup: Option<String>,
    /// Rows written since the backup (write counters), for the report.
    pub writes_since_backup: u64,
    /// The commit whose database state the backup and snapshot hold, and the rollback
    /// target: a database rollback only makes sense when they are the same.
    pub state_of: Option<String>,
    pub target: String,
    /// The migrations the state the database returns to holds and the target's tree
    /// lacks: empty when the target knows that state, None when it cannot be told
    /// (then only the same commit counts as matching).
    pub target_lacks: Option<Vec<String>>,
    /// Whether the deploy's migrations can be undone by their down scripts.
    pub down: DownPath,
}

/// Whether down migrations can take the database back (see `crate::migrations`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DownPath {
    /// Not looked at (`database.migrations = "none"`, or restore was asked for).
    #[default]
    NotConsidered,
    /// Every migration the deploy applied has a down script, none refused, and none
    /// would destroy rows written since the backup.
    Ready { migrations: Vec<String> },
    /// Why they cannot.
    Unavailable { why: String },
}

/// What to do with the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DbAction {
    /// Leave it as it is.
    None { reason: String },
    /// Run the deploy's down migrations, newest first, keeping writes made since.
    Down {
        migrations: Vec<String>,
        reason: String,
    },
    /// Swap the snapshot in (a rename), keeping the failed database.
    SwapSnapshot { snapshot: String, reason: String },
    /// Restore the backup into a new database and swap it in, keeping the failed one.
    Restore { backup: String, reason: String },
    /// The database changed and there is nothing to return it to.
    Impossible { reason: String },
}

impl DbAction {
    pub fn reason(&self) -> &str {
        match self {
            DbAction::None { reason }
            | DbAction::Down { reason, .. }
            | DbAction::SwapSnapshot { reason, .. }
            | DbAction::Restore { reason, .. }
            | DbAction::Impossible { reason } => reason,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            DbAction::None { .. } => "none",
            DbAction::Down { .. } => "down",
            DbAction::SwapSnapshot { .. } => "swap_snapshot",
            DbAction::Restore { .. } => "restore",
            DbAction::Impossible { .. } => "impossible",
        }
    }
}

/// Decides the database action of a rollback.
pub fn decide(policy: DbPolicy, f: &DbFacts) -> DbAction {
    let writes = match f.writes_since_backup {
        0 => "no rows were written since the backup".to_string(),
        1 => "1 row was written since the backup".to_string(),
        n => format!("{n} rows were written since the backup"),
    };
    let kept = match f.writes_since_backup {
        0 => writes.clone(),
        _ => format!("{writes}: they stay in the failed database, kept aside"),
    };
    let changed = database_changed(f);
    if policy == DbPolicy::None {
        return DbAction::None {
            reason: "database rollback disabled (--db none or database.on_rollback = \"none\")"
                .into(),
        };
    }
    // Whatever the rung, the code must return to a release that knows the database
    // state it will run on: checked before "leave it alone" too.
    if let Some(lacks) = f.target_lacks.as_ref().filter(|l| !l.is_empty()) {
        return DbAction::Impossible {
            reason: format!(
                "the database would hold migration(s) {} that the rollback target {} does not have, so its code would run on a schema it does not know: manual intervention (restore a backup of the target's release with `stablehand restore ID`, or roll back to a release that has them with --to)",
                lacks.join(", "),
                crate::git::abbrev(&f.target, 12)
            ),
        };
    }
    let why = match policy {
        DbPolicy::Restore => "database rollback requested (--db restore or database.on_rollback = \"restore\")".to_string(),
        DbPolicy::Auto | DbPolicy::Down | DbPolicy::None => match changed {
            None => {
                return DbAction::None {
                    reason: format!(
                        "the deploy applied no migration and the schema is unchanged: the database is left alone (restoring would only throw away writes; {writes})"
                    ),
                }
            }
            Some(what) => what,
        },
    };
    let unknown_fit = f.target_lacks.is_none();
    if let Some(state) = f
        .state_of
        .as_deref()
        .filter(|s| unknown_fit && *s != f.target)
    {
        return DbAction::Impossible {
            reason: format!(
                "{why}, but the pre-deploy backup holds the database of {}, not of the rollback target {}: manual intervention (restore a backup of the target's release with `stablehand restore ID`, or roll back with --db none)",
                crate::git::abbrev(state, 12),
                crate::git::abbrev(&f.target, 12)
            ),
        };
    }
    // The rung that keeps writes: down migrations, when they can be trusted.
    let not_down = match (&f.down, policy) {
        (_, DbPolicy::Restore) => None,
        (DownPath::Ready { .. }, _) if !f.ledger_diff.failed.is_empty() => Some(format!(
            "migration(s) {} failed half-way, and down scripts assume a migration applied fully",
            f.ledger_diff.failed.join(", ")
        )),
        (DownPath::Ready { .. }, _) if f.fingerprint_before.is_none() => Some(
            "the pre-deploy schema fingerprint is unknown, so the result could not be checked"
                .into(),
        ),
        (DownPath::Ready { migrations }, _) => {
            return DbAction::Down {
                migrations: migrations.clone(),
                reason: format!(
                    "{why}; down migrations preserve the writes made since the backup ({writes}): down.sql of {} run newest first, the schema checked against the pre-deploy fingerprint",
                    migrations.join(", ")
                ),
            }
        }
        (DownPath::Unavailable { why }, _) => Some(why.clone()),
        (DownPath::NotConsidered, DbPolicy::Down) => {
            Some("database.migrations is not \"prisma\"".into())
        }
        (DownPath::NotConsidered, _) => None,
    };
    let why = match not_down {
        Some(not) => format!("{why}; down migrations cannot be used ({not})"),
        None => why,
    };
    if let Some(snapshot) = &f.snapshot {
        return DbAction::SwapSnapshot {
            snapshot: snapshot.clone(),
            reason: format!(
                "{why}; a snapshot taken while the app was stopped is swapped in ({kept})"
            ),
        };
    }
    if let Some(backup) = &f.backup {
        return DbAction::Restore {
            backup: backup.clone(),
            reason: format!("{why}; the pre-deploy backup is restored ({kept})"),
        };
    }
    DbAction::Impossible {
        reason: format!("{why}, but there is no snapshot or backup of the pre-deploy state: manual intervention"),
    }
}

/// Why the database counts as changed by the deploy, or None when it does not.
fn database_changed(f: &DbFacts) -> Option<String> {
    let d = &f.ledger_diff;
    if !d.applied.is_empty() {
        return Some(format!(
            "the deploy applied migration(s) {}",
            d.applied.join(", ")
        ));
    }
    if !d.failed.is_empty() {
        return Some(format!(
            "migration(s) {} failed half-way",
            d.failed.join(", ")
        ));
    }
    if !d.rolled_back.is_empty() {
        return Some(format!(
            "migration(s) {} were marked rolled back",
            d.rolled_back.join(", ")
        ));
    }
    match (&f.fingerprint_before, &f.fingerprint_now) {
        (Some(a), Some(b)) if a != b => {
            Some("the schema changed (its fingerprint differs from the backup's)".into())
        }
        (None, _) | (_, None) => Some("the schema before the deploy is unknown".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(applied: &[&str], fp_now: &str, snapshot: bool, backup: bool) -> DbFacts {
        DbFacts {
            ledger_diff: LedgerDiff {
                applied: applied.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            fingerprint_before: Some("fp1".into()),
            fingerprint_now: Some(fp_now.into()),
            snapshot: snapshot.then(|| "app__snap_1".into()),
            backup: backup.then(|| "pre-deploy_1".into()),
            writes_since_backup: 42,
            state_of: Some("c1".into()),
            target: "c1".into(),
            target_lacks: Option::None,
            down: DownPath::NotConsidered,
        }
    }

    /// The down rung: when down migrations are taken, and what each refusal falls to.
    #[test]
    fn down_migrations_rung() {
        use DbPolicy::*;
        let ready = || DownPath::Ready {
            migrations: vec!["002_posts".into(), "001_bio".into()],
        };
        let missing = || DownPath::Unavailable {
            why: "migration 002_posts has no down script".into(),
        };
        // (policy, applied, down path, snapshot?, expected, a phrase of the reason)
        type Case = (
            DbPolicy,
            bool,
            fn() -> DownPath,
            bool,
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                Auto,
                true,
                ready,
                true,
                "down",
                "down migrations preserve the writes",
            ),
            (Auto, true, ready, false, "down", "newest first"),
            (Down, true, ready, false, "down", "002_posts, 001_bio"),
            // Restore means the backup's state, never a down script.
            (Restore, true, ready, true, "swap_snapshot", "requested"),
            (Restore, true, ready, false, "restore", "requested"),
            // No script: the next rung, saying why.
            (
                Auto,
                true,
                missing,
                true,
                "swap_snapshot",
                "has no down script",
            ),
            (
                Auto,
                true,
                missing,
                false,
                "restore",
                "down migrations cannot be used",
            ),
            (
                Down,
                true,
                || DownPath::NotConsidered,
                false,
                "restore",
                "database.migrations is not",
            ),
            // Nothing changed: nothing to undo, whatever the scripts.
            (Auto, false, ready, true, "none", "applied no migration"),
            (None, true, ready, true, "none", "disabled"),
        ];
        for (policy, applied, down, snap, want, phrase) in cases {
            let mut f = facts(
                if applied {
                    &["001_bio", "002_posts"]
                } else {
                    &[]
                },
                if applied { "fp2" } else { "fp1" },
                snap,
                true,
            );
            f.down = down();
            let got = decide(policy, &f);
            assert_eq!(
                got.name(),
                want,
                "{policy:?} applied={applied} {:?}: {got:?}",
                f.down
            );
            assert!(
                got.reason().contains(phrase),
                "{policy:?} {:?}: {got:?}",
                f.down
            );
        }
        // Down scripts are not trusted after a half-applied migration or without the
        // pre-deploy fingerprint to check against, nor for another release's state.
        let mut f = facts(&["001_bio"], "fp2", false, true);
        f.down = ready();
        f.ledger_diff.failed = vec!["003_broken".into()];
        let got = decide(Auto, &f);
        assert_eq!(got.name(), "restore", "{got:?}");
        assert!(got.reason().contains("failed half-way"), "{got:?}");
        let mut f = facts(&["001_bio"], "fp2", false, true);
        f.down = ready();
        f.fingerprint_before = Option::None;
        assert_eq!(decide(Auto, &f).name(), "restore");
        let mut f = facts(&["001_bio"], "fp2", false, true);
        f.down = ready();
        f.target = "c0".into();
        assert_eq!(decide(Auto, &f).name(), "impossible");
    }

    /// The whole table: policy x (migration applied, schema changed) x (snapshot, backup).
    #[test]
    fn decision_table() {
        use DbPolicy::*;
        // (policy, migrations applied, fingerprint now, snapshot?, backup?, expected)
        type Case<'a> = (DbPolicy, &'a [&'a str], &'a str, bool, bool, &'a str);
        let cases: &[Case] = &[
            // auto: nothing changed -> none, whatever exists
            (Auto, &[], "fp1", true, true, "none"),
            (Auto, &[], "fp1", false, false, "none"),
            // auto: a migration applied -> snapshot first, then backup, else impossible
            (Auto, &["20260101_add"], "fp2", true, true, "swap_snapshot"),
            (Auto, &["20260101_add"], "fp2", false, true, "restore"),
            (Auto, &["20260101_add"], "fp2", false, false, "impossible"),
            // auto: schema changed without a ledger row (a hand-run ALTER)
            (Auto, &[], "fp2", false, true, "restore"),
            // a ledger row with an unchanged fingerprint still counts (data migration)
            (Auto, &["20260101_data"], "fp1", false, true, "restore"),
            // restore forced, even when nothing changed
            (Restore, &[], "fp1", false, true, "restore"),
            (Restore, &[], "fp1", true, true, "swap_snapshot"),
            (Restore, &[], "fp1", false, false, "impossible"),
            // none: never
            (None, &["20260101_add"], "fp2", true, true, "none"),
        ];
        for (policy, applied, fp, snap, backup, want) in cases {
            let got = decide(*policy, &facts(applied, fp, *snap, *backup));
            assert_eq!(
                got.name(),
                *want,
                "{policy:?} {applied:?} {fp} snap={snap} backup={backup}: {got:?}"
            );
        }
    }

    #[test]
    fn reasons_say_why_and_count_writes() {
        let none = decide(DbPolicy::Auto, &facts(&[], "fp1", false, true));
        assert!(none.reason().contains("applied no migration"), "{none:?}");
        assert!(none.reason().contains("42 rows were written"), "{none:?}");
        let restore = decide(DbPolicy::Auto, &facts(&["m1"], "fp2", false, true));
        assert!(
            restore.reason().contains("applied migration(s) m1"),
            "{restore:?}"
        );
        assert!(
            restore.reason().contains("stay in the failed database"),
            "{restore:?}"
        );
        let mut elsewhere = facts(&["m1"], "fp2", true, true);
        elsewhere.target = "c0".into();
        let d = decide(DbPolicy::Auto, &elsewhere);
        assert_eq!(
            d.name(),
            "impossible",
            "a backup of another release is never restored: {d:?}"
        );
        elsewhere.ledger_diff = LedgerDiff::default();
        elsewhere.fingerprint_now = Some("fp1".into());
        assert_eq!(decide(DbPolicy::Auto, &elsewhere).name(), "none");
        // Before "leave it alone": a target that lacks a migration the database holds
        // never gets it, whichever rung would have been taken.
        elsewhere.target_lacks = Some(vec!["002_m".into()]);
        for policy in [DbPolicy::Auto, DbPolicy::Down, DbPolicy::Restore] {
            let d = decide(policy, &elsewhere);
            assert_eq!(d.name(), "impossible", "{policy:?}: {d:?}");
            assert!(d.reason().contains("002_m"), "{d:?}");
        }
        assert_eq!(decide(DbPolicy::None, &elsewhere).name(), "none");
        // A target known to fit another release's state: its backup may be restored.
        elsewhere.target_lacks = Some(Vec::new());
        elsewhere.ledger_diff.applied = vec!["003_n".into()];
        assert_eq!(decide(DbPolicy::Auto, &elsewhere).name(), "swap_snapshot");
        let unknown = DbFacts {
            fingerprint_before: Option::None,
            backup: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(
            decide(DbPolicy::Auto, &unknown).name(),
            "restore",
            "unknown schema errs toward restoring"
        );
    }
}
