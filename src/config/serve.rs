//! `[serve]`, `[schedule]`, `[metrics]`, `[alerts]` and `[notify]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::de_duration;

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
