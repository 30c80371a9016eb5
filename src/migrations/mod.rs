//! Prisma down migrations: the schema goes back with the `down.sql` stored beside each
//! `migration.sql` (Prisma's documented way, generated with `prisma migrate diff`), so
//! rows written since the backup survive. Guarded three ways: every migration to undo
//! must have a script; no script may destroy rows or values written since the
//! reference backup; and the schema afterwards must have the reference's fingerprint,
//! checked inside the same transaction, so a wrong script changes nothing. The ledger
//! rows get `rolled_back_at` under Prisma's advisory lock, as Prisma's engine does
//! (`prisma migrate resolve --rolled-back` refuses migrations that succeeded, P3012), so
//! a later deploy sees those migrations as unapplied and applies them again.

pub mod compat;
pub mod sql;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::db::inspect::{fingerprint_expr, Ledger};
use crate::db::ops::literal;
use crate::db::Database;

/// The key of Prisma Migrate's advisory lock (`pg_advisory_lock(72707369)`).
pub const PRISMA_ADVISORY_LOCK: i64 = 72707369;

/// How long the down scripts may run; they run with the app stopped.
const DOWN_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One migration's down script.
#[derive(Debug, Clone)]
pub struct DownScript {
    pub migration: String,
    pub sql: String,
    pub facts: sql::ScriptFacts,
}

/// The down scripts to run, newest migration first.
#[derive(Debug, Clone)]
pub struct DownPlan {
    pub scripts: Vec<DownScript>,
    /// All of them in one transaction (no statement forbids it).
    pub transactional: bool,
}

impl DownPlan {
    pub fn migrations(&self) -> Vec<String> {
        self.scripts.iter().map(|s| s.migration.clone()).collect()
    }
}

/// Where a migration's down script lives, relative to the app directory.
pub fn down_path(migrations_dir: &Path, migration: &str) -> std::path::PathBuf {
    migrations_dir.join(migration).join("down.sql")
}

/// The plan for undoing `migrations` (newest first), reading each down script with
/// `read` (None: no such file). The inner `Err` says why there is no down path.
pub fn plan(
    migrations: &[String],
    migrations_dir: &Path,
    read: impl Fn(&Path) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Result<DownPlan, String>> {
    let mut scripts = Vec::new();
    for m in migrations {
        let path = down_path(migrations_dir, m);
        let Some(text) = read(&path).with_context(|| format!("reading {}", path.display()))? else {
            return Ok(Err(format!(
                "migration {m} has no down script ({} is missing)",
                path.display()
            )));
        };
        let facts = sql::analyse(&text);
        if let Some(why) = facts.refused.first() {
            return Ok(Err(format!("{}: {why}", path.display())));
        }
        scripts.push(DownScript {
            migration: m.clone(),
            sql: text,
            facts,
        });
    }
    if scripts.is_empty() {
        return Ok(Err("there is no migration to undo".into()));
    }
    let transactional = scripts.iter().all(|s| s.facts.non_transactional.is_empty());
    Ok(Ok(DownPlan {
        scripts,
        transactional,
    }))
}

/// The applied migrations of `ledger` from `after` on (exclusive), newest first; all
/// applied ones when `after` is None. Order: when they were started, then by name.
pub fn applied_newest_first(ledger: &Ledger, names: Option<&[String]>) -> Vec<String> {
    let mut rows: Vec<_> = ledger
        .rows
        .iter()
        .filter(|r| r.is_applied())
        .filter(|r| names.is_none_or(|n| n.contains(&r.migration_name)))
        .collect();
    rows.sort_by(|a, b| {
        (&a.started_at, &a.migration_name).cmp(&(&b.started_at, &b.migration_name))
    });
    rows.into_iter()
        .rev()
        .map(|r| r.migration_name.clone())
        .collect()
}

/// Data a down script would destroy that was written since the reference point.
#[derive(Debug, Clone, Serialize)]
pub struct AtRisk {
    pub migration: String,
    #[serde(flatten)]
    pub destroys: sql::Destroys,
    pub rows: u64,
}

/// Every object the plan drops or empties that holds rows (or, for a column, non-null
/// values) written by transactions at or after `horizon` (all of them when unknown).
pub fn data_at_risk(
    db: &Database,
    plan: &DownPlan,
    horizon: Option<u64>,
) -> anyhow::Result<Vec<AtRisk>> {
    let mut found = Vec::new();
    for script in &plan.scripts {
        for d in &script.facts.destroys {
            let (table, column) = match d {
                sql::Destroys::Rows { table } => (table, None),
                sql::Destroys::Column { table, column } => (table, Some(column)),
            };
            let exists = match column {
                None => format!("select to_regclass({}) is not null", literal(&table.sql)),
                Some(c) => format!(
                    "select exists (select 1 from pg_attribute where attrelid = to_regclass({}) \
                     and attname = {} and attnum > 0 and not attisdropped)",
                    literal(&table.sql),
                    literal(&c.display)
                ),
            };
            // An object that is not there makes the script fail, which is caught later.
            if db.query(&exists)? != "t" {
                continue;
            }
            let rows = db
                .rows_written_since(&table.sql, column.map(|c| c.sql.as_str()), horizon)
                .with_context(|| format!("counting the rows of {d}"))?;
            if rows > 0 {
                found.push(AtRisk {
                    migration: script.migration.clone(),
                    destroys: d.clone(),
                    rows,
                });
            }
        }
    }
    Ok(found)
}

/// Why data at risk refuses the down path.
pub fn at_risk_reason(at_risk: &[AtRisk], since: &str) -> String {
    let what = at_risk
        .iter()
        .map(|a| {
            let unit = match a.destroys {
                sql::Destroys::Rows { .. } => "row",
                sql::Destroys::Column { .. } => "value",
            };
            format!(
                "{} ({} {unit}{} written since {since}, by down.sql of {})",
                a.destroys,
                a.rows,
                if a.rows == 1 { "" } else { "s" },
                a.migration
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("the down scripts would destroy data: {what}")
}

/// What a down run did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub migrations: Vec<String>,
    pub transactional: bool,
    /// The fingerprint was compared with the reference's (always, when one was given).
    pub fingerprint_checked: bool,
    pub took_ms: u64,
}

/// Runs the plan: the down scripts newest first, then `rolled_back_at` on their ledger
/// rows under Prisma's advisory lock. In one transaction when the plan allows it, with
/// the fingerprint compared to `expected` before COMMIT: any error or mismatch leaves
/// the database exactly as it was. Otherwise script by script, then compared: an error
/// here can leave it half rolled back (the caller restores).
pub fn apply(db: &Database, plan: &DownPlan, expected: Option<&str>) -> anyhow::Result<Applied> {
    let started = Instant::now();
    let names = plan
        .migrations()
        .iter()
        .map(|m| literal(m))
        .collect::<Vec<_>>()
        .join(", ");
    let ledger = format!(
        "update {} set rolled_back_at = now() where rolled_back_at is null and finished_at is not null and migration_name in ({names});",
        db.ledger_table()
    );
    let lock = format!(
        "set local lock_timeout = '30s';\nselect pg_advisory_xact_lock({PRISMA_ADVISORY_LOCK});\n"
    );
    let mut script = String::from("\\set ON_ERROR_STOP on\n");
    let scripts = plan
        .scripts
        .iter()
        .map(|s| {
            format!(
                "-- stablehand: down.sql of {}\n{}\n;\n",
                s.migration.replace('\n', " "),
                s.sql
            )
        })
        .collect::<String>();
    let check = match expected {
        Some(fp) => format!(
            "select {} as stablehand_fp \\gset\nselect :'stablehand_fp' = {} as stablehand_ok \\gset\n",
            fingerprint_expr(),
            literal(fp)
        ),
        None => "select true as stablehand_ok \\gset\n".to_string(),
    };
    if plan.transactional {
        script.push_str("begin;\n");
        script.push_str(&lock);
        script.push_str(&scripts);
        script.push_str(&ledger);
        script.push('\n');
        script.push_str(&check);
        script.push_str("\\if :stablehand_ok\ncommit;\n\\echo stablehand:committed\n\\else\nrollback;\n\\echo stablehand:mismatch :stablehand_fp\n\\endif\n");
    } else {
        script.push_str(&scripts);
        script.push_str("begin;\n");
        script.push_str(&lock);
        script.push_str(&ledger);
        script.push_str("\ncommit;\n\\echo stablehand:committed\n");
    }
    let out = db.run_script(&script, DOWN_TIMEOUT).map_err(|e| {
        let changed = if plan.transactional {
            "nothing was changed (they ran in one transaction, rolled back)"
        } else {
            "the database may be half rolled back (a statement in them cannot run in a transaction)"
        };
        anyhow::anyhow!("the down scripts failed: {e:#}; {changed}")
    })?;
    if let Some(got) = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("stablehand:mismatch"))
    {
        bail!(
            "after the down scripts the schema fingerprint is {}, not the expected {}: the scripts do not return the schema to where it was, so nothing was changed (the transaction was rolled back)",
            crate::git::abbrev(got.trim(), 12),
            crate::git::abbrev(expected.unwrap_or_default(), 12)
        );
    }
    if !out.lines().any(|l| l.trim() == "stablehand:committed") {
        bail!("the down scripts ended without committing (psql printed {out:?})");
    }
    let mut checked = plan.transactional && expected.is_some();
    if !plan.transactional {
        if let Some(fp) = expected {
            let now = db.schema_fingerprint()?;
            if now != fp {
                bail!(
                    "after the down scripts the schema fingerprint is {}, not the expected {}: the scripts ran (outside a transaction) but do not return the schema to where it was",
                    crate::git::abbrev(&now, 12),
                    crate::git::abbrev(fp, 12)
                );
            }
            checked = true;
        }
    }
    Ok(Applied {
        migrations: plan.migrations(),
        transactional: plan.transactional,
        fingerprint_checked: checked,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// `stablehand migrate down`: what was asked.
pub struct DownRequest<'a> {
    /// Undo every migration applied after this one; None: the newest one only.
    pub to: Option<&'a str>,
    pub dry_run: bool,
    /// Who confirms before anything changes (`--yes`, or the terminal).
    pub confirm: &'a dyn crate::prompt::Confirm,
}

/// What `migrate down` did, or would do.
#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    pub database: String,
    /// The migrations undone (or to undo), newest first.
    pub migrations: Vec<String>,
    pub statements: usize,
    pub transactional: bool,
    /// What the scripts drop or empty (none of it holds data written since the reference).
    pub destroys: Vec<String>,
    /// The newest backup whose ledger matches the schema after the down: its fingerprint
    /// is what the result is checked against, its horizon what "new data" means.
    pub reference_backup: Option<String>,
    pub dry_run: bool,
    pub applied: Option<Applied>,
}

impl DownReport {
    /// `migrate down` changes the schema under the running app: "down" confirms.
    fn question(&self) -> crate::prompt::Question {
        crate::prompt::Question {
            prompt: format!(
                "Undo {} in database {} with their down.sql? Type \"down\" to confirm: ",
                self.migrations.join(", "),
                self.database
            ),
            answer: "down".into(),
            note: None,
            no_terminal: "migrate down changes the database schema; pass --yes to confirm (no terminal to ask on)".into(),
        }
    }
}

/// An error that refuses `migrate down` before anything changed (exit 10).
pub fn refuse(message: String) -> anyhow::Error {
    crate::Refused(message).into()
}

/// `stablehand migrate down [--to NAME] [--dry-run]`: undoes applied migrations with the
/// down scripts in the checked-out tree, under the app lock, with the same guards as a
/// rollback (scripts for all, no new data destroyed, the fingerprint of the newest
/// backup taken at that schema).
pub fn down_by_hand(
    loaded: &crate::config::Loaded,
    req: &DownRequest,
) -> anyhow::Result<DownReport> {
    let state_dir = loaded.state_dir();
    let _lock = match crate::lock::AppLock::acquire(&state_dir, "migrate down") {
        Ok(lock) => lock,
        Err(e) => return Err(refuse(format!("{e:#}"))),
    };
    if let Some(j) = crate::journal::Journal::load(&state_dir)? {
        return Err(refuse(crate::journal::unfinished_message(&j)));
    }
    let config = &loaded.config.database;
    if config.migrations != "prisma" {
        return Err(crate::UsageError(
            "migrate down works with Prisma migrations: set database.migrations = \"prisma\""
                .into(),
        )
        .into());
    }
    let db = Database::from_config(loaded)?;
    let ledger = db.migration_ledger()?;
    let applied = applied_newest_first(&ledger, None);
    let undo: Vec<String> = match req.to {
        None => applied.iter().take(1).cloned().collect(),
        Some(name) => match applied.iter().position(|m| m == name) {
            Some(pos) => applied[..pos].to_vec(),
            None => {
                return Err(crate::UsageError(format!(
                    "{name:?} is not an applied migration in {}; applied, newest first: {}",
                    db.ledger_table(),
                    if applied.is_empty() {
                        "none".to_string()
                    } else {
                        applied
                            .iter()
                            .take(10)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ))
                .into())
            }
        },
    };
    let mut report = DownReport {
        database: db.name.clone(),
        migrations: undo.clone(),
        statements: 0,
        transactional: true,
        destroys: Vec::new(),
        reference_backup: None,
        dry_run: req.dry_run,
        applied: None,
    };
    if undo.is_empty() {
        return Ok(report);
    }
    let app_dir = &loaded.app_dir;
    let plan = plan(&undo, &config.migrations_dir, |path| {
        let full = app_dir.join(path);
        match std::fs::read_to_string(&full) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    })?
    .map_err(|why| {
        refuse(format!(
            "{why}; nothing was changed. Write the down script (`prisma migrate diff --from-schema-datamodel <new> --to-schema-datamodel <old> --script`), or restore a backup taken before the migration (`stablehand restore ID`)"
        ))
    })?;
    report.statements = plan.scripts.iter().map(|s| s.facts.statements).sum();
    report.transactional = plan.transactional;
    report.destroys = plan
        .scripts
        .iter()
        .flat_map(|s| s.facts.destroys.iter().map(|d| d.to_string()))
        .collect();

    // The reference: the newest intact backup whose applied migrations are exactly the
    // ones left after the down.
    let remaining: std::collections::BTreeSet<&str> = applied
        .iter()
        .filter(|m| !undo.contains(m))
        .map(String::as_str)
        .collect();
    let reference = crate::backup::catalog::Catalog::new(loaded.backup_dir())
        .list()?
        .backups
        .into_iter()
        .filter(|m| m.verification_failure.is_none())
        .find(|m| {
            let rows: Option<Vec<crate::db::inspect::LedgerRow>> = m
                .prisma_migrations
                .clone()
                .and_then(|v| serde_json::from_value(v).ok());
            let ledger = Ledger {
                rows: rows.unwrap_or_default(),
            };
            let names: std::collections::BTreeSet<String> =
                applied_newest_first(&ledger, None).into_iter().collect();
            names
                .iter()
                .map(String::as_str)
                .eq(remaining.iter().copied())
        });
    report.reference_backup = reference.as_ref().map(|m| m.id.clone());
    let horizon = reference.as_ref().and_then(|m| m.xid_horizon);
    let at_risk = data_at_risk(&db, &plan, horizon)?;
    if !at_risk.is_empty() {
        let since = match &reference {
            Some(m) if horizon.is_some() => format!("backup {}", m.id),
            _ => "ever (no backup records the schema before these migrations, so every row counts as new)".into(),
        };
        return Err(refuse(format!(
            "{}; nothing was changed. Keep the migration, or restore a backup taken before it (`stablehand restore ID`)",
            at_risk_reason(&at_risk, &since)
        )));
    }
    if req.dry_run {
        return Ok(report);
    }
    req.confirm.confirm(&report.question())?;
    let expected = reference
        .as_ref()
        .and_then(|m| m.schema_fingerprint.clone());
    report.applied = Some(apply(&db, &plan, expected.as_deref())?);
    Ok(report)
}
