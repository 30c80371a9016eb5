//! `[proxy]`: the traffic switch in front of the app (`stablehand proxy run`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::de_duration;

/// `[proxy]`: where users' traffic arrives and where the running release serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The address users' traffic arrives on (the app's public address).
    pub listen: String,
    /// Where the running release serves until a deploy switches traffic elsewhere
    /// (host:port on this machine).
    pub upstream: String,
    /// `Retry-After` of the maintenance response (503).
    #[serde(default = "default_retry_after", deserialize_with = "de_duration")]
    pub retry_after: Duration,
    /// An HTML page (relative to the app directory) sent with the maintenance 503.
    pub maintenance_page: Option<PathBuf>,
}

fn default_retry_after() -> Duration {
    Duration::from_secs(30)
}
