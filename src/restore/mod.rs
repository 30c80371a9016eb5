//! Restore that cannot lose data: the backup is checked before anything is touched,
//! restored into a new database, checked again, and only then swapped in by renaming
//! (one transaction); the replaced database is kept. Any failure leaves the live
//! database as it was and drops the half-restored one. Also restore tests.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use jiff::Timestamp;
use serde::Serialize;

use crate::backup::catalog::Catalog;
use crate::backup::manifest::{Manifest, Verification};
use crate::backup::verify::{CheckError, FileCheck};
use crate::config::{DbMode, Loaded};
use crate::db::ops;
use crate::db::{Database, Tool};
use crate::process::Cmd;

mod load;
mod prepare;
mod restore_test;
mod stream;

/// Session settings that make a restore faster and are safe for a database that is not
/// live yet (a crash mid-restore discards it anyway).
const RESTORE_PGOPTIONS: &str = "-c maintenance_work_mem=256MB -c synchronous_commit=off";

/// An error in how restore was called (exit 2).
pub use crate::UsageError;
use load::*;
use prepare::*;
pub use restore_test::*;

/// How a restore was asked for.
pub struct Request<'a> {
    pub id: &'a str,
    /// Restore the copy held by this remote (`--from NAME`).
    pub from: Option<&'a str>,
    /// Who confirms before the live database is replaced (`--yes`, or the terminal).
    pub confirm: &'a dyn crate::prompt::Confirm,
    pub target_db: Option<&'a str>,
    pub in_place: bool,
    /// Where the gate's rounds after the restore are said.
    pub progress: crate::printer::Progress<'a>,
}

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub backup: String,
    /// "swap", "target" (into a new database, live untouched) or "in_place".
    pub method: String,
    pub database: String,
    /// The database the backup was restored into (before the swap).
    pub restored_into: String,
    /// The replaced live database, kept (swap only).
    pub kept_as: Option<String>,
    /// Rows per restored table.
    pub tables: BTreeMap<String, u64>,
    /// How long the live database was unavailable (swap only).
    pub swap_ms: Option<u64>,
    pub restore_ms: u64,
    pub total_ms: u64,
    pub app_stopped: bool,
    pub leftovers_dropped: Vec<String>,
    pub replaced_dropped: Vec<String>,
    /// Set for in-place restores: objects created after the backup remain.
    pub warning: Option<String>,
    /// In-place restores first back up the current state: that backup's id.
    pub safety_backup: Option<String>,
    /// Replaced databases beyond `database.keep_replaced_databases` kept back, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaced_kept: Vec<crate::db::ops::KeptBack>,
    /// Rows inserted, updated or deleted in the live database since the backup (table
    /// statistics), reported before the confirmation; None when unknown.
    pub writes_since_backup: Option<u64>,
    /// The health gate run after the app was started again (None: not run, see `health`).
    pub gate: Option<crate::health::Verdict>,
    /// Whether the app is proven healthy after the restore: None when no gate is
    /// configured (or the live database was not touched); false is exit 12.
    pub app_healthy: Option<bool>,
    /// What became of the app's health: why the gate was not run, or what to do when it
    /// failed.
    pub health: Option<String>,
}

/// Restores backup `req.id` (see the module docs). A restore takes the deploy lock
/// (one deploy, rollback or restore at a time), and one that replaces the live database
/// is refused while a deploy journal is unfinished (`stablehand recover` first). The
/// writes made since the backup are reported before the confirmation; after the app is
/// started again the health gate runs (`Restored::gate`; exit 12 when it fails).
pub fn restore(loaded: &Loaded, req: &Request) -> anyhow::Result<Restored> {
    let started = Instant::now();
    let method = match (req.target_db, req.in_place) {
        (Some(_), true) => {
            return Err(UsageError("--target-db and --in-place exclude each other".into()).into())
        }
        (Some(_), false) => "target",
        (None, true) => "in_place",
        (None, false) => "swap",
    };
    let _app_lock = restore_lock(loaded, method)?;
    let catalog = Catalog::new(loaded.backup_dir());
    // One restore, restore test or backup at a time: leftover cleanup and kept-database
    // retention must never race another run's working database.
    fs_err::create_dir_all(&catalog.dir)?;
    let lock = catalog.lock()?;
    // A remote copy is downloaded into a scratch catalog first (and checked there).
    let fetched = match req.from {
        Some(name) => {
            let remote = crate::remote::Remote::named(loaded, name)?;
            let copy = remote.find(loaded, req.id)?;
            Some(crate::remote::fetch(loaded, &remote, copy)?)
        }
        None => None,
    };
    let (source_catalog, manifest) = match &fetched {
        Some(f) => (&f.catalog, f.manifest.clone()),
        None => (&catalog, catalog.find(req.id)?),
    };
    let live = Database::from_config(loaded)?
        .with_application_name(&format!("stablehand-restore-{}", std::process::id()));

    if manifest.database.name != live.name && req.target_db.is_none() {
        bail!(
            "backup {} is of database {:?}, not {:?}; nothing was changed. To restore it anyway, restore into a new database with --target-db NAME",
            manifest.id,
            manifest.database.name,
            live.name
        );
    }
    // Refused before anything is touched: size, SHA-256, decompression, contents.
    let prepared = prepare(
        loaded,
        &live,
        source_catalog,
        &manifest,
        method != "in_place",
    )?;
    let check = &prepared.check;
    // The runtime is read before anything is touched: a Compose problem stops here.
    let app = match method {
        "target" => None,
        _ => Some(App::new(loaded)?),
    };
    let writes_since_backup = match (&manifest.write_counters, method) {
        (Some(before), "swap" | "in_place") => match live.write_counters() {
            Ok(now) => Some(now.since(before)),
            Err(e) => {
                tracing::warn!("could not count the writes made since the backup: {e:#}");
                None
            }
        },
        _ => None,
    };
    if method != "target" {
        let writes = writes_line(writes_since_backup, method, &live.name);
        req.confirm
            .confirm(&question(&live.name, &manifest, method, writes))?;
    }

    let leftovers_dropped = live.drop_leftovers().unwrap_or_default();
    let mut report = Restored {
        backup: manifest.id.clone(),
        method: method.into(),
        database: live.name.clone(),
        restored_into: String::new(),
        kept_as: None,
        tables: BTreeMap::new(),
        swap_ms: None,
        restore_ms: 0,
        total_ms: 0,
        app_stopped: false,
        leftovers_dropped,
        replaced_dropped: Vec::new(),
        replaced_kept: Vec::new(),
        warning: None,
        safety_backup: None,
        writes_since_backup,
        gate: None,
        app_healthy: None,
        health: None,
    };

    match method {
        "target" => {
            let name = req.target_db.expect("target method has a name");
            if live.database_exists(name)? {
                bail!("database {name:?} already exists; --target-db needs a new name");
            }
            let t = Instant::now();
            report.tables = restore_into_new(loaded, &live, name, &prepared)?;
            report.restore_ms = t.elapsed().as_millis() as u64;
            report.restored_into = name.to_string();
        }
        "in_place" => {
            // Invariant 1: overwriting the live database needs a verified backup of its
            // current state first.
            reproducible(&live, &prepared)?;
            let safety = crate::backup::create_backup_locked(loaded, &catalog, &lock, "pre-restore", None, false)
                .context("an in-place restore first backs up the current state, and that backup failed; nothing was changed")?;
            report.safety_backup = Some(safety.backup.id.clone());
            let app = app.as_ref().expect("loaded for in-place");
            let stop = app.stop();
            report.app_stopped = stop.as_ref().copied().unwrap_or(true);
            let result = stop.and_then(|_| {
                let t = Instant::now();
                match &prepared.source {
                    Source::Stream(path) => stream_into(pg_restore_cmd(loaded, &live, true), path)?,
                    Source::Checking { .. } => {
                        unreachable!("an in-place restore checks the backup whole first")
                    }
                }
                report.restore_ms = t.elapsed().as_millis() as u64;
                check_tables(&live, check, None)
            });
            let started_again = app.start_if(report.app_stopped);
            report.tables = result.with_context(|| {
                format!(
                    "the in-place restore failed; pg_restore ran in one transaction, but check the database; the state before it is in backup {}",
                    safety.backup.id
                )
            })?;
            started_again.map_err(|e| {
                not_started(
                    e,
                    &format!(
                        "the backup was restored in place into {}, but the app did not start again",
                        live.name
                    ),
                )
            })?;
            report.restored_into = live.name.clone();
            report.warning = Some(
                "restored in place: objects created after the backup (new tables, columns, indexes) remain".into(),
            );
        }
        _ => {
            let restore_name = live.fresh_side_name(ops::RESTORE_SUFFIX)?;
            let keep_as = live.fresh_side_name(ops::PRE_RESTORE_SUFFIX)?;
            let t = Instant::now();
            report.tables = restore_into_new(loaded, &live, &restore_name, &prepared)?;
            report.restore_ms = t.elapsed().as_millis() as u64;
            report.restored_into = restore_name.clone();

            let app = app.as_ref().expect("loaded for a swap");
            let swapped = app.stop().and_then(|stopped| {
                report.app_stopped = stopped;
                live.swap_in(&restore_name, &keep_as)
            });
            // A stop that was attempted (even one that failed half-way) is followed by
            // a start, whatever happens next.
            report.app_stopped |= app.stops_anything();
            match swapped {
                Ok(took) => {
                    report.swap_ms = Some(took.as_millis() as u64);
                    report.kept_as = Some(keep_as.clone());
                    // The backup directory is still locked: no backup was made since.
                    crate::deploy::kept::remember_newest(loaded, &keep_as, &live.name);
                    app.start_if(report.app_stopped).map_err(|e| {
                        not_started(e, &format!(
                            "the database was restored and swapped in (the previous one is kept as {keep_as}), but the app did not start again"
                        ))
                    })?;
                    match crate::deploy::kept::prune_replaced(loaded, &live) {
                        Ok(pruned) => {
                            report.replaced_dropped = pruned.dropped;
                            report.replaced_kept = pruned.kept;
                        }
                        Err(e) => tracing::warn!("the replaced databases were not pruned: {e:#}"),
                    }
                }
                Err(e) => {
                    // The rename may have committed even though psql failed (killed,
                    // connection lost): then the swap happened and must be reported so.
                    let committed = live.database_exists(&keep_as).unwrap_or(false)
                        && !live.database_exists(&restore_name).unwrap_or(true);
                    if committed {
                        report.kept_as = Some(keep_as.clone());
                        app.start_if(true).map_err(|start| not_started(start, &format!(
                            "the database was restored and swapped in (the previous one is kept as {keep_as}), but the app did not start again"
                        )))?;
                        tracing::warn!("the swap reported an error but had committed: {e:#}");
                    } else {
                        let _ = live.drop_side_database(&restore_name);
                        let restarted = app.start_if(true);
                        let mut err = e.context(format!(
                            "the live database {} was not changed; the restored copy was dropped",
                            live.name
                        ));
                        if let Err(start) = restarted {
                            err =
                                err.context(format!("and the app did not start again: {start:#}"));
                        }
                        return Err(err);
                    }
                }
            }
        }
    }
    if method != "target" {
        let (gate, health) = gate_after_restore(loaded, req.progress);
        report.app_healthy = match (&gate, &health) {
            (Some(v), _) => Some(v.passed),
            (None, Some(_)) if crate::health::ensure_something_to_check(loaded).is_ok() => {
                Some(false)
            }
            _ => None,
        };
        report.gate = gate;
        report.health = health;
    }
    report.total_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// A backup ready to restore: checked whole, streamed from the stored file; or, when
/// the tools run locally, checked in the pass that restores it (`stream`).
struct Prepared {
    check: FileCheck,
    source: Source,
    /// The decrypted copy of an encrypted backup, removed with this.
    _plain: Option<crate::remote::Scratch>,
}

enum Source {
    /// The stored file, already checked, decompressed into pg_restore's stdin.
    Stream(PathBuf),
    /// The stored file, checked while its schema and data are loaded (into a new
    /// database: dropped if the check fails), then the post-data entries restored in
    /// parallel from `front`, its header and table of contents.
    Checking {
        path: PathBuf,
        id: String,
        size_bytes: u64,
        sha256: String,
        front: TempDump,
    },
}

/// The operator types the database name, after `writes` (what the restore leaves out,
/// said even with --yes). No terminal and no --yes: refused.
fn question(db: &str, m: &Manifest, method: &str, writes: String) -> crate::prompt::Question {
    let what = if method == "in_place" {
        "overwrites the live database in place"
    } else {
        "replaces the live database (the current one is kept, renamed)"
    };
    crate::prompt::Question {
        prompt: format!(
            "Restoring backup {} (created {}, commit {}) {what}: {db}.\n{writes}\nType the database name to continue: ",
            m.id,
            m.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            m.git_commit.as_deref().map(|c| crate::git::abbrev(c, 7)).unwrap_or("-"),
        ),
        answer: db.to_string(),
        note: Some(writes),
        no_terminal: "restore replaces the live database and needs confirmation, but there is no terminal to ask on; pass --yes to confirm".into(),
    }
}

/// The header and table of contents of a backup, decompressed (0600, hidden, removed
/// when dropped).
struct TempDump(PathBuf);

/// Removes decompressed copies left by restores whose process is gone. (Not named
/// `.partial`: a backup running meanwhile must not remove a copy in use.)
fn remove_stale_temp_dumps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".restore-")
            .filter(|r| r.ends_with(".dump.tmp"))
            .and_then(|r| r.split('.').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl Drop for TempDump {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a rollback's restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RolledBackDatabase {
    pub backup: String,
    pub restored_into: String,
    /// The failed database, kept under `<db>__failed_<stamp>`.
    pub kept_as: String,
    pub tables: usize,
    pub restore_ms: u64,
    pub swap_ms: u64,
}

/// The database part of a rollback: restores backup `id` into a new database, checks
/// it, and swaps it in, keeping the failed database as `<db>__failed_<stamp>`. The
/// caller has stopped the app. On any failure the live database is unchanged.
pub fn restore_for_rollback(loaded: &Loaded, id: &str) -> anyhow::Result<RolledBackDatabase> {
    let catalog = Catalog::new(loaded.backup_dir());
    let _lock = catalog.lock()?;
    let manifest = catalog.find(id)?;
    let live = Database::from_config(loaded)?
        .with_application_name(&format!("stablehand-rollback-{}", std::process::id()));
    let prepared = prepare(loaded, &live, &catalog, &manifest, true)?;
    let _ = live.drop_leftovers();
    let restore_name = live.fresh_side_name(ops::RESTORE_SUFFIX)?;
    let keep_as = live.fresh_side_name(ops::FAILED_SUFFIX)?;
    let t = Instant::now();
    let tables = restore_into_new(loaded, &live, &restore_name, &prepared)?;
    let restore_ms = t.elapsed().as_millis() as u64;
    let swapped = live.swap_in(&restore_name, &keep_as);
    let took = match swapped {
        Ok(took) => took,
        Err(e) => {
            let committed = live.database_exists(&keep_as).unwrap_or(false)
                && !live.database_exists(&restore_name).unwrap_or(true);
            if !committed {
                let _ = live.drop_side_database(&restore_name);
                return Err(e.context(format!(
                    "the live database {} was not changed; the restored copy was dropped",
                    live.name
                )));
            }
            tracing::warn!("the swap reported an error but had committed: {e:#}");
            std::time::Duration::ZERO
        }
    };
    Ok(RolledBackDatabase {
        backup: manifest.id,
        restored_into: restore_name,
        kept_as: keep_as,
        tables: tables.len(),
        restore_ms,
        swap_ms: took.as_millis() as u64,
    })
}

/// The app around a swap: stopped before, started after (`[runtime]`).
struct App(crate::runtime::Runtime);

impl App {
    fn new(loaded: &Loaded) -> anyhow::Result<App> {
        crate::runtime::Runtime::load(loaded).map(App)
    }

    /// Whether stablehand stops anything (runtime.kind, and services for Compose).
    fn stops_anything(&self) -> bool {
        match &self.0 {
            crate::runtime::Runtime::Compose(app) => !app.services.is_empty(),
            crate::runtime::Runtime::Command(_) => true,
            crate::runtime::Runtime::None => false,
        }
    }

    /// Stops the app; true when it did.
    fn stop(&self) -> anyhow::Result<bool> {
        let stopped = self.0.stop_app()?;
        if !stopped {
            tracing::warn!("no app to stop ([runtime] has no services or commands): the app keeps running; its database sessions are ended for the swap");
        }
        Ok(stopped)
    }

    /// Starts the app when it was (or may have been) stopped by `stop`.
    fn start_if(&self, stopped: bool) -> anyhow::Result<()> {
        if stopped && self.stops_anything() {
            self.0.start_app()?;
        }
        Ok(())
    }
}

/// The app did not start again after a restore replaced the live database: manual
/// intervention (exit 12).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AppNotRestarted(pub String);

fn not_started(e: anyhow::Error, what: &str) -> anyhow::Error {
    AppNotRestarted(format!(
        "{what}: {e:#}; MANUAL INTERVENTION REQUIRED: start it by hand, check its logs, then `stablehand health`"
    ))
    .into()
}

/// Takes the deploy lock for a restore (a held lock is a refusal, exit 10) and, for a
/// restore that replaces the live database, refuses while a deploy journal is
/// unfinished: the database and the code must not change under a deploy or recover.
fn restore_lock(loaded: &Loaded, method: &str) -> anyhow::Result<crate::lock::AppLock> {
    let state_dir = loaded.state_dir();
    let lock =
        crate::lock::AppLock::acquire(&state_dir, &format!("restore ({method})")).map_err(|e| {
            match e.downcast::<crate::lock::Held>() {
                Ok(held) => anyhow::Error::new(crate::Refused(format!(
                    "the restore was refused; nothing was changed: {held}"
                ))),
                Err(e) => e,
            }
        })?;
    if method != "target" {
        if let Some(j) = crate::journal::Journal::load(&state_dir)? {
            return Err(crate::Refused(format!(
                "the restore was refused; nothing was changed: {}",
                crate::journal::unfinished_message(&j)
            ))
            .into());
        }
    }
    Ok(lock)
}

/// The confirmation's line about the writes a restore leaves out of the live database.
fn writes_line(writes: Option<u64>, method: &str, db: &str) -> String {
    let kept = if method == "in_place" {
        "they are overwritten (the pre-restore backup holds them)"
    } else {
        "they will not be in the restored database (the current one is kept, renamed)"
    };
    match writes {
        Some(0) => format!("No writes to {db} since the backup (table statistics)."),
        Some(n) => format!(
            "WARNING: {n} row(s) were inserted, updated or deleted in {db} since the backup (table statistics): {kept}."
        ),
        None => format!(
            "The writes to {db} since the backup are not known (the backup records no write counters): whatever was written since is not in it."
        ),
    }
}

/// The health gate after a restore started the app again. Without checks in
/// `[health]` it is not run, and the second value says so; when it fails, the second
/// value says what to do.
fn gate_after_restore(
    loaded: &Loaded,
    progress: crate::printer::Progress,
) -> (Option<crate::health::Verdict>, Option<String>) {
    if crate::health::ensure_something_to_check(loaded).is_err() {
        return (
            None,
            Some("no health checks are configured ([[health.http]] or health.containers): the app's health was not checked".into()),
        );
    }
    match crate::health::run_gate(loaded, |round, decision| {
        progress(&crate::health::round_line(round, decision))
    }) {
        Ok(v) if v.passed => (Some(v), None),
        Ok(v) => {
            let why = v.reason.clone().unwrap_or_else(|| "failed".into());
            (
                Some(v),
                Some(format!(
                    "the app did not pass the health gate after the restore ({why}); MANUAL INTERVENTION REQUIRED: the restored database is live; check the app's logs and `stablehand health`; to go back, restore another backup (`stablehand restore ID`), or put the kept database back by hand"
                )),
            )
        }
        Err(e) => (
            None,
            Some(format!(
                "the health gate could not run after the restore ({e:#}); check the app by hand (`stablehand health`)"
            )),
        ),
    }
}
