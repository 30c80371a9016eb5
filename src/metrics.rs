//! Prometheus metrics (prometheus-client), written as a node_exporter textfile after each
//! command when `metrics.textfile` is set. Everything is read back from disk (manifests,
//! history, the counters file), so the file is right whichever command ran last.

use std::path::{Path, PathBuf};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::backup::catalog::Catalog;
use crate::config::Loaded;
use crate::journal::{read_history, Release};

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Counts that no manifest or history line holds (`.stablehand/counters.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    pub backup_failures: u64,
    /// Backups stored locally whose copy to a remote failed.
    #[serde(default)]
    pub upload_failures: u64,
}

impl Counters {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("counters.json")
    }

    pub fn load(state_dir: &Path) -> Counters {
        std::fs::read(Self::path(state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Adds one failed backup (best effort: metrics never fail a command).
    pub fn note_backup_failure(state_dir: &Path) {
        Self::note(state_dir, |c| c.backup_failures += 1);
    }

    /// Adds one backup whose upload failed.
    pub fn note_upload_failure(state_dir: &Path) {
        Self::note(state_dir, |c| c.upload_failures += 1);
    }

    fn note(state_dir: &Path, change: impl FnOnce(&mut Counters)) {
        let mut c = Self::load(state_dir);
        change(&mut c);
        let _ = fs_err::create_dir_all(state_dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                crate::files::write_file_atomic(
                    &Self::path(state_dir),
                    &serde_json::to_vec(&c).unwrap_or_default(),
                )
            });
    }
}

/// What the metrics are computed from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// (created_at seconds, size bytes, duration ms) of the newest backup.
    pub last_backup: Option<(i64, u64, u64)>,
    pub last_verified: Option<i64>,
    pub storage_bytes: u64,
    pub backups: u64,
    pub backup_failures: u64,
    pub upload_failures: u64,
    pub history: Vec<Release>,
    /// (commit, tag) of latest-stable.
    pub stable: Option<(String, String)>,
}

/// The text exposition of the metrics.
pub fn render(f: &Facts) -> String {
    let mut registry = Registry::with_prefix("stablehand");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: f64| {
        let g = FloatGauge::default();
        g.set(value);
        registry.register(name, help, g);
    };
    if let Some((at, size, ms)) = f.last_backup {
        gauge(
            &mut registry,
            "backup_last_success_timestamp_seconds",
            "Unix time of the newest successful backup",
            at as f64,
        );
        gauge(
            &mut registry,
            "backup_last_size_bytes",
            "Size of the newest backup as stored",
            size as f64,
        );
        gauge(
            &mut registry,
            "backup_last_duration_seconds",
            "How long the newest backup took",
            ms as f64 / 1000.0,
        );
    }
    if let Some(at) = f.last_verified {
        gauge(
            &mut registry,
            "backup_last_verified_timestamp_seconds",
            "Unix time of the newest passing verification",
            at as f64,
        );
    }
    gauge(
        &mut registry,
        "backup_storage_bytes",
        "Bytes of all backups in the backup directory",
        f.storage_bytes as f64,
    );
    gauge(
        &mut registry,
        "backups",
        "Backups in the backup directory",
        f.backups as f64,
    );
    let failures = Counter::<u64>::default();
    failures.inc_by(f.backup_failures);
    registry.register("backup_failures", "Backups that failed", failures);
    let uploads = Counter::<u64>::default();
    uploads.inc_by(f.upload_failures);
    registry.register(
        "backup_upload_failures",
        "Backups stored locally whose copy to a remote failed",
        uploads,
    );

    let deploys = Family::<Vec<(String, String)>, Counter>::default();
    for outcome in [
        crate::journal::OutcomeKind::Deployed,
        crate::journal::OutcomeKind::RolledBack,
        crate::journal::OutcomeKind::RollbackFailed,
        crate::journal::OutcomeKind::Refused,
    ] {
        let n = f
            .history
            .iter()
            .filter(|r| r.command != "recover" && r.outcome == outcome)
            .count();
        deploys
            .get_or_create(&vec![("outcome".into(), outcome.as_str().into())])
            .inc_by(n as u64);
    }
    registry.register("deploys", "Deploys and rollbacks by outcome", deploys);
    if let Some(ms) = f.history.iter().rev().find_map(|r| r.rollback_ms) {
        gauge(
            &mut registry,
            "rollback_last_duration_seconds",
            "How long the last rollback took",
            ms as f64 / 1000.0,
        );
    }
    if let Some((commit, tag)) = &f.stable {
        let info = Family::<Vec<(String, String)>, Gauge>::default();
        info.get_or_create(&vec![
            ("commit".into(), commit.clone()),
            ("tag".into(), tag.clone()),
        ])
        .set(1);
        registry.register(
            "stable_release_info",
            "The release latest-stable points at",
            info,
        );
    }
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String");
    out
}

/// Reads the facts from disk.
pub fn gather(loaded: &Loaded) -> Facts {
    let state_dir = loaded.state_dir();
    let counters = Counters::load(&state_dir);
    let mut f = Facts {
        backup_failures: counters.backup_failures,
        upload_failures: counters.upload_failures,
        history: read_history(&state_dir).unwrap_or_default(),
        ..Default::default()
    };
    if let Ok(listing) = Catalog::new(loaded.backup_dir()).list() {
        f.backups = listing.backups.len() as u64;
        f.storage_bytes = listing.backups.iter().map(|m| m.size_bytes).sum();
        f.last_backup = listing
            .backups
            .first()
            .map(|m| (m.created_at.as_second(), m.size_bytes, m.duration_ms));
        f.last_verified = listing
            .backups
            .iter()
            .filter_map(|m| m.verification.as_ref().map(|v| v.at.as_second()))
            .max();
    }
    f.stable = stable_release(loaded);
    f
}

/// The commit latest-stable points at and its dated tag, when there is one.
pub fn stable_release(loaded: &Loaded) -> Option<(String, String)> {
    let repo = crate::git::Repo::open(&loaded.app_dir, &loaded.config.git).ok()?;
    let commit = repo.latest_stable().ok()??;
    let tags = repo.stable_tags().ok()?;
    let tag = tags
        .iter()
        .find(|t| t.latest)
        .or_else(|| tags.iter().find(|t| t.commit == commit))
        .map(|t| t.tag.clone())
        .unwrap_or_default();
    Some((commit, tag))
}

/// Writes the textfile (atomically) when `metrics.textfile` is set; problems are
/// warnings, never failures.
pub fn write_textfile(loaded: &Loaded) {
    let Some(file) = &loaded.config.metrics.textfile else {
        return;
    };
    let path = loaded.app_dir.join(file);
    let text = render(&gather(loaded));
    let written = crate::files::write_file_atomic(&path, text.as_bytes()).and_then(|()| {
        // Not a secret, and node_exporter usually runs as its own user.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(())
    });
    if let Err(e) = written {
        tracing::warn!("writing the metrics textfile {}: {e:#}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_of_the_contract() {
        let release = |outcome: &str, rollback_ms: Option<u64>| -> Release {
            serde_json::from_value(serde_json::json!({
                "at": "2026-11-30T01:00:00Z", "command": "deploy", "trigger": "deploy",
                "from": null, "to": null, "outcome": outcome, "exit_code": 0, "backup": null,
                "stable_tag": null, "failed_commit": null, "db_action": null, "db_reason": null,
                "writes_since_backup": null, "kept_database": null, "reverted_commits": [],
                "message": "", "total_ms": 1000, "rollback_ms": rollback_ms
            }))
            .unwrap()
        };
        let text = render(&Facts {
            last_backup: Some((1_764_464_400, 2048, 1500)),
            last_verified: Some(1_764_464_500),
            storage_bytes: 4096,
            backups: 2,
            backup_failures: 3,
            upload_failures: 1,
            history: vec![
                release("deployed", None),
                release("rolled_back", Some(11_100)),
                release("deployed", None),
            ],
            stable: Some(("abc123".into(), "stable-20261130-010000".into())),
        });
        for line in [
            "stablehand_backup_last_success_timestamp_seconds 1764464400",
            "stablehand_backup_last_size_bytes 2048",
            "stablehand_backup_last_duration_seconds 1.5",
            "stablehand_backup_last_verified_timestamp_seconds 1764464500",
            "stablehand_backup_storage_bytes 4096",
            "stablehand_backup_failures_total 3",
            "stablehand_backup_upload_failures_total 1",
            "stablehand_deploys_total{outcome=\"deployed\"} 2",
            "stablehand_deploys_total{outcome=\"rolled_back\"} 1",
            "stablehand_rollback_last_duration_seconds 11.1",
            "stablehand_stable_release_info{commit=\"abc123\",tag=\"stable-20261130-010000\"} 1",
        ] {
            assert!(
                text.lines()
                    .any(|l| l == line || l.starts_with(&format!("{line}."))),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
