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
