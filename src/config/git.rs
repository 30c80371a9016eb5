//! `[git]`.

use serde::Deserialize;

use super::values::default_true;

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
