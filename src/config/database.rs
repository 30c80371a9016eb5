//! `[database]`.

use std::path::PathBuf;

use serde::Deserialize;

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
    pub on_rollback: DbPolicy,
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
fn default_on_rollback() -> DbPolicy {
    DbPolicy::Auto
}

fn default_keep_replaced() -> u32 {
    2
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

/// `--db` on the command line, or `database.on_rollback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DbPolicy {
    /// Roll the database back only when the deploy changed it.
    Auto,
    /// Always return the database to its pre-deploy state.
    Restore,
    /// As auto, and say loudly when down migrations cannot be used (auto also prefers
    /// them when every applied migration has a `down.sql`).
    Down,
    /// Never touch the database.
    None,
}
