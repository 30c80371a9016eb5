//! `stablehand.toml`: types, defaults, and errors that point at the file, line and
//! column and list the valid keys. Secrets never live here: the database URL comes from
//! an environment variable (`database.url_env`) or, without a password, from `url`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The default config file name, looked up in the current directory.
pub const DEFAULT_FILE: &str = "stablehand.toml";

/// A configuration problem; the binary exits 78 on it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config file at {path}: {reason}\n  hint: create one (see docs/configuration.md), pass --config PATH, or set STABLEHAND_CONFIG")]
    Missing { path: PathBuf, reason: String },
    #[error("{path}:{line}:{column}: {message}\n{snippet}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        snippet: String,
    },
    #[error("{path}{location}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        /// ":line:column" when the key is in the file, empty otherwise.
        location: String,
        key: String,
        message: String,
    },
}

/// The whole configuration. Sections appear here when the feature behind them works.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub git: GitConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub health: HealthConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
}

/// `[serve]`: the dashboard and /metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on; `serve --listen` overrides it.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Environment variable holding the access token; required for a non-loopback
    /// address, checked on every request (`Authorization: Bearer`, or `?token=`).
    pub token_env: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: default_listen(),
            token_env: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9750".into()
}

/// `[schedule]`: jobs `serve` runs, as cron expressions (5 fields, or 6 with seconds
/// first), in UTC.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// A backup (then retention).
    pub backup: Option<String>,
    /// A restore test of the newest backup.
    pub verify: Option<String>,
    /// Retention alone.
    pub prune: Option<String>,
}

/// `[metrics]`: Prometheus metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A node_exporter textfile (relative to the app directory, or absolute) rewritten
    /// after every command.
    pub textfile: Option<PathBuf>,
}

/// `[alerts]`: when `stablehand check` fails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The newest backup may be at most this old.
    #[serde(default = "default_max_backup_age", deserialize_with = "de_duration")]
    pub max_backup_age: Duration,
    /// The newest passing verification may be at most this old.
    #[serde(default = "default_max_verify_age", deserialize_with = "de_duration")]
    pub max_verify_age: Duration,
    /// Environment variable holding a dead-man's-switch URL pinged after each successful
    /// backup (healthchecks.io and the like).
    pub ping_url_env: Option<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            max_backup_age: default_max_backup_age(),
            max_verify_age: default_max_verify_age(),
            ping_url_env: None,
        }
    }
}

fn default_max_backup_age() -> Duration {
    Duration::from_secs(26 * 3600)
}
fn default_max_verify_age() -> Duration {
    Duration::from_secs(8 * 86400)
}

/// `[notify]`: where outcomes are announced. Webhook URLs come from an environment
/// variable or a file, never from this file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Environment variable holding a Slack incoming-webhook URL.
    pub slack_webhook_env: Option<String>,
    /// File (relative to the app directory) holding the Slack webhook URL.
    pub slack_webhook_file: Option<PathBuf>,
    /// Environment variable holding a generic JSON webhook URL.
    pub webhook_url_env: Option<String>,
    /// File holding the generic webhook URL.
    pub webhook_url_file: Option<PathBuf>,
    /// Shell commands run on events (the event in STABLEHAND_* variables and as JSON
    /// on stdin).
    pub on_deploy: Option<String>,
    pub on_rollback: Option<String>,
    pub on_failure: Option<String>,
    pub on_backup_failure: Option<String>,
    /// Attempts per webhook delivery.
    #[serde(default = "default_notify_attempts")]
    pub attempts: u32,
    /// Time bound per channel, retries included.
    #[serde(default = "default_notify_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            slack_webhook_env: None,
            slack_webhook_file: None,
            webhook_url_env: None,
            webhook_url_file: None,
            on_deploy: None,
            on_rollback: None,
            on_failure: None,
            on_backup_failure: None,
            attempts: default_notify_attempts(),
            timeout: default_notify_timeout(),
        }
    }
}

fn default_notify_attempts() -> u32 {
    4
}
fn default_notify_timeout() -> Duration {
    Duration::from_secs(15)
}

/// `[git]`: the remote, and the names of the stable tags.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    #[serde(default = "default_remote")]
    pub remote: String,
    /// The branch deploys follow; default: the remote's default branch.
    pub branch: Option<String>,
    /// The moving tag on the last release proven healthy.
    #[serde(default = "default_stable_tag")]
    pub stable_tag: String,
    /// Prefix of the dated tags (`stable-YYYYMMDD-HHMMSS`).
    #[serde(default = "default_stable_prefix")]
    pub stable_prefix: String,
    /// Namespaces both tags (`production/latest-stable`), for environments sharing a repo.
    pub environment: Option<String>,
    /// Push the tags to the remote when marking a release stable.
    #[serde(default = "default_true")]
    pub push: bool,
    /// Let a rollback discard local changes to tracked files (default: refuse).
    #[serde(default)]
    pub discard_local_changes: bool,
}

impl Default for GitConfig {
    fn default() -> Self {
        GitConfig {
            remote: default_remote(),
            branch: None,
            stable_tag: default_stable_tag(),
            stable_prefix: default_stable_prefix(),
            environment: None,
            push: true,
            discard_local_changes: false,
        }
    }
}

fn default_remote() -> String {
    "origin".into()
}
fn default_stable_tag() -> String {
    "latest-stable".into()
}
fn default_stable_prefix() -> String {
    "stable-".into()
}
fn default_true() -> bool {
    true
}

/// `[health]`: the gate run after a deploy and by `stablehand health`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Compose services that must be running (and healthy, with a healthcheck) and must
    /// not restart while the gate watches.
    #[serde(default)]
    pub containers: Vec<String>,
    #[serde(default = "default_consecutive")]
    pub consecutive: u32,
    #[serde(default = "default_stable_for", deserialize_with = "de_duration")]
    pub stable_for: Duration,
    #[serde(default = "default_health_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(default)]
    pub http: Vec<HttpProbeConfig>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            containers: Vec::new(),
            consecutive: default_consecutive(),
            stable_for: default_stable_for(),
            timeout: default_health_timeout(),
            interval: default_interval(),
            http: Vec::new(),
        }
    }
}

/// `[[health.http]]`: one HTTP probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeConfig {
    pub url: String,
    /// Expected status; default: any of 200-399.
    pub expect_status: Option<u16>,
    /// A substring the body must contain.
    pub contains: Option<String>,
    /// A regular expression the body must match.
    pub matches: Option<String>,
    /// Per-request limit.
    #[serde(default = "default_probe_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

fn default_consecutive() -> u32 {
    3
}
fn default_stable_for() -> Duration {
    Duration::from_secs(20)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[runtime]`: how the app runs, builds, stops and starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// compose or command; default: command when build/stop/start are set, compose when
    /// a compose file exists, otherwise none (stablehand does not manage the app).
    pub kind: Option<RuntimeKind>,
    /// Compose project name; default: compose's own (the directory name).
    pub project: Option<String>,
    /// Compose files, relative to the app directory; default: compose's standard names.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Compose services to build, stop and start; default: those with a `build:` section.
    pub services: Option<Vec<String>>,
    /// Commits whose images are kept (besides latest-stable's) for rebuild-free rollbacks.
    #[serde(default = "default_keep_images")]
    pub keep_images: u32,
    /// kind = "command": shell command that builds the app (optional).
    pub build: Option<String>,
    /// kind = "command": shell command that stops the app.
    pub stop: Option<String>,
    /// kind = "command": shell command that starts the app.
    pub start: Option<String>,
    /// The docker CLI's absolute path; default: `docker` on PATH.
    pub docker: Option<PathBuf>,
    /// A standalone Compose binary's absolute path (v1 or v2), used instead of
    /// `docker compose` and `docker-compose` on PATH.
    pub compose: Option<PathBuf>,
    /// Run docker and Compose through `sudo -n` (a deploy user outside the docker group).
    #[serde(default)]
    pub sudo: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            kind: None,
            project: None,
            files: Vec::new(),
            services: None,
            keep_images: default_keep_images(),
            build: None,
            stop: None,
            start: None,
            docker: None,
            compose: None,
            sudo: false,
        }
    }
}

fn default_keep_images() -> u32 {
    5
}

/// What runs the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Docker Compose services.
    Compose,
    /// Plain build/start/stop shell commands (systemd, a process manager, ...).
    Command,
}

/// The file names Compose looks for when no `-f` is given, in its order.
pub const COMPOSE_FILE_NAMES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

impl RuntimeConfig {
    /// The runtime in effect for an app in `app_dir`; None when stablehand manages no app.
    pub fn effective_kind(&self, app_dir: &Path) -> Option<RuntimeKind> {
        if self.kind.is_some() {
            return self.kind;
        }
        if self.build.is_some() || self.stop.is_some() || self.start.is_some() {
            return Some(RuntimeKind::Command);
        }
        let has_compose_file = !self.files.is_empty()
            || COMPOSE_FILE_NAMES
                .iter()
                .any(|name| app_dir.join(name).is_file());
        has_compose_file.then_some(RuntimeKind::Compose)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbMode {
    /// Run the PostgreSQL tools inside the compose service (`compose exec -T`).
    Compose,
    /// Connect with a URL using the local client tools.
    Direct,
}

/// `[database]`: which database, and how to reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(default = "default_mode")]
    pub mode: DbMode,
    /// Compose service running PostgreSQL (compose mode).
    #[serde(default = "default_service")]
    pub service: String,
    /// Database user (compose mode; in direct mode the URL's user wins).
    #[serde(default = "default_user")]
    pub user: String,
    /// Database name (required in compose mode; direct mode defaults to the URL's).
    pub name: Option<String>,
    /// Environment variable holding the connection URL (direct mode).
    #[serde(default = "default_url_env")]
    pub url_env: String,
    /// Connection URL without a password (direct mode), used when `url_env` is unset.
    pub url: Option<String>,
    /// Directory of pg_dump/pg_restore/psql for direct mode; default: PATH.
    pub client_bin_dir: Option<PathBuf>,
    /// The database stablehand connects to for CREATE, DROP and RENAME DATABASE; never
    /// the live one. Default: `postgres`, or `template1` when the app's database is
    /// `postgres` (the official image's default).
    pub maintenance_db: Option<String>,
    /// Databases replaced by a restore or snapshot swap that are kept (newest first).
    #[serde(default = "default_keep_replaced")]
    pub keep_replaced_databases: u32,
    /// The migration tool whose ledger is read: "prisma" or "none".
    #[serde(default = "default_migrations")]
    pub migrations: String,
    /// Where the migration folders (`<name>/migration.sql`, `<name>/down.sql`) live,
    /// relative to the app directory.
    #[serde(default = "default_migrations_dir")]
    pub migrations_dir: PathBuf,
    /// Shell command a deploy runs to migrate (after the backup, with the app stopped);
    /// empty: migrations run when the app starts.
    #[serde(default)]
    pub migrate_command: String,
    /// The database action of a rollback: auto, restore, down or none.
    #[serde(default = "default_on_rollback")]
    pub on_rollback: crate::deploy::decision::DbPolicy,
    /// Snapshot the database (CREATE DATABASE ... TEMPLATE) while the app is stopped
    /// during a deploy: the database rollback becomes a rename.
    #[serde(default)]
    pub snapshot: bool,
}

fn default_migrations() -> String {
    "prisma".into()
}
fn default_migrations_dir() -> PathBuf {
    "prisma/migrations".into()
}
fn default_on_rollback() -> crate::deploy::decision::DbPolicy {
    crate::deploy::decision::DbPolicy::Auto
}

fn default_keep_replaced() -> u32 {
    2
}

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

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
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

fn default_mode() -> DbMode {
    DbMode::Compose
}
fn default_service() -> String {
    "postgres".into()
}
fn default_user() -> String {
    "postgres".into()
}
fn default_url_env() -> String {
    "DATABASE_URL".into()
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

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write it like \"30s\", \"20m\", \"2h\", \"30d\""
        ))
    })
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Int(n) => Ok(n),
        Size::Text(s) => parse_size(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size {s:?}; write it like 512, \"4KiB\", \"10MB\""
            ))
        }),
    }
}

/// Parses "512", "4KiB", "10MB", "1GiB" into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1024,
        "mb" => 1_000_000,
        "mib" | "m" => 1024 * 1024,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    /// The directory of the config file: the app's git work tree and compose directory.
    pub app_dir: PathBuf,
}

impl Loaded {
    /// The backup directory, resolved against the app directory.
    pub fn backup_dir(&self) -> PathBuf {
        self.app_dir.join(&self.config.backup.dir)
    }

    /// `.stablehand/` in the app directory: journal, lock, history, image record.
    pub fn state_dir(&self) -> PathBuf {
        self.app_dir.join(".stablehand")
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Missing {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let config = parse(&text, path)?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let app_dir = abs
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Loaded {
        config,
        path: path.to_owned(),
        app_dir,
    })
}

/// Parses config text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
    validate(&config, text, path)?;
    Ok(config)
}

fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    if e.message().contains("missing field `database`") {
        return ConfigError::Invalid {
            path: path.to_owned(),
            location: String::new(),
            key: "database".into(),
            message: "the [database] section is missing: it names the database a deploy backs up first and rolls back with the code (mode, service, user, name); run `stablehand init` to write a config from this directory, or add the section by hand (docs/configuration.md)".into(),
        };
    }
    let (line, column, snippet) = match e.span() {
        Some(span) => {
            let (line, column) = line_col(text, span.start);
            let src = mask_secret_value(text.lines().nth(line - 1).unwrap_or(""));
            let src = src.as_str();
            let width = (span.end.saturating_sub(span.start)).clamp(1, src.len().max(1));
            let snippet = format!(
                "  {line:>4} | {src}\n       | {}{}",
                " ".repeat(column - 1),
                "^".repeat(width.min(src.len().saturating_sub(column - 1).max(1)))
            );
            (line, column, snippet)
        }
        None => (1, 1, String::new()),
    };
    let mut message = e.message().trim().to_string();
    if let Some(hint) = secret_key_hint(&message) {
        message.push_str(&hint);
    }
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
        snippet,
    }
}

/// A hint for an unknown key that is a secret put where a reference belongs.
fn secret_key_hint(message: &str) -> Option<String> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    if matches!(
        key,
        "slack_webhook" | "slack_webhook_url" | "webhook_url" | "webhook"
    ) {
        return Some(format!(
            "\n  secrets never go in the config file: put the URL in an environment variable and name it with `{}_env` (or a file, with `{}_file`)",
            if key.starts_with("slack") { "slack_webhook" } else { "webhook_url" },
            if key.starts_with("slack") { "slack_webhook" } else { "webhook_url" }
        ));
    }
    if matches!(
        key,
        "secret_access_key" | "access_key_id" | "aws_secret_access_key" | "aws_access_key_id"
    ) {
        return Some(format!(
            "\n  secrets never go in the config file: put it in an environment variable and name it with `{}_env`",
            key.trim_start_matches("aws_")
        ));
    }
    None
}

/// A config line as shown in errors: values of secret-looking keys and URL passwords masked.
fn mask_secret_value(line: &str) -> String {
    let lower = line.to_ascii_lowercase();
    let key = lower.split('=').next().unwrap_or("");
    if ["pas", "pwd", "secret", "token", "key"]
        .iter()
        .any(|w| key.contains(w))
    {
        if let Some(eq) = line.find('=') {
            return format!("{}= \"****\"", &line[..eq]);
        }
    }
    crate::redact::redact_text(line)
}

/// A conservative subset of git's ref-name rules.
fn is_ref_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        && !s.starts_with(['-', '/', '.'])
        && !s.contains("..")
        && !s.contains("//")
        && !s.ends_with(".lock")
}

/// Where `section.key` is written in `text` (1-based line and column), falling back to
/// the section's header; None when neither appears.
fn locate(text: &str, section: &str, key: &str) -> Option<(usize, usize)> {
    let mut current = String::new();
    let mut header = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let indent = raw.len() - line.len();
        if let Some(name) = line.strip_prefix('[') {
            current = name
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if current == section {
                header = Some((i + 1, indent + 1));
            }
            continue;
        }
        if current == section {
            let name = line
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            if name == key && line.contains('=') {
                return Some((i + 1, indent + 1));
            }
        }
    }
    header
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// Why `program` (runtime.docker, runtime.compose) cannot be run, if it cannot.
fn unusable_program(program: &Path) -> Option<String> {
    if !program.is_absolute() {
        return Some(format!(
            "{} is not an absolute path; give the binary's full path (e.g. /var/lib/toolbox/bin/docker-compose)",
            program.display()
        ));
    }
    match std::fs::metadata(program) {
        Err(e) => Some(format!(
            "{} cannot be used ({e}); give the path of the binary this server runs (`command -v docker-compose`, or the path your deploy scripts call)",
            program.display()
        )),
        Ok(_) if !crate::runtime::access::is_executable_file(program) => Some(format!(
            "{} is not an executable file; point it at the binary itself (chmod +x if needed)",
            program.display()
        )),
        Ok(_) => None,
    }
}

fn validate(c: &Config, text: &str, path: &Path) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| {
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
        ConfigError::Invalid {
            path: path.to_owned(),
            location: locate(text, section, name)
                .map(|(l, c)| format!(":{l}:{c}"))
                .unwrap_or_default(),
            key: key.to_string(),
            message,
        }
    };
    for (key, value) in [
        ("git.stable_tag", Some(c.git.stable_tag.as_str())),
        ("git.stable_prefix", Some(c.git.stable_prefix.as_str())),
        ("git.environment", c.git.environment.as_deref()),
        ("git.branch", c.git.branch.as_deref()),
    ] {
        if let Some(v) = value {
            if !is_ref_part(v) {
                return Err(invalid(
                    key,
                    format!("{v:?} cannot be part of a git tag or branch name; use letters, digits, '.', '_', '-' and '/'"),
                ));
            }
        }
    }
    if c.database.mode == DbMode::Compose && c.database.name.as_deref().unwrap_or("").is_empty() {
        return Err(invalid(
            "database.name",
            "compose mode needs the database name (for example name = \"app_db\")".into(),
        ));
    }
    if let Some(url) = &c.database.url {
        let parsed = crate::redact::SafeUrl::parse(url)
            .map_err(|e| invalid("database.url", format!("not a valid URL: {e}")))?;
        if parsed.password().is_some() || url.to_ascii_lowercase().contains("password=") {
            return Err(invalid(
                "database.url",
                "the URL carries a password; secrets never go in the config file: put the URL in the environment variable named by database.url_env (default DATABASE_URL) instead".into(),
            ));
        }
    }
    for (key, value) in [
        ("runtime.docker", &c.runtime.docker),
        ("runtime.compose", &c.runtime.compose),
    ] {
        if let Some(program) = value {
            if let Some(problem) = unusable_program(program) {
                return Err(invalid(key, problem));
            }
        }
    }
    if !(1..=19).contains(&c.backup.compression_level) {
        return Err(invalid(
            "backup.compression_level",
            format!(
                "{} is out of range: use 1 (fastest) to 19 (smallest); 3 is the default",
                c.backup.compression_level
            ),
        ));
    }
    for (i, probe) in c.health.http.iter().enumerate() {
        let parsed = crate::redact::SafeUrl::parse(&probe.url).map_err(|e| {
            invalid(
                "health.http.url",
                format!("probe {} has an invalid URL: {e}", i + 1),
            )
        })?;
        if let Some(pattern) = &probe.matches {
            if let Err(e) = regex::Regex::new(pattern) {
                return Err(invalid(
                    "health.matches",
                    format!("probe {} has an invalid regular expression: {e}", i + 1),
                ));
            }
        }
        if !matches!(parsed.inner().scheme(), "http" | "https") {
            return Err(invalid(
                "health.http.url",
                format!("probe {} must be an http:// or https:// URL", i + 1),
            ));
        }
    }
    if c.health.consecutive == 0 || c.health.interval.is_zero() || c.health.timeout.is_zero() {
        return Err(invalid(
            "health.consecutive",
            "consecutive, interval and timeout must be greater than zero".into(),
        ));
    }
    let r = &c.runtime;
    match r.kind {
        Some(RuntimeKind::Compose) => {
            for (key, set) in [
                ("runtime.build", r.build.is_some()),
                ("runtime.stop", r.stop.is_some()),
                ("runtime.start", r.start.is_some()),
            ] {
                if set {
                    return Err(invalid(key, "is for kind = \"command\"; with kind = \"compose\" stablehand builds, stops and starts runtime.services itself".into()));
                }
            }
        }
        Some(RuntimeKind::Command) => {
            if r.services.is_some() {
                return Err(invalid("runtime.services", "is for kind = \"compose\"; with kind = \"command\" set runtime.build, runtime.stop and runtime.start".into()));
            }
            if r.start.is_none() {
                return Err(invalid("runtime.kind", "kind = \"command\" needs runtime.start and runtime.stop (and optionally runtime.build)".into()));
            }
        }
        None => {}
    }
    if let Some(services) = &r.services {
        if services.iter().any(|s| s.is_empty()) {
            return Err(invalid(
                "runtime.services",
                "a service name is empty".into(),
            ));
        }
        if c.database.mode == DbMode::Compose && services.contains(&c.database.service) {
            return Err(invalid("runtime.services", format!("lists the database service {:?}: stablehand never stops or rebuilds the database with the app; remove it", c.database.service)));
        }
    }
    if r.keep_images == 0 {
        return Err(invalid(
            "runtime.keep_images",
            "must be at least 1: the images of the running release are always kept".into(),
        ));
    }
    if c.runtime.stop.is_some() != c.runtime.start.is_some() {
        return Err(invalid(
            if c.runtime.stop.is_some() { "runtime.start" } else { "runtime.stop" },
            "runtime.stop and runtime.start go together: an app that stablehand stops must be started again".into(),
        ));
    }
    if !matches!(c.database.migrations.as_str(), "prisma" | "none") {
        return Err(invalid(
            "database.migrations",
            format!(
                "{:?} is not known: use \"prisma\" or \"none\"",
                c.database.migrations
            ),
        ));
    }
    if c.database.migrations_dir.is_absolute()
        || c.database
            .migrations_dir
            .components()
            .any(|p| matches!(p, std::path::Component::ParentDir))
    {
        return Err(invalid(
            "database.migrations_dir",
            "must be a path inside the app directory (relative, no `..`): the down migrations are read from the deployed commit's tree".into(),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for r in &c.backup.remote {
        if r.name.is_empty()
            || !r
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
        {
            return Err(invalid(
                "backup.remote.name",
                format!("{:?}: use letters, digits, '-' and '_'", r.name),
            ));
        }
        if !names.insert(r.name.as_str()) {
            return Err(invalid(
                "backup.remote.name",
                format!("two remotes are named {:?}; names must be unique", r.name),
            ));
        }
        if let Err(why) = crate::remote::Location::parse(&r.url) {
            return Err(invalid(
                "backup.remote.url",
                format!("remote {:?}: {why}", r.name),
            ));
        }
        if let Some(e) = &r.endpoint {
            if e.starts_with("http://") && !r.allow_http {
                return Err(invalid(
                    "backup.remote.endpoint",
                    format!("remote {:?}: {e} is plain HTTP; set allow_http = true only for a local test endpoint", r.name),
                ));
            }
            if url::Url::parse(e).is_ok_and(|u| u.password().is_some() || !u.username().is_empty())
            {
                return Err(invalid(
                    "backup.remote.endpoint",
                    format!("remote {:?}: credentials never go in the config file; name the environment variables with access_key_id_env and secret_access_key_env", r.name),
                ));
            }
        }
        if r.keep_last == Some(0) && r.keep_within.is_none_or(|d| d.is_zero()) {
            return Err(invalid(
                "backup.remote.keep_last",
                format!(
                    "remote {:?}: keep_last = 0 without keep_within keeps nothing",
                    r.name
                ),
            ));
        }
    }
    if let Some(enc) = &c.backup.encryption {
        if enc.recipients.is_empty() {
            return Err(invalid(
                "backup.encryption.recipients",
                "list at least one age public key (age1...); `age-keygen -o key.txt` makes a key pair and prints its public key".into(),
            ));
        }
        for r in &enc.recipients {
            if let Err(why) = crate::backup::crypt::parse_recipient(r) {
                return Err(invalid("backup.encryption.recipients", why));
            }
        }
        if enc.encrypt_local && enc.identity_file.is_none() {
            return Err(invalid(
                "backup.encryption.encrypt_local",
                "encrypted local backups cannot be verified or restored without the key: set identity_file".into(),
            ));
        }
    }
    if c.database.on_rollback == crate::deploy::decision::DbPolicy::Down
        && c.database.migrations != "prisma"
    {
        return Err(invalid(
            "database.on_rollback",
            "\"down\" needs database.migrations = \"prisma\": down migrations are found through the _prisma_migrations ledger".into(),
        ));
    }
    for (key, env, file) in [
        (
            "notify.slack_webhook_env",
            &c.notify.slack_webhook_env,
            &c.notify.slack_webhook_file,
        ),
        (
            "notify.webhook_url_env",
            &c.notify.webhook_url_env,
            &c.notify.webhook_url_file,
        ),
    ] {
        if env.is_some() && file.is_some() {
            return Err(invalid(
                key,
                "set the variable or the file, not both".into(),
            ));
        }
        if let Some(name) = env {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                || name.contains("://")
            {
                return Err(invalid(key, "is not an environment variable name (letters, digits and _); the URL itself goes in the environment, e.g. SLACK_WEBHOOK_URL, and its name here".into()));
            }
        }
    }
    if c.notify.attempts == 0 || c.notify.timeout.is_zero() {
        return Err(invalid(
            "notify.attempts",
            "attempts and timeout must be greater than zero".into(),
        ));
    }
    for (key, expr) in [
        ("schedule.backup", &c.schedule.backup),
        ("schedule.verify", &c.schedule.verify),
        ("schedule.prune", &c.schedule.prune),
    ] {
        if let Some(expr) = expr {
            if let Err(e) = expr.parse::<croner::Cron>() {
                return Err(invalid(
                    key,
                    format!("{expr:?} is not a cron expression ({e}); write it like \"0 3 * * *\" (minute hour day month weekday, UTC)"),
                ));
            }
        }
    }
    if c.serve.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(invalid(
            "serve.listen",
            format!(
                "{:?} is not an address like \"127.0.0.1:9750\"",
                c.serve.listen
            ),
        ));
    }
    if c.database.keep_replaced_databases == 0 {
        return Err(invalid(
            "database.keep_replaced_databases",
            "must be at least 1: the database a restore replaces is always kept".into(),
        ));
    }
    if c.backup.timeout.is_zero() {
        return Err(invalid("backup.timeout", "must be longer than 0s".into()));
    }
    if crate::backup::retention::Policy::from_config(&c.backup).is_empty() {
        return Err(invalid(
            "backup.keep_last",
            "the retention policy keeps nothing (keep_last, keep_within, keep_daily, keep_weekly and keep_monthly are all 0); refusing a policy that would delete every backup".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, Path::new("stablehand.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[database]\nname = \"app\"\n", Path::new("x")).unwrap();
        assert_eq!(c.database.mode, DbMode::Compose);
        assert_eq!(c.database.service, "postgres");
        assert_eq!(c.backup.keep_last, 10);
        assert_eq!(c.backup.keep_within, Duration::from_secs(30 * 86400));
        assert_eq!(c.backup.dir, PathBuf::from("backups/database"));
    }

    #[test]
    fn a_config_without_database_says_what_the_section_is_for() {
        let msg = err("[git]\nremote = \"origin\"\n");
        assert!(
            msg.starts_with("stablehand.toml: database: the [database] section is missing"),
            "{msg}"
        );
        assert!(msg.contains("stablehand init"), "{msg}");
        assert!(!msg.contains("missing field"), "{msg}");
    }

    #[test]
    fn typo_names_line_column_and_valid_keys() {
        let msg = err("[database]\nname = \"app\"\n\n[backup]\nkeep_lats = 3\n");
        assert!(
            msg.starts_with("stablehand.toml:5:1: unknown field `keep_lats`"),
            "{msg}"
        );
        assert!(msg.contains("`keep_last`"), "{msg}");
        assert!(msg.contains("`keep_within`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let msg = err("[database]\nname = \"app\"\n[backup]\nkeep_last = \"ten\"\n");
        assert!(
            msg.starts_with("stablehand.toml:4:13: invalid type"),
            "{msg}"
        );
    }

    #[test]
    fn bad_duration_is_explained() {
        let msg = err("[database]\nname = \"app\"\n[backup]\ntimeout = \"soon\"\n");
        assert!(msg.contains("invalid duration \"soon\""), "{msg}");
        assert!(msg.contains(":4:"), "{msg}");
    }

    #[test]
    fn password_in_config_url_is_refused() {
        let msg = err("[database]\nmode = \"direct\"\nurl = \"postgres://u:pw@h/db\"\n");
        assert!(
            msg.starts_with("stablehand.toml:3:1: database.url:"),
            "{msg}"
        );
        assert!(!msg.contains("pw@"), "{msg}");
    }

    #[test]
    fn empty_policy_is_refused_at_its_line() {
        let msg = err("[database]\nname = \"a\"\n[backup]\nkeep_within = \"0s\"\nkeep_last = 0\n");
        assert!(
            msg.starts_with("stablehand.toml:5:1: backup.keep_last:"),
            "{msg}"
        );
        assert!(msg.contains("keeps nothing"), "{msg}");
    }

    #[test]
    fn out_of_range_level_names_its_line() {
        let msg = err("[database]\nname = \"a\"\n\n[backup]\n  compression_level = 40\n");
        assert!(
            msg.starts_with("stablehand.toml:5:3: backup.compression_level: 40 is out of range"),
            "{msg}"
        );
    }

    #[test]
    fn stop_without_start_is_refused() {
        let msg = err("[database]\nname = \"a\"\n[runtime]\nstop = \"systemctl stop app\"\n");
        assert!(
            msg.contains("runtime.start: runtime.stop and runtime.start go together"),
            "{msg}"
        );
    }

    #[test]
    fn runtime_kind_rules() {
        let db = "[database]\nname = \"a\"\n";
        let msg = err(&format!(
            "{db}[runtime]\nkind = \"compose\"\nstop = \"x\"\nstart = \"y\"\n"
        ));
        assert!(
            msg.contains("stablehand.toml:5:1: runtime.stop: is for kind = \"command\""),
            "{msg}"
        );
        let msg = err(&format!(
            "{db}[runtime]\nkind = \"command\"\nservices = [\"web\"]\n"
        ));
        assert!(
            msg.contains("runtime.services: is for kind = \"compose\""),
            "{msg}"
        );
        let msg = err(&format!("{db}[runtime]\nkind = \"command\"\n"));
        assert!(
            msg.contains("needs runtime.start and runtime.stop"),
            "{msg}"
        );
        let msg = err(&format!(
            "{db}[runtime]\nservices = [\"web\", \"postgres\"]\n"
        ));
        assert!(
            msg.contains("lists the database service \"postgres\""),
            "{msg}"
        );
        let msg = err(&format!("{db}[runtime]\nkeep_images = 0\n"));
        assert!(
            msg.contains("runtime.keep_images: must be at least 1"),
            "{msg}"
        );
        let msg = err(&format!("{db}[runtime]\nkind = \"docker\"\n"));
        assert!(msg.contains("compose") && msg.contains("command"), "{msg}");

        let dir = tempfile::tempdir().unwrap();
        let kind = |toml: &str| {
            parse(&format!("{db}{toml}"), Path::new("x"))
                .unwrap()
                .runtime
                .effective_kind(dir.path())
        };
        assert_eq!(kind(""), None, "no compose file, no commands: no runtime");
        assert_eq!(
            kind("[runtime]\nstart = \"a\"\nstop = \"b\"\n"),
            Some(RuntimeKind::Command)
        );
        std::fs::write(dir.path().join("compose.yaml"), "services: {}\n").unwrap();
        assert_eq!(kind(""), Some(RuntimeKind::Compose));
        assert_eq!(parse(db, Path::new("x")).unwrap().runtime.keep_images, 5);
    }

    #[test]
    fn an_invalid_body_regex_is_located() {
        let msg = err("[database]\nname = \"a\"\n[[health.http]]\nurl = \"http://127.0.0.1:1/\"\nmatches = \"ok(\"\n");
        assert!(
            msg.contains("health.matches: probe 1 has an invalid regular expression"),
            "{msg}"
        );
    }

    #[test]
    fn git_defaults_and_bad_tag_names() {
        let c = parse("[database]\nname = \"a\"\n", Path::new("x")).unwrap();
        assert_eq!(c.git.remote, "origin");
        assert_eq!(c.git.stable_tag, "latest-stable");
        assert_eq!(c.git.stable_prefix, "stable-");
        assert!(c.git.push);
        let msg = err("[database]\nname = \"a\"\n[git]\nenvironment = \"prod env\"\n");
        assert!(
            msg.starts_with("stablehand.toml:4:1: git.environment:"),
            "{msg}"
        );
    }

    #[test]
    fn remotes_and_encryption_are_checked() {
        let base = "[database]\nname = \"a\"\n";
        let ok = parse(
            &format!("{base}[[backup.remote]]\nname = \"s3\"\nurl = \"s3://bucket/app\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\nkeep_last = 3\n[[backup.remote]]\nname = \"nas\"\nurl = \"file:///mnt/nas/backups\"\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(ok.backup.remote.len(), 2);
        assert_eq!(ok.backup.remote[0].keep_last, Some(3));
        let msg = err(&format!("{base}[[backup.remote]]\nname = \"s3\"\nurl = \"s3://b\"\nendpoint = \"http://127.0.0.1:9000\"\n"));
        assert!(
            msg.contains("allow_http = true only for a local test endpoint"),
            "{msg}"
        );
        let msg = err(&format!(
            "{base}[[backup.remote]]\nname = \"x\"\nurl = \"ftp://host/dir\"\n"
        ));
        assert!(
            msg.contains("backup.remote.url") && msg.contains("ftp"),
            "{msg}"
        );
        let msg = err(&format!("{base}[[backup.remote]]\nname = \"a\"\nurl = \"s3://b\"\n[[backup.remote]]\nname = \"a\"\nurl = \"s3://c\"\n"));
        assert!(msg.contains("must be unique"), "{msg}");
        let msg = err(&format!(
            "{base}[[backup.remote]]\nname = \"a\"\nurl = \"s3://b\"\nsecret_access_key = \"x\"\n"
        ));
        assert!(msg.contains("unknown field `secret_access_key`"), "{msg}");
        let msg = err(&format!(
            "{base}[backup.encryption]\nrecipients = [\"age1nope\"]\n"
        ));
        assert!(
            msg.contains("backup.encryption.recipients") && msg.contains("age1nope"),
            "{msg}"
        );
        let msg = err(&format!("{base}[backup.encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\nencrypt_local = true\n"));
        assert!(msg.contains("set identity_file"), "{msg}");
        let msg = err("[database]\nname = \"a\"\n[schedule]\nbackup = \"every day\"\n");
        assert!(
            msg.contains("schedule.backup: \"every day\" is not a cron expression"),
            "{msg}"
        );
    }

    #[test]
    fn webhook_urls_never_go_in_the_config() {
        let msg = err("[database]\nname = \"a\"\n[notify]\nslack_webhook = \"https://hooks.slack.com/services/T/B/x\"\n");
        assert!(msg.contains("secrets never go in the config file"), "{msg}");
        assert!(msg.contains("slack_webhook_env"), "{msg}");
        let msg = err(
            "[database]\nname = \"a\"\n[notify]\nwebhook_url_env = \"https://example.test/hook\"\n",
        );
        assert!(msg.contains("is not an environment variable name"), "{msg}");
        assert!(
            !msg.contains("example.test"),
            "the value is not echoed: {msg}"
        );
    }

    #[test]
    fn secrets_are_masked_in_error_snippets() {
        let msg = err("[database]\nname = \"a\"\npasword = \"hunter2\"\n");
        assert!(msg.contains("unknown field `pasword`"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn docker_and_compose_paths_must_be_executables() {
        let msg = err(
            "[database]\nname = \"app\"\n[runtime]\ncompose = \"/nonexistent/docker-compose\"\n",
        );
        assert!(msg.contains("runtime.compose"), "{msg}");
        assert!(msg.contains("cannot be used"), "{msg}");
        let msg = err("[database]\nname = \"app\"\n[runtime]\ndocker = \"docker\"\n");
        assert!(
            msg.contains("runtime.docker") && msg.contains("not an absolute path"),
            "{msg}"
        );
        let plain = tempfile::NamedTempFile::new().unwrap();
        let msg = err(&format!(
            "[database]\nname = \"app\"\n[runtime]\ndocker = {:?}\n",
            plain.path().display().to_string()
        ));
        assert!(msg.contains("not an executable file"), "{msg}");
        let ok = parse(
            "[database]\nname = \"app\"\n[runtime]\ndocker = \"/bin/sh\"\nsudo = true\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert!(ok.runtime.sudo);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("4KiB"), Some(4096));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("lots"), None);
    }
}

/// docs/configuration.md cannot drift from the config types: every field of every
/// section struct is documented there.
#[cfg(test)]
mod docs_drift {
    #[test]
    fn every_key_is_documented() {
        let source = include_str!("config.rs");
        let docs = include_str!("../docs/configuration.md");
        let mut missing = Vec::new();
        let mut checked = 0;
        let mut in_struct = false;
        for line in source.lines() {
            let t = line.trim();
            if t.starts_with("pub struct ")
                && t.ends_with('{')
                && (t.contains("Config ") || t.contains("Config{"))
            {
                in_struct = !t.starts_with("pub struct Config ");
                continue;
            }
            if in_struct && t == "}" {
                in_struct = false;
                continue;
            }
            if in_struct {
                if let Some(field) = t.strip_prefix("pub ").and_then(|f| f.split(':').next()) {
                    checked += 1;
                    let documented = docs.contains(&format!("`{field}`"))
                        || docs.contains(&format!(".{field}`"))
                        || docs.contains(&format!("[[health.{field}]]"));
                    if !documented {
                        missing.push(field.to_string());
                    }
                }
            }
        }
        assert!(checked > 60, "the struct scan found only {checked} fields");
        assert!(
            missing.is_empty(),
            "keys missing from docs/configuration.md: {missing:?}"
        );
    }
}
