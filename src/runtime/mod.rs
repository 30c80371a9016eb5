//! The app's runtime: Docker Compose services (v2 or v1) or plain shell commands.
//! The operations a deploy and a rollback call: build (while the old containers keep
//! serving), stop the app (never the database service), start it, switch to a commit's
//! retained images without a rebuild, and prune images down to the configured set.

pub mod compose;
pub mod images;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::{DbMode, Loaded, RuntimeKind};
use crate::process::Cmd;
use compose::{Compose, ContainerState, ProjectSpec};
use images::{BuildRecord, PrunePlan};

/// Limit for building the app.
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);
/// Limit for stopping or starting the app.
const APP_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// What runs the app.
pub enum Runtime {
    Compose(ComposeApp),
    Command(CommandApp),
    /// No runtime configured or detected: stablehand leaves the app alone.
    None,
}

/// An app run as Compose services.
pub struct ComposeApp {
    pub compose: Compose,
    pub spec: ProjectSpec,
    /// The app services stablehand builds, stops and starts.
    pub services: Vec<String>,
    keep_images: usize,
    state_dir: PathBuf,
}

/// An app run by shell commands.
pub struct CommandApp {
    app_dir: PathBuf,
    build: Option<String>,
    stop: String,
    start: String,
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub commit: String,
    /// Images tagged for the commit (`repo:sh-<sha12>`).
    pub tagged: Vec<String>,
    pub took_ms: u64,
}

/// How one service got its image when switching to a commit.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceImage {
    pub service: String,
    pub image: String,
    /// "retained" (re-tagged, no build) or "rebuilt" (no image was kept for the commit).
    pub source: String,
}

/// What a switch to a commit did.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchReport {
    pub commit: String,
    pub images: Vec<ServiceImage>,
    pub rebuilt: bool,
    pub took_ms: u64,
}

/// What pruning kept and removed, by commit, and what could not be removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImagePrune {
    pub plan: PrunePlan,
    pub removed: Vec<String>,
    pub problems: Vec<String>,
}

impl Runtime {
    /// The runtime the config describes (`runtime.kind`, or detected).
    pub fn load(loaded: &Loaded) -> anyhow::Result<Runtime> {
        let r = &loaded.config.runtime;
        match r.effective_kind(&loaded.app_dir) {
            None => Ok(Runtime::None),
            Some(RuntimeKind::Command) => Ok(Runtime::Command(CommandApp {
                app_dir: loaded.app_dir.clone(),
                build: r.build.clone(),
                stop: r.stop.clone().unwrap_or_default(),
                start: r.start.clone().unwrap_or_default(),
            })),
            Some(RuntimeKind::Compose) => {
                let compose = Compose::detect(&loaded.app_dir, r)?;
                let spec = compose.project_spec()?;
                let db_service = (loaded.config.database.mode == DbMode::Compose)
                    .then_some(loaded.config.database.service.as_str());
                let services = match &r.services {
                    Some(list) => {
                        for name in list {
                            if spec.service(name).is_none() {
                                bail!(
                                    "runtime.services names {name:?}, which the Compose files do not define (they define: {})",
                                    spec.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                                );
                            }
                        }
                        list.clone()
                    }
                    None => spec
                        .services
                        .iter()
                        .filter(|s| s.build && Some(s.name.as_str()) != db_service)
                        .map(|s| s.name.clone())
                        .collect(),
                };
                Ok(Runtime::Compose(ComposeApp {
                    compose,
                    spec,
                    services,
                    keep_images: r.keep_images as usize,
                    state_dir: loaded.state_dir(),
                }))
            }
        }
    }

    /// Builds the app at the checked-out commit `commit` while the running app keeps
    /// serving, and tags the built images for the commit.
    pub fn build(&self, commit: &str) -> anyhow::Result<BuildReport> {
        let started = Instant::now();
        let tagged = match self {
            Runtime::Compose(app) => app.build(commit)?,
            Runtime::Command(app) => {
                if let Some(build) = &app.build {
                    app.run("build", build, BUILD_TIMEOUT)?;
                }
                Vec::new()
            }
            Runtime::None => Vec::new(),
        };
        Ok(BuildReport {
            commit: commit.to_string(),
            tagged,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Stops the app (not the database); false when there is nothing stablehand stops.
    pub fn stop_app(&self) -> anyhow::Result<bool> {
        match self {
            Runtime::Compose(app) if !app.services.is_empty() => {
                tracing::info!(services = ?app.services, "stopping the app");
                app.compose
                    .cmd(
                        ["stop"]
                            .into_iter()
                            .chain(app.services.iter().map(String::as_str)),
                    )
                    .timeout(APP_COMMAND_TIMEOUT)
                    .cleanup()
                    .output()
                    .context("stopping the app services (compose stop)")?;
                Ok(true)
            }
            Runtime::Command(app) => app
                .run("stop", &app.stop, APP_COMMAND_TIMEOUT)
                .map(|()| true),
            _ => Ok(false),
        }
    }

    /// Starts (or recreates) the app with the images it has, never building.
    pub fn start_app(&self) -> anyhow::Result<()> {
        match self {
            Runtime::Compose(app) if !app.services.is_empty() => app.up(),
            Runtime::Command(app) => app.run("start", &app.start, APP_COMMAND_TIMEOUT),
            _ => Ok(()),
        }
    }

    /// Runs the app of `commit` (already checked out): its retained images when they
    /// exist (re-tagged as the names Compose runs, then `up --no-build`), a build only
    /// for services whose images are gone, saying so.
    pub fn switch_to(&self, commit: &str) -> anyhow::Result<SwitchReport> {
        let started = Instant::now();
        let (images, rebuilt) = match self {
            Runtime::Compose(app) => app.switch_to(commit)?,
            Runtime::Command(_) => {
                self.build(commit)?;
                self.start_app()?;
                (Vec::new(), true)
            }
            Runtime::None => (Vec::new(), false),
        };
        Ok(SwitchReport {
            commit: commit.to_string(),
            images,
            rebuilt,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Points the image names Compose runs back at `commit`'s retained images (after a
    /// build that is abandoned), without building or starting anything. Services with no
    /// image retained for `commit` are left as they are.
    pub fn restore_image_names(&self, commit: &str) -> anyhow::Result<()> {
        let Runtime::Compose(app) = self else {
            return Ok(());
        };
        for s in app.built_services() {
            let retained = images::commit_tag(&s.image, commit);
            if images::image_id(&retained)?.is_some() {
                images::tag(&retained, &s.image)?;
            }
        }
        Ok(())
    }

    /// Tags the images the app's containers run now as `commit`'s, when none are tagged
    /// for it yet: the release running before stablehand's first deploy can be rolled
    /// back to without a build. Returns the tags made.
    pub fn adopt_running(&self, commit: &str) -> anyhow::Result<Vec<String>> {
        let Runtime::Compose(app) = self else {
            return Ok(Vec::new());
        };
        let mut made = Vec::new();
        for service in app.built_services() {
            let target = images::commit_tag(&service.image, commit);
            if images::image_id(&target)?.is_some() {
                continue;
            }
            let ids = app
                .compose
                .cmd(["ps", "-q", service.name.as_str()])
                .timeout(APP_COMMAND_TIMEOUT)
                .output()?;
            let Some(container) = ids.lines().map(str::trim).find(|l| !l.is_empty()) else {
                continue;
            };
            let image = Cmd::new("docker")
                .args(["inspect", "--format", "{{.Image}}", container])
                .timeout(APP_COMMAND_TIMEOUT)
                .output()?;
            images::tag(image.trim(), &target)?;
            made.push(target);
        }
        if !made.is_empty() {
            BuildRecord::note(&app.state_dir, commit)?;
        }
        Ok(made)
    }

    /// Removes commit tags beyond the newest `keep_images` builds, never those of
    /// `protected` commits (latest-stable, the running release).
    pub fn prune_images(&self, protected: &[String]) -> anyhow::Result<ImagePrune> {
        let Runtime::Compose(app) = self else {
            return Ok(ImagePrune::default());
        };
        let services = app.built_services();
        let mut present = Vec::new();
        for s in &services {
            present.extend(images::commits_tagged(images::split_repo_tag(&s.image).0)?);
        }
        let record = BuildRecord::load(&app.state_dir)?;
        let plan = images::plan_prune(&present, &record.commits(), app.keep_images, protected);
        let mut out = ImagePrune {
            plan,
            ..Default::default()
        };
        for commit in &out.plan.prune {
            for s in &services {
                let reference = images::commit_tag(&s.image, commit);
                if images::image_id(&reference)?.is_none() {
                    continue;
                }
                match images::untag(&reference) {
                    Ok(()) => out.removed.push(reference),
                    Err(e) => {
                        tracing::warn!("{e:#}");
                        out.problems.push(format!("{e:#}"));
                    }
                }
            }
        }
        Ok(out)
    }

    /// `compose`, `command` or `none`, for reports.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Runtime::Compose(_) => "compose",
            Runtime::Command(_) => "command",
            Runtime::None => "none",
        }
    }
}

impl ComposeApp {
    /// The app services that have a `build:` section: their images are built and kept.
    fn built_services(&self) -> Vec<&compose::ServiceSpec> {
        self.services
            .iter()
            .filter_map(|name| self.spec.service(name))
            .filter(|s| s.build)
            .collect()
    }

    fn build_services(&self, which: &[&compose::ServiceSpec]) -> anyhow::Result<()> {
        if which.is_empty() {
            return Ok(());
        }
        self.compose.ensure_engine()?;
        let names: Vec<&str> = which.iter().map(|s| s.name.as_str()).collect();
        tracing::info!(services = ?names, "building");
        self.compose
            .cmd(["build"].into_iter().chain(names.iter().copied()))
            .timeout(BUILD_TIMEOUT)
            .output()
            .with_context(|| format!("building {} (compose build)", names.join(", ")))?;
        Ok(())
    }

    fn build(&self, commit: &str) -> anyhow::Result<Vec<String>> {
        let services = self.built_services();
        self.build_services(&services)?;
        let mut tagged = Vec::new();
        for s in &services {
            if images::image_id(&s.image)?.is_none() {
                bail!(
                    "compose built service {} but no image {} exists; give the service an explicit `image:` name in the Compose file",
                    s.name,
                    s.image
                );
            }
            let target = images::commit_tag(&s.image, commit);
            images::tag(&s.image, &target)?;
            tagged.push(target);
        }
        if !tagged.is_empty() {
            BuildRecord::note(&self.state_dir, commit)?;
        }
        Ok(tagged)
    }

    fn up(&self) -> anyhow::Result<()> {
        tracing::info!(services = ?self.services, "starting the app");
        self.compose
            .cmd(
                ["up", "-d", "--no-build"]
                    .into_iter()
                    .chain(self.services.iter().map(String::as_str)),
            )
            .timeout(APP_COMMAND_TIMEOUT)
            .cleanup()
            .output()
            .context("starting the app services (compose up -d --no-build)")?;
        Ok(())
    }

    fn switch_to(&self, commit: &str) -> anyhow::Result<(Vec<ServiceImage>, bool)> {
        self.compose.ensure_engine()?;
        let mut report = Vec::new();
        let mut missing = Vec::new();
        for s in self.built_services() {
            let retained = images::commit_tag(&s.image, commit);
            if images::image_id(&retained)?.is_some() {
                images::tag(&retained, &s.image)?;
                report.push(ServiceImage {
                    service: s.name.clone(),
                    image: retained,
                    source: "retained".into(),
                });
            } else {
                missing.push(s);
            }
        }
        let rebuilt = !missing.is_empty();
        if rebuilt {
            let names: Vec<&str> = missing.iter().map(|s| s.name.as_str()).collect();
            tracing::warn!(
                "no retained image of {} for {}: rebuilding them (slower than a rollback to a retained release)",
                names.join(", "),
                crate::git::abbrev(commit, 12)
            );
            self.build_services(&missing)?;
            for s in &missing {
                let target = images::commit_tag(&s.image, commit);
                images::tag(&s.image, &target)?;
                report.push(ServiceImage {
                    service: s.name.clone(),
                    image: target,
                    source: "rebuilt".into(),
                });
            }
            BuildRecord::note(&self.state_dir, commit)?;
        }
        if !self.services.is_empty() {
            self.up()?;
        }
        Ok((report, rebuilt))
    }

    /// The state of the app services' containers.
    pub fn container_states(&self) -> anyhow::Result<Vec<ContainerState>> {
        self.compose.container_states(&self.services)
    }
}

impl CommandApp {
    fn run(&self, what: &str, command: &str, limit: Duration) -> anyhow::Result<()> {
        tracing::info!(command, "{what} the app");
        Cmd::new("sh")
            .args(["-c", command])
            .current_dir(&self.app_dir)
            .timeout(limit)
            .cleanup()
            .output()
            .with_context(|| format!("{what} the app (runtime.{what}: {command:?})"))?;
        Ok(())
    }
}
