//! `[proxy]`: the traffic switch in front of the app (`stablehand proxy run`), and how a
//! deploy uses it (blue/green or a maintenance window).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// How a deploy puts the release in place: auto (blue/green when the old code can
    /// run beside the release's migrations, a maintenance window otherwise), blue_green
    /// or maintenance (forced). `deploy --strategy` overrides it.
    #[serde(default)]
    pub strategy: Strategy,
    /// The port the new release serves on while it is gated and watched (on 127.0.0.1);
    /// default: proxy.upstream's port + 1.
    pub port: Option<u16>,
    /// The environment variable the app reads its listen port from (host networking).
    #[serde(default = "default_port_env")]
    pub port_env: String,
    /// The port the app listens on inside its container (bridge networks): the new
    /// release's is published on 127.0.0.1:proxy.port. Unset: proxy.port_env is used.
    pub container_port: Option<u16>,
    /// How long the old release stays warm after the switch while the new one is
    /// watched; 0s: no watch.
    #[serde(default = "default_watch", deserialize_with = "de_duration")]
    pub watch: Duration,
    /// Failed requests (5xx or unreachable) of the new release during the watch that
    /// switch traffic back to the old release.
    #[serde(default = "default_watch_errors")]
    pub watch_errors: u64,
    /// How long requests in flight on the old release may take to finish after a switch.
    #[serde(default = "default_drain", deserialize_with = "de_duration")]
    pub drain: Duration,
    /// Event loops (threads) of `stablehand proxy run`; 0: half the CPUs, at least one
    /// (the proxy shares the machine with the app and its database).
    #[serde(default)]
    pub workers: usize,
}

/// `proxy.strategy` / `deploy --strategy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Blue/green when the release's migrations are additive, maintenance otherwise.
    #[default]
    Auto,
    /// Start the release beside the running one, gate it, switch traffic.
    #[value(name = "blue_green")]
    BlueGreen,
    /// Answer 503 (maintenance) while the old release stops and the new one starts.
    Maintenance,
}

impl ProxyConfig {
    /// The new release's port while it is gated.
    pub fn next_port(&self) -> u16 {
        self.port.unwrap_or_else(|| {
            self.upstream
                .parse::<std::net::SocketAddr>()
                .map(|a| a.port().wrapping_add(1))
                .unwrap_or(0)
        })
    }

    /// How many event loops the proxy runs.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }

    /// The new release's address (host:port) while it is gated.
    pub fn next_upstream(&self) -> String {
        format!("127.0.0.1:{}", self.next_port())
    }
}

fn default_retry_after() -> Duration {
    Duration::from_secs(30)
}
fn default_port_env() -> String {
    "PORT".into()
}
fn default_watch() -> Duration {
    Duration::from_secs(600)
}
fn default_watch_errors() -> u64 {
    5
}
fn default_drain() -> Duration {
    Duration::from_secs(30)
}
