//! `stablehand.toml`: types, defaults, and errors that point at the file, line and
//! column and list the valid keys. Secrets never live here: the database URL comes from
//! an environment variable (`database.url_env`) or, without a password, from `url`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod backup;
mod database;
#[cfg(test)]
mod docs_drift;
mod errors;
mod git;
mod health;
mod proxy;
mod runtime;
mod serve;
#[cfg(test)]
mod tests;
mod validate;
mod values;

pub use backup::*;
pub use database::*;
pub use git::*;
pub use health::*;
pub use proxy::*;
pub use runtime::*;
pub use serve::*;
pub use values::parse_size;

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
    /// The traffic switch; none: deploys stop the old release before the new one starts.
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
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
    let config: Config = toml::from_str(text).map_err(|e| errors::parse_error(text, path, &e))?;
    validate::validate(&config, text, path)?;
    Ok(config)
}
