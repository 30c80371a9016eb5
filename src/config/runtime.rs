//! `[runtime]`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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
