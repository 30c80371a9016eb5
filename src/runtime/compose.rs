//! Docker Compose, v2 (`docker compose`) or v1 (`docker-compose`), detected in that order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;

use crate::config::RuntimeConfig;
use crate::process::Cmd;

/// Which Compose the machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Flavor {
    /// `docker compose` (the plugin).
    V2,
    /// `docker-compose` (the Python tool).
    V1,
}

/// A Compose invocation prefix for one project.
#[derive(Debug, Clone)]
pub struct Compose {
    pub flavor: Flavor,
    app_dir: PathBuf,
    project: Option<String>,
    files: Vec<PathBuf>,
}

impl Compose {
    /// Detects `docker compose` then `docker-compose`; a clear error when neither works.
    pub fn detect(app_dir: &Path, runtime: &RuntimeConfig) -> anyhow::Result<Compose> {
        let probe = |cmd: Cmd| cmd.timeout(Duration::from_secs(20)).output();
        let v2 = probe(Cmd::new("docker").args(["compose", "version"]));
        let flavor = match v2 {
            Ok(_) => Flavor::V2,
            Err(v2_error) => match probe(Cmd::new("docker-compose").arg("version")) {
                Ok(_) => Flavor::V1,
                Err(v1_error) => bail!(
                    "neither `docker compose` (v2) nor `docker-compose` (v1) works on this machine \
                     (docker compose: {v2_error}; docker-compose: {v1_error}); install the Docker Compose \
                     plugin (or docker-compose), or use database.mode = \"direct\""
                ),
            },
        };
        Ok(Compose {
            flavor,
            app_dir: app_dir.to_owned(),
            project: runtime.project.clone(),
            files: runtime.files.clone(),
        })
    }

    /// `docker compose [-f F]... [-p P] <args>` run in the app directory.
    pub fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = match self.flavor {
            Flavor::V2 => Cmd::new("docker").arg("compose"),
            Flavor::V1 => Cmd::new("docker-compose"),
        };
        for f in &self.files {
            cmd = cmd.arg("-f").arg(self.app_dir.join(f));
        }
        if let Some(p) = &self.project {
            cmd = cmd.arg("-p").arg(p);
        }
        cmd.args(args).current_dir(&self.app_dir)
    }
}

/// One container of a service, as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerState {
    pub service: String,
    /// Short container id; empty when the service has no container.
    pub id: String,
    /// running, restarting, exited, ... or "missing".
    pub status: String,
    /// healthy, unhealthy, starting, or None without a healthcheck.
    pub health: Option<String>,
    pub restarts: u32,
    pub started_at: String,
}

impl ContainerState {
    /// Running, and healthy when it has a healthcheck.
    pub fn is_ok(&self) -> bool {
        self.status == "running" && self.health.as_deref().is_none_or(|h| h == "healthy")
    }
}

impl Compose {
    /// The containers of `services`, read with `ps -q` and `docker inspect` (the same on
    /// Compose v1 and v2).
    pub fn container_states(&self, services: &[String]) -> anyhow::Result<Vec<ContainerState>> {
        let mut states = Vec::new();
        for service in services {
            // --all: a replica that exited must count, not vanish from the list.
            let ids = self
                .cmd(["ps", "--all", "-q", service.as_str()])
                .timeout(Duration::from_secs(60))
                .output()?;
            let ids: Vec<&str> = ids
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            if ids.is_empty() {
                states.push(ContainerState {
                    service: service.clone(),
                    id: String::new(),
                    status: "missing".into(),
                    health: None,
                    restarts: 0,
                    started_at: String::new(),
                });
                continue;
            }
            for id in ids {
                let out = Cmd::new("docker")
                    .args([
                        "inspect",
                        "--format",
                        "{{.RestartCount}} {{json .State}}",
                        id,
                    ])
                    .timeout(Duration::from_secs(60))
                    .output()?;
                let (count, json) = out.trim().split_once(' ').unwrap_or(("0", "{}"));
                let state: serde_json::Value = serde_json::from_str(json)?;
                states.push(ContainerState {
                    service: service.clone(),
                    id: crate::git::abbrev(id, 12).to_string(),
                    status: state["Status"].as_str().unwrap_or("unknown").to_string(),
                    health: state["Health"]["Status"].as_str().map(str::to_string),
                    restarts: count.parse().unwrap_or(0),
                    started_at: state["StartedAt"].as_str().unwrap_or("").to_string(),
                });
            }
        }
        Ok(states)
    }

    /// The last `lines` log lines of a service, for reports (URL passwords and
    /// `password=` values redacted).
    pub fn logs_tail(&self, service: &str, lines: u32) -> anyhow::Result<String> {
        let logs = self
            .cmd(["logs", "--no-color", "--tail", &lines.to_string(), service])
            .timeout(Duration::from_secs(60))
            .output()?;
        Ok(crate::redact::redact_text(&logs))
    }
}
