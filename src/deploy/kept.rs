//! The databases stablehand keeps beside the live one, and the rules they are kept
//! under (shown by `status` and `backup list --databases`):
//!
//! - replaced (`__pre_restore_`, `__failed_`, `__pre_snapshot_`): the newest
//!   `database.keep_replaced_databases` are kept; an older one is dropped after the next
//!   restore or rollback, unless someone is connected to it or it holds rows written
//!   after the last backup made before it was replaced (then it is kept, and why is
//!   recorded in `.stablehand/kept.json`). Never a forced drop.
//! - snapshot (`__snap_`): a deploy's snapshot is dropped when its gate passes, and when
//!   its rollback ends healthy without swapping it in; the snapshot of a deploy whose
//!   rollback needed manual intervention is kept (it holds the pre-deploy state) until
//!   the next successful deploy.
//! - leftover (`__restore_`, `__verify_`): an interrupted restore's; dropped by the next
//!   restore, restore test or deploy snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backup::catalog::Catalog;
use crate::backup::manifest::Manifest;
use crate::config::Loaded;
use crate::db::ops::{self, Covering, KeptBack, ReplacedPrune, SideDatabase};
use crate::db::Database;

use crate::journal::Journal;

fn record_path(state_dir: &Path) -> PathBuf {
    state_dir.join("kept.json")
}

/// What `.stablehand/kept.json` remembers: the replaced databases the last prune kept
/// back (and why), and for each replaced database the backup its state was taken from.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    #[serde(default)]
    kept_back: Vec<KeptBack>,
    /// Replaced database -> the backup recorded when it was replaced.
    #[serde(default)]
    covering: BTreeMap<String, String>,
}

fn read_record(state_dir: &Path) -> Record {
    std::fs::read_to_string(record_path(state_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn write_record(state_dir: &Path, record: &Record) {
    let written = fs_err::create_dir_all(state_dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            crate::files::write_file_atomic(
                &record_path(state_dir),
                &serde_json::to_vec_pretty(record)?,
            )
        });
    if let Err(e) = written {
        tracing::warn!("could not record the kept databases in .stablehand/kept.json: {e:#}");
    }
}

/// An intact, verified backup with a transaction horizon.
fn usable(catalog: &Catalog, m: &Manifest) -> bool {
    m.is_verified()
        && m.verification_failure.is_none()
        && m.xid_horizon.is_some()
        && std::fs::metadata(m.data_path(&catalog.dir)).is_ok_and(|md| md.len() == m.size_bytes)
}

/// Remembers that replaced database `kept` was live when backup `backup` was taken, so
/// pruning judges it against that backup (the caller knows no later backup was made of
/// it: it holds the backup directory's lock, or the backup is the deploy's own).
pub fn remember(loaded: &Loaded, kept: &str, backup: &str) {
    let state_dir = loaded.state_dir();
    let mut record = read_record(&state_dir);
    record.covering.insert(kept.to_string(), backup.to_string());
    write_record(&state_dir, &record);
}

/// `remember` with the newest usable backup of `database` in the backup directory.
pub fn remember_newest(loaded: &Loaded, kept: &str, database: &str) {
    let catalog = Catalog::new(loaded.backup_dir());
    let newest = catalog.list().ok().and_then(|l| {
        l.backups
            .into_iter()
            .find(|m| m.database.name == database && usable(&catalog, m))
    });
    if let Some(m) = newest {
        remember(loaded, kept, &m.id);
    }
}

/// The backup a replaced database is judged against: the one recorded when it was
/// replaced, else the newest usable backup of the live database made before the second
/// of its replacement (a backup within that second might already be of its successor).
fn covering(
    catalog: &Catalog,
    record: &Record,
    database: &str,
    kept: &str,
    replaced_at: jiff::Timestamp,
) -> Option<Covering> {
    let backups = catalog.list().ok()?.backups;
    let recorded = record
        .covering
        .get(kept)
        .and_then(|id| backups.iter().find(|m| &m.id == id && usable(catalog, m)));
    let m = recorded.or_else(|| {
        backups.iter().find(|m| {
            m.database.name == database && m.created_at < replaced_at && usable(catalog, m)
        })
    })?;
    Some(Covering {
        id: m.id.clone(),
        xid_horizon: m.xid_horizon?,
    })
}

/// Prunes the replaced databases beyond `database.keep_replaced_databases` (see the
/// module docs) and records the ones kept back.
pub fn prune_replaced(loaded: &Loaded, live: &Database) -> anyhow::Result<ReplacedPrune> {
    let catalog = Catalog::new(loaded.backup_dir());
    let state_dir = loaded.state_dir();
    let mut record = read_record(&state_dir);
    let done = live.prune_replaced_against(
        loaded.config.database.keep_replaced_databases,
        |name, at| covering(&catalog, &record, &live.name, name, at),
    )?;
    record.kept_back = done.kept.clone();
    let existing: Vec<String> = live
        .side_databases()
        .map(|s| s.into_iter().map(|d| d.name).collect())
        .unwrap_or_default();
    record.covering.retain(|name, _| existing.contains(name));
    write_record(&state_dir, &record);
    Ok(done)
}

/// Drops every snapshot of the live database except `except` that nobody is connected
/// to (after a successful deploy: a kept snapshot's rule ends there). Returns the names.
pub fn drop_stale_snapshots(db: &Database, except: Option<&str>) -> Vec<String> {
    let mut dropped = Vec::new();
    for side in db.side_databases().unwrap_or_default() {
        if side.kind != "snapshot" || Some(side.name.as_str()) == except {
            continue;
        }
        match db.drop_kept_database(&side.name) {
            Ok(()) => dropped.push(side.name),
            Err(e) => tracing::warn!("the old snapshot {} was kept: {e:#}", side.name),
        }
    }
    dropped
}

/// The databases beside the live one, each with the rule it is kept under.
pub fn annotated(loaded: &Loaded, db: &Database) -> anyhow::Result<Vec<SideDatabase>> {
    let mut sides = db.side_databases()?;
    let keep = loaded.config.database.keep_replaced_databases as usize;
    let held = read_record(&loaded.state_dir()).kept_back;
    let journal = Journal::load(&loaded.state_dir()).ok().flatten();
    // Newest first, as pruning orders them.
    let mut by_age: Vec<&SideDatabase> = sides.iter().filter(|s| s.kind == "replaced").collect();
    by_age.sort_by_key(|d| std::cmp::Reverse(ops::replaced_at(&db.name, &d.name)));
    let newest: Vec<String> = by_age.iter().take(keep).map(|d| d.name.clone()).collect();
    for side in &mut sides {
        side.note = Some(match side.kind.as_str() {
            "replaced" if newest.contains(&side.name) => format!(
                "kept: one of the newest {keep} replaced database(s) (database.keep_replaced_databases)"
            ),
            "replaced" => match held.iter().find(|k| k.name == side.name) {
                Some(k) => format!("kept beyond database.keep_replaced_databases: {}", k.reason),
                None => "beyond database.keep_replaced_databases: dropped after the next restore or rollback unless someone is connected to it or it holds writes no backup has".into(),
            },
            "snapshot" => match &journal {
                Some(j) if j.snapshot.as_deref() == Some(side.name.as_str()) => format!(
                    "the snapshot of the unfinished {} {}: `stablehand recover` uses it",
                    j.command, j.id
                ),
                _ => "kept: the pre-deploy snapshot of a deploy whose rollback needed manual intervention; the next successful deploy drops it".into(),
            },
            _ => "an interrupted restore's or restore test's: dropped by the next restore, restore test or deploy snapshot".into(),
        });
    }
    Ok(sides)
}
