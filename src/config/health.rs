//! `[health]` and its `[[health.http]]` probes.

use std::time::Duration;

use serde::Deserialize;

use super::values::de_duration;

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
