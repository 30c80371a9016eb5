//! `[backup]`, its `[[backup.remote]]` copies and `[backup.encryption]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{de_duration, de_opt_duration, de_size};

/// `[backup]`: where backups go, how they are made and how long they are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    #[serde(default = "default_backup_dir")]
    pub dir: PathBuf,
    #[serde(default = "default_level")]
    pub compression_level: i32,
    /// zstd worker threads; 0 = one per CPU.
    #[serde(default)]
    pub threads: u32,
    #[serde(default = "default_keep_last")]
    pub keep_last: u32,
    #[serde(default = "default_keep_within", deserialize_with = "de_duration")]
    pub keep_within: Duration,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
    /// A backup still running after this is killed and counts as failed.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Parallel pg_restore jobs when restoring from a file; 0 = one per CPU.
    #[serde(default)]
    pub restore_jobs: u32,
    /// The smallest compressed backup that counts, in bytes ("1KiB", "512" ...).
    #[serde(default = "default_min_size", deserialize_with = "de_size")]
    pub min_size: u64,
    /// Offsite copies: object stores (S3 and compatible, GCS, Azure) or directories.
    #[serde(default)]
    pub remote: Vec<RemoteConfig>,
    /// A backup (and so a deploy) fails when an upload fails; otherwise the local
    /// backup stands and the failure is loud.
    #[serde(default)]
    pub remote_required: bool,
    /// Client-side encryption (age) of the copies stored offsite.
    #[serde(default)]
    pub encryption: Option<EncryptionConfig>,
}

/// `[[backup.remote]]`: one offsite copy of every backup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// How commands name it (`--remote NAME`, `--from NAME`).
    pub name: String,
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`, or
    /// `file:///mnt/nas/backups` (a directory, e.g. a mounted NAS).
    pub url: String,
    /// S3-compatible endpoint (MinIO, R2, Ceph ...); default: AWS.
    pub endpoint: Option<String>,
    /// S3 region; default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.
    pub region: Option<String>,
    /// Plain HTTP to the endpoint (only for a local test endpoint).
    #[serde(default)]
    pub allow_http: bool,
    /// `https://bucket.endpoint` instead of `https://endpoint/bucket`.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// Environment variables holding the credentials; default: the standard AWS
    /// variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), then the
    /// instance or container credentials.
    pub access_key_id_env: Option<String>,
    pub secret_access_key_env: Option<String>,
    /// One request may take this long before it is retried (then the upload fails).
    #[serde(default = "default_remote_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Retention on this remote; default: the local policy.
    pub keep_last: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub keep_within: Option<Duration>,
}

/// `[backup.encryption]`: age recipients for the offsite copies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age public keys (`age1...`); any one of their identities can decrypt.
    pub recipients: Vec<String>,
    /// The age identity file used to decrypt (restore, verify --restore-test).
    pub identity_file: Option<PathBuf>,
    /// Encrypt the local copies too (restoring them then needs the identity file).
    #[serde(default)]
    pub encrypt_local: bool,
}

fn default_remote_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: default_backup_dir(),
            compression_level: default_level(),
            threads: 0,
            keep_last: default_keep_last(),
            keep_within: default_keep_within(),
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            timeout: default_timeout(),
            restore_jobs: 0,
            min_size: default_min_size(),
            remote: Vec::new(),
            remote_required: false,
            encryption: None,
        }
    }
}

fn default_backup_dir() -> PathBuf {
    PathBuf::from("backups/database")
}
fn default_level() -> i32 {
    3
}
fn default_keep_last() -> u32 {
    10
}
fn default_keep_within() -> Duration {
    Duration::from_secs(30 * 86400)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_min_size() -> u64 {
    256
}

/// Where a remote is, from its `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { url: String },
    Gcs { url: String },
    Azure { url: String },
    Dir { path: PathBuf },
}

impl Location {
    pub fn parse(url: &str) -> Result<Location, String> {
        if url.starts_with('/') {
            return Ok(Location::Dir { path: url.into() });
        }
        let parsed = url::Url::parse(url).map_err(|e| {
            format!("{url:?} is not a URL ({e}): use s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or file:///path")
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("credentials never go in the config file; name the environment variables with access_key_id_env and secret_access_key_env".into());
        }
        if matches!(
            parsed.scheme(),
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss"
        ) && parsed.host_str().unwrap_or("").is_empty()
        {
            return Err(format!(
                "{url:?} names no bucket: write {}://bucket/prefix",
                parsed.scheme()
            ));
        }
        match parsed.scheme() {
            "s3" | "s3a" => Ok(Location::S3 { url: url.into() }),
            "gs" => Ok(Location::Gcs { url: url.into() }),
            "az" | "azure" | "abfs" | "abfss" => Ok(Location::Azure { url: url.into() }),
            "file" => Ok(Location::Dir {
                path: parsed.to_file_path().map_err(|()| {
                    format!("{url:?} is not a local path: write file:///absolute/path")
                })?,
            }),
            other => Err(format!(
                "the scheme {other}:// is not supported: use s3://, gs://, az:// or file://"
            )),
        }
    }
}

/// Parses one age public key, with an error that says what is wrong.
pub fn parse_recipient(key: &str) -> Result<age::x25519::Recipient, String> {
    key.trim().parse().map_err(|e| {
        format!("{key:?} is not an age public key ({e}); it looks like age1... (`age-keygen -y key.txt` prints the public key of a key file)")
    })
}

impl BackupConfig {
    /// True when no retention rule keeps anything.
    pub fn keeps_nothing(&self) -> bool {
        self.keep_last == 0
            && self.keep_within.is_zero()
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
    }
}
