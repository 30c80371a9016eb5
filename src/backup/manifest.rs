//! The JSON manifest written beside every backup. A backup exists only when its manifest
//! does; the manifest is written atomically (temp file, fsync, rename, fsync of the dir).

use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::DbMode;

/// The manifest format version; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;
/// Suffix of a backup's data file.
pub const DATA_SUFFIX: &str = ".dump.zst";
/// Suffix of a backup's manifest.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// How a stored copy is encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// Always "age".
    pub method: String,
    /// The age public keys it is encrypted to.
    pub recipients: Vec<String>,
}

/// Everything known about one backup. Never holds a secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub id: String,
    pub label: String,
    /// The data file's name, in the same directory as the manifest.
    pub file: String,
    pub created_at: Timestamp,
    pub database: DatabaseInfo,
    pub tools: ToolVersions,
    /// The app's git commit at backup time (full sha), when the app dir is a repository.
    pub git_commit: Option<String>,
    pub size_bytes: u64,
    /// Uncompressed pg_dump output, in bytes.
    pub dump_bytes: u64,
    /// SHA-256 of the stored (compressed) file, hex.
    pub sha256: String,
    pub duration_ms: u64,
    pub compression: Compression,
    /// Always "pg_dump-custom": `pg_dump -Fc -Z0`, compressed by stablehand.
    pub format: String,
    /// Rows of `_prisma_migrations` at backup time, when the table exists.
    pub prisma_migrations: Option<serde_json::Value>,
    /// The schema fingerprint at backup time (see `db::inspect`).
    #[serde(default)]
    pub schema_fingerprint: Option<String>,
    /// Write counters at backup time, to count writes made since.
    #[serde(default)]
    pub write_counters: Option<crate::db::inspect::WriteCounters>,
    /// How this copy is encrypted (None: it is not); never a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// The remotes that hold a copy of this backup (the local manifest's record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<UploadRecord>,
    /// The oldest transaction running when the dump began: rows with an xmin at or
    /// above it may be missing from the backup (see `Database::xid_horizon`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid_horizon: Option<u64>,
    /// The server and app that made the backup: a remote shared by several servers
    /// prunes and picks `latest` among this server's own copies only. None in manifests
    /// written before it was recorded (see `Origin::owns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default)]
    pub pinned: bool,
    #[serde(default)]
    pub verification: Option<Verification>,
    /// The last verification that found the backup damaged (cleared by a passing one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_failure: Option<VerificationFailure>,
}

/// Which server and app directory made a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Origin {
    /// The server's hostname.
    pub host: String,
    /// The app directory (absolute) on that server.
    pub app_dir: String,
}

impl Origin {
    /// This server and the app in `app_dir`.
    pub fn here(app_dir: &Path) -> Origin {
        let app_dir = std::fs::canonicalize(app_dir)
            .unwrap_or_else(|_| app_dir.to_path_buf())
            .display()
            .to_string();
        Origin {
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".into()),
            app_dir,
        }
    }

    /// `host:app_dir`, for listings.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.host, self.app_dir)
    }
}

/// A copy of the backup on a remote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadRecord {
    pub remote: String,
    pub at: Timestamp,
    /// The stored object (it differs from the local file when only the copy is encrypted).
    pub file: String,
    pub size_bytes: u64,
    pub sha256: String,
}

/// A verification that found the backup damaged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerificationFailure {
    pub at: Timestamp,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatabaseInfo {
    pub name: String,
    pub mode: DbMode,
    pub server_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolVersions {
    pub pg_dump: String,
    pub stablehand: String,
    pub zstd: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Compression {
    pub algorithm: String,
    pub level: i32,
    pub threads: u32,
}

/// The last successful verification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verification {
    pub at: Timestamp,
    /// "structural" (checksum at write + TOC readable), "full" (size, SHA-256 of the
    /// stored file, complete decompression, TOC readable) or "restore-test" (full, then
    /// restored into a scratch database and every table checked).
    pub method: String,
    /// Entries in the dump's table of contents.
    pub toc_entries: u64,
    /// With "restore-test": tables restored and their rows in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

impl Manifest {
    pub fn is_verified(&self) -> bool {
        self.verification.is_some()
    }

    /// Path of the manifest inside `dir`.
    pub fn manifest_path(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}{MANIFEST_SUFFIX}"))
    }

    pub fn data_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.file)
    }

    /// Refuses a manifest whose id or data file is not a plain file name (a path, `..`):
    /// read from a remote, it would resolve outside the directory it is fetched into.
    pub fn check_names(&self) -> anyhow::Result<()> {
        for (what, name) in [("id", &self.id), ("file", &self.file)] {
            if !is_plain_file_name(name) {
                anyhow::bail!(
                    "the manifest of backup {:?} names its {what} {name:?}, which is not a plain file name (it would resolve outside the backup directory); the manifest was refused and nothing was read or written for it",
                    self.id
                );
            }
        }
        Ok(())
    }

    /// Reads a manifest file.
    pub fn read(path: &Path) -> anyhow::Result<Manifest> {
        let text = fs_err::read_to_string(path)?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid manifest", path.display()))
    }

    /// Writes the manifest into `dir` atomically: a reader sees the old one or the new one.
    pub fn write_atomic(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = Self::manifest_path(dir, &self.id);
        let json = serde_json::to_vec_pretty(self)?;
        crate::files::write_file_atomic(&path, &json)?;
        Ok(path)
    }
}

/// A name that stays inside the directory it is joined to: one normal path component,
/// no separator, not `.` or `..`, no NUL, not hidden.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && matches!(
            Path::new(name).components().collect::<Vec<_>>()[..],
            [std::path::Component::Normal(_)]
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as the first releases wrote it, before the fingerprint, write counters,
    /// encryption, uploads, horizon, origin, pin and verification were recorded.
    #[test]
    fn a_manifest_from_the_first_releases_still_reads() {
        let old = r#"{
            "format_version": 1,
            "id": "pre-deploy_20261101_101500_abc1234",
            "label": "pre-deploy",
            "file": "pre-deploy_20261101_101500_abc1234.dump.zst",
            "created_at": "2026-11-01T10:15:00Z",
            "database": {"name": "appdb", "mode": "compose", "server_version": "15.8"},
            "tools": {"pg_dump": "15.8", "stablehand": "0.1.0", "zstd": "1.5.6"},
            "git_commit": "abc1234abc1234abc1234abc1234abc1234abc12",
            "size_bytes": 1234,
            "dump_bytes": 5678,
            "sha256": "00",
            "duration_ms": 12,
            "compression": {"algorithm": "zstd", "level": 3, "threads": 2},
            "format": "pg_dump custom",
            "prisma_migrations": null
        }"#;
        let m: Manifest = serde_json::from_str(old).expect("an old manifest reads");
        assert_eq!(m.id, "pre-deploy_20261101_101500_abc1234");
        assert_eq!(m.database.mode, DbMode::Compose);
        assert!(m.schema_fingerprint.is_none() && m.write_counters.is_none());
        assert!(m.encryption.is_none() && m.uploads.is_empty() && m.origin.is_none());
        assert!(!m.pinned && m.verification.is_none());
    }

    #[test]
    fn only_plain_file_names_pass() {
        for ok in ["pre-deploy_20260302T100411Z_abc1234.dump.zst", "a..b", "x"] {
            assert!(is_plain_file_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            ".hidden",
            "a\\b",
            "a\0b",
        ] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}
