//! Backups: create (the streaming pipeline), manifest, catalog, retention, verify.
//! The functions here carry out a command and return a report; printing is the caller's.

pub mod catalog;
pub mod create;
pub mod crypt;
pub mod frames;
pub mod manifest;
pub mod retention;
pub mod toc;
pub mod verify;

use anyhow::Context;
use jiff::Timestamp;
use serde::Serialize;

use crate::config::Loaded;
use crate::db::Database;
use catalog::{Catalog, DirLock};
use manifest::{Manifest, Verification};
use retention::{Candidate, Policy, Reason};
use verify::CheckError;

/// The outcome of `backup create`.
#[derive(Debug, Serialize)]
pub struct Created {
    pub backup: Manifest,
    pub path: String,
    pub prune: PruneOutcome,
    /// Remote copies that failed (the local backup stands; `remote_required` makes
    /// these a failed backup instead).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upload_failures: Vec<create::UploadFailure>,
    /// Retention on each remote that got a copy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_prune: Vec<RemotePrune>,
}

/// Retention applied on one remote after a backup.
#[derive(Debug, Serialize)]
pub struct RemotePrune {
    pub remote: String,
    pub deleted: Vec<String>,
    pub error: Option<String>,
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
    /// Deleted (or, in a dry run, would be).
    pub delete: bool,
    /// Set when the deletion was attempted and failed; the backup is still there.
    pub failed: Option<String>,
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
    create_backup_locked(loaded, &catalog, &lock, label, None, show_progress)
}

/// `create_backup` for a caller that already holds the backup directory's lock.
pub fn create_backup_locked(
    loaded: &Loaded,
    catalog: &Catalog,
    lock: &DirLock,
    label: &str,
    commit: Option<&str>,
    show_progress: bool,
) -> anyhow::Result<Created> {
    let db = Database::from_config(loaded)?;
    // A remote that cannot even be set up (a variable missing) fails like an upload.
    let mut remotes = Vec::new();
    let mut setup_failures = Vec::new();
    for r in &loaded.config.backup.remote {
        match crate::remote::Remote::open(r) {
            Ok(remote) => remotes.push(remote),
            Err(e) if !loaded.config.backup.remote_required => {
                setup_failures.push(create::UploadFailure {
                    remote: r.name.clone(),
                    error: format!("{e:#}"),
                })
            }
            Err(e) => {
                return Err(create::BackupFailed {
                    stage: create::Stage::Upload,
                    cause: e.context(format!("remote {}", r.name)),
                }
                .into())
            }
        }
    }
    let request = create::Request {
        label,
        app_dir: &loaded.app_dir,
        commit,
        settings: &loaded.config.backup,
        show_progress,
        remotes: &remotes,
    };
    let made = create::create(&db, catalog, lock, &request)?;
    let backup = made.manifest;
    let mut upload_failures = setup_failures;
    upload_failures.extend(made.upload_failures);
    let remote_prune = remotes
        .iter()
        .filter(|r| backup.uploads.iter().any(|u| u.remote == r.name))
        .map(|r| match prune_remote(loaded, r, false) {
            Ok(p) => RemotePrune {
                remote: r.name.clone(),
                deleted: p.deleted().map(|row| row.id.clone()).collect(),
                error: p.error,
            },
            Err(e) => RemotePrune {
                remote: r.name.clone(),
                deleted: Vec::new(),
                error: Some(format!("{e:#}")),
            },
        })
        .collect();
    let prune = match prune_locked(loaded, catalog, lock, false) {
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
        upload_failures,
        remote_prune,
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
    // Invariant 3: the backup of the release latest-stable points at is never pruned.
    // A manifest whose data file is gone or resized protects nothing.
    let candidates = retention_candidates(loaded, &backups, |m| {
        fs_err::metadata(m.data_path(&catalog.dir)).is_ok_and(|md| md.len() == m.size_bytes)
    });
    let policy = Policy::from_config(&loaded.config.backup);
    let verdicts = retention::plan(&candidates, &policy, Timestamp::now())?;
    Ok(carry_out(verdicts, &backups, dry_run, |m| {
        catalog.delete(m, lock)
    }))
}

/// What retention needs of `backups` (local or remote): verified only when `intact`
/// agrees, and which one belongs to latest-stable (invariant 3: never pruned).
pub(crate) fn retention_candidates(
    loaded: &Loaded,
    backups: &[Manifest],
    intact: impl Fn(&Manifest) -> bool,
) -> Vec<Candidate> {
    let stable_backup = match crate::git::Repo::open(&loaded.app_dir, &loaded.config.git) {
        Ok(repo) => repo.latest_stable_backup().unwrap_or_else(|e| {
            tracing::warn!("could not read which backup belongs to latest-stable: {e:#}");
            None
        }),
        // Not a git repository (or no git): no stable release to protect.
        Err(_) => None,
    };
    backups
        .iter()
        .map(|m| Candidate {
            id: m.id.clone(),
            created_at: m.created_at,
            pinned: m.pinned,
            of_stable_release: stable_backup.as_deref() == Some(m.id.as_str()),
            verified: m.is_verified() && intact(m),
        })
        .collect()
}

/// Carries out retention verdicts over `backups` with `delete` (local or remote). One
/// failed deletion must not hide the ones already done: it is recorded and the rest go on.
pub(crate) fn carry_out(
    verdicts: Vec<retention::Verdict>,
    backups: &[Manifest],
    dry_run: bool,
    mut delete_one: impl FnMut(&Manifest) -> anyhow::Result<()>,
) -> PruneOutcome {
    let mut rows = Vec::with_capacity(verdicts.len());
    let mut errors = Vec::new();
    for v in verdicts {
        let m = backups
            .iter()
            .find(|m| m.id == v.id)
            .expect("verdict for a listed backup");
        let mut delete = v.deleted();
        let mut failed = None;
        if delete && !dry_run {
            if let Err(e) = delete_one(m) {
                failed = Some(format!("{e:#}"));
                errors.push(format!("deleting {}: {e:#}", m.id));
                delete = false;
            }
        }
        rows.push(PruneRow {
            id: v.id,
            created_at: m.created_at,
            size_bytes: m.size_bytes,
            keep: v.keep,
            delete,
            failed,
        });
    }
    PruneOutcome {
        dry_run,
        rows,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
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
/// decompression and a readable table of contents. A damaged backup loses its verified
/// mark; one that could not be checked (tool missing, container down) keeps it.
pub fn verify(loaded: &Loaded, id: Option<&str>, all: bool) -> anyhow::Result<Vec<Verified>> {
    let catalog = Catalog::new(loaded.backup_dir());
    let _lock = catalog.lock()?;
    let targets = catalog.select(id, all)?;
    let db = Database::for_offline_tools(loaded)?;
    // Prove the checking tool runs before judging any backup by it.
    db.tool(crate::db::Tool::PgRestore, false)
        .arg("--version")
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .context("pg_restore is needed to verify backups")?;
    let limit = loaded.config.backup.timeout;
    let mut results = Vec::new();
    for mut m in targets {
        let checked = crypt::Keys::for_manifest(&loaded.config.backup, &m)
            .map_err(CheckError::Unchecked)
            .and_then(|keys| verify_one(&db, &catalog, &m, limit, keys.as_ref()));
        let (ok, problem, toc_entries, verified_at) = match checked {
            Ok(check) => {
                let toc_entries = check.toc_entries;
                let at = Timestamp::now();
                m.verification = Some(Verification {
                    at,
                    method: "full".into(),
                    toc_entries,
                    tables: None,
                    rows: None,
                });
                m.verification_failure = None;
                m.write_atomic(&catalog.dir)?;
                (true, None, Some(toc_entries), Some(at))
            }
            Err(CheckError::Damaged(e)) => {
                // A damaged backup no longer counts as verified.
                m.verification = None;
                m.verification_failure = Some(manifest::VerificationFailure {
                    at: Timestamp::now(),
                    problem: format!("{e:#}"),
                });
                m.write_atomic(&catalog.dir)?;
                (false, Some(format!("{e:#}")), None, None)
            }
            Err(e @ CheckError::Unchecked(_)) => {
                if crate::process::interrupted() {
                    return Err(anyhow::Error::from(e).context(format!("verifying {}", m.id)));
                }
                (
                    false,
                    Some(e.to_string()),
                    None,
                    m.verification.as_ref().map(|v| v.at),
                )
            }
        };
        results.push(Verified {
            id: m.id.clone(),
            ok,
            problem,
            size_bytes: m.size_bytes,
            toc_entries,
            verified_at,
        });
    }
    Ok(results)
}

pub(crate) fn verify_one(
    db: &Database,
    catalog: &Catalog,
    m: &Manifest,
    limit: std::time::Duration,
    keys: Option<&crypt::Keys>,
) -> Result<verify::FileCheck, CheckError> {
    let path = m.data_path(&catalog.dir);
    verify::check_size(&path, m)?;
    let check = verify::check_file(db, &path, true, limit, keys.zip(m.encryption.as_ref()))?;
    if check.sha256 != m.sha256 {
        return Err(CheckError::Damaged(anyhow::anyhow!(
            "SHA-256 mismatch: the manifest says {}, the file hashes to {}",
            m.sha256,
            check.sha256
        )));
    }
    Ok(check)
}
/// Applies a remote's retention (its keep_last/keep_within, else the local policy).
pub fn prune_remote(
    loaded: &Loaded,
    remote: &crate::remote::Remote,
    dry_run: bool,
) -> anyhow::Result<PruneOutcome> {
    // Another server's copies sharing the remote are neither counted nor deleted.
    let (all, _) = remote.list()?;
    let own = crate::remote::ownership(loaded, &all)?;
    let backups: Vec<Manifest> = all
        .into_iter()
        .zip(own)
        .filter(|(_, own)| *own)
        .map(|(m, _)| m)
        .collect();
    let candidates = retention_candidates(loaded, &backups, |_| true);
    let policy = remote_policy(loaded, remote);
    let verdicts = retention::plan(&candidates, &policy, Timestamp::now())?;
    Ok(carry_out(verdicts, &backups, dry_run, |m| remote.delete(m)))
}

/// A remote's own retention: its keys where set, the local policy otherwise.
pub fn remote_policy(loaded: &Loaded, remote: &crate::remote::Remote) -> Policy {
    let mut p = Policy::from_config(&loaded.config.backup);
    if let Some(n) = remote.config.keep_last {
        p.keep_last = n;
    }
    if let Some(d) = remote.config.keep_within {
        p.keep_within = d;
    }
    if remote.config.keep_last.is_some() || remote.config.keep_within.is_some() {
        // A remote with its own rules keeps by those alone.
        p.keep_daily = 0;
        p.keep_weekly = 0;
        p.keep_monthly = 0;
        if remote.config.keep_within.is_none() {
            p.keep_within = std::time::Duration::ZERO;
        }
        if remote.config.keep_last.is_none() {
            p.keep_last = 0;
        }
    }
    p
}
