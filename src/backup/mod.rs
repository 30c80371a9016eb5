//! Backups: create (the streaming pipeline), manifest, catalog, retention, verify.
//! The functions here carry out a command and return a report; printing is the caller's.

pub mod catalog;
pub mod create;
pub mod manifest;
pub mod retention;
pub mod verify;

use anyhow::{bail, Context};
use jiff::Timestamp;
use serde::Serialize;

use crate::config::Loaded;
use crate::db::Database;
use catalog::{Catalog, DirLock};
use manifest::{Manifest, Verification};
use retention::{Candidate, Policy, Reason};

/// The outcome of `backup create`.
#[derive(Debug, Serialize)]
pub struct Created {
    pub backup: Manifest,
    pub path: String,
    pub prune: PruneOutcome,
}

/// What automatic or explicit pruning did.
#[derive(Debug, Serialize)]
pub struct PruneOutcome {
    pub dry_run: bool,
    pub rows: Vec<PruneRow>,
    /// Set when pruning after a successful backup failed (the backup still stands).
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PruneRow {
    pub id: String,
    pub created_at: Timestamp,
    pub size_bytes: u64,
    pub keep: Vec<Reason>,
    pub delete: bool,
}

impl PruneOutcome {
    pub fn deleted(&self) -> impl Iterator<Item = &PruneRow> {
        self.rows.iter().filter(|r| r.delete)
    }
}

/// Makes a backup, then prunes by the retention policy (never after a failed backup).
pub fn create_backup(loaded: &Loaded, label: &str, show_progress: bool) -> anyhow::Result<Created> {
    let catalog = Catalog::new(loaded.backup_dir());
    let lock = catalog.lock()?;
    let db = Database::from_config(loaded)?;
    let request = create::Request {
        label,
        app_dir: &loaded.app_dir,
        settings: &loaded.config.backup,
        show_progress,
    };
    let backup = create::create(&db, &catalog, &lock, &request)?;
    let prune = match prune_locked(loaded, &catalog, &lock, false) {
        Ok(p) => p,
        Err(e) => PruneOutcome {
            dry_run: false,
            rows: Vec::new(),
            error: Some(format!("{e:#}")),
        },
    };
    Ok(Created {
        path: backup.data_path(&catalog.dir).display().to_string(),
        backup,
        prune,
    })
}

/// Applies (or with `dry_run`, only shows) the retention policy.
pub fn prune(loaded: &Loaded, dry_run: bool) -> anyhow::Result<PruneOutcome> {
    let catalog = Catalog::new(loaded.backup_dir());
    let lock = catalog.lock()?;
    prune_locked(loaded, &catalog, &lock, dry_run)
}

fn prune_locked(
    loaded: &Loaded,
    catalog: &Catalog,
    lock: &DirLock,
    dry_run: bool,
) -> anyhow::Result<PruneOutcome> {
    let backups = catalog.list()?.backups;
    let candidates: Vec<Candidate> = backups
        .iter()
        .map(|m| Candidate {
            id: m.id.clone(),
            created_at: m.created_at,
            pinned: m.pinned,
            verified: m.is_verified(),
        })
        .collect();
    let policy = Policy::from_config(&loaded.config.backup);
    let verdicts = retention::plan(&candidates, &policy, Timestamp::now())?;
    let mut rows = Vec::with_capacity(verdicts.len());
    for v in verdicts {
        let m = backups
            .iter()
            .find(|m| m.id == v.id)
            .expect("verdict for a listed backup");
        let delete = v.deleted();
        if delete && !dry_run {
            catalog
                .delete(m, lock)
                .with_context(|| format!("deleting backup {}", m.id))?;
        }
        rows.push(PruneRow {
            id: v.id,
            created_at: m.created_at,
            size_bytes: m.size_bytes,
            keep: v.keep,
            delete,
        });
    }
    Ok(PruneOutcome {
        dry_run,
        rows,
        error: None,
    })
}

/// Sets or clears a backup's pin (pinned backups are never pruned).
pub fn set_pinned(loaded: &Loaded, id: &str, pinned: bool) -> anyhow::Result<Manifest> {
    let catalog = Catalog::new(loaded.backup_dir());
    let _lock = catalog.lock()?;
    let mut m = catalog.find(id)?;
    m.pinned = pinned;
    m.write_atomic(&catalog.dir)?;
    Ok(m)
}

/// The result of verifying one backup.
#[derive(Debug, Serialize)]
pub struct Verified {
    pub id: String,
    pub ok: bool,
    pub problem: Option<String>,
    pub size_bytes: u64,
    pub toc_entries: Option<u64>,
    pub verified_at: Option<Timestamp>,
}

/// Verifies one backup (or all): size and SHA-256 against the manifest, complete
/// decompression and a readable table of contents. Records the result in the manifest.
pub fn verify(loaded: &Loaded, id: Option<&str>, all: bool) -> anyhow::Result<Vec<Verified>> {
    let catalog = Catalog::new(loaded.backup_dir());
    let _lock = catalog.lock()?;
    let targets = match (id, all) {
        (Some(id), false) => vec![catalog.find(id)?],
        (None, true) => catalog.list()?.backups,
        (None, false) => vec![catalog.find("latest")?],
        (Some(_), true) => bail!("give a backup id or --all, not both"),
    };
    let db = Database::from_config(loaded)?;
    let mut results = Vec::new();
    for mut m in targets {
        let outcome = verify_one(&db, &catalog, &m);
        let result = match outcome {
            Ok(toc_entries) => {
                let at = Timestamp::now();
                m.verification = Some(Verification {
                    at,
                    method: "full".into(),
                    toc_entries,
                });
                m.write_atomic(&catalog.dir)?;
                Verified {
                    id: m.id.clone(),
                    ok: true,
                    problem: None,
                    size_bytes: m.size_bytes,
                    toc_entries: Some(toc_entries),
                    verified_at: Some(at),
                }
            }
            Err(e) => {
                // A backup that fails verification no longer counts as verified.
                m.verification = None;
                m.write_atomic(&catalog.dir)?;
                Verified {
                    id: m.id.clone(),
                    ok: false,
                    problem: Some(format!("{e:#}")),
                    size_bytes: m.size_bytes,
                    toc_entries: None,
                    verified_at: None,
                }
            }
        };
        results.push(result);
    }
    Ok(results)
}

fn verify_one(db: &Database, catalog: &Catalog, m: &Manifest) -> anyhow::Result<u64> {
    let path = m.data_path(&catalog.dir);
    let on_disk = fs_err::metadata(&path)?.len();
    if on_disk != m.size_bytes {
        bail!(
            "size mismatch: the manifest says {} bytes, the file has {on_disk}",
            m.size_bytes
        );
    }
    let check = verify::check_file(db, &path, true)?;
    if check.sha256 != m.sha256 {
        bail!(
            "SHA-256 mismatch: the manifest says {}, the file hashes to {}",
            m.sha256,
            check.sha256
        );
    }
    Ok(check.toc_entries)
}
