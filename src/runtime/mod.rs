//! The app's runtime: Docker Compose services (v2 or v1) or plain shell commands.
//! The operations a deploy and a rollback call: build (while the old containers keep
//! serving), stop the app (never the database service), start it, switch to a commit's
//! retained images without a rebuild, and prune images down to the configured set.
//!
//! A deploy must start the release it gates. Image-only services (`image:`, no `build:`)
//! whose image the checked-out commit changes are pulled when missing and stopped and
//! started with the app for that deploy; a deploy that would restart nothing is refused,
//! and a start after which no app container started is an error.

pub mod access;
pub mod colour;
pub mod compose;
pub mod images;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::{DbMode, Loaded, RuntimeKind};
use crate::process::Cmd;
use compose::{Compose, Container, ContainerState, ProjectSpec};
use images::{BuildRecord, PrunePlan};

/// Limit for building the app.
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);
/// Limit for stopping or starting the app.
const APP_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Limit for pulling one service's image.
const PULL_TIMEOUT: Duration = Duration::from_secs(1800);

/// What runs the app.
pub enum Runtime {
    Compose(Box<ComposeApp>),
    Command(CommandApp),
    /// No runtime configured or detected: stablehand leaves the app alone.
    None,
}

/// An app run as Compose services.
pub struct ComposeApp {
    pub compose: Compose,
    pub spec: ProjectSpec,
    /// The app services stablehand builds, stops and starts (`runtime.services`, or the
    /// services with a `build:` section).
    pub services: Vec<String>,
    /// The database service (compose database mode): never stopped, pulled or started.
    db_service: Option<String>,
    /// Image-only services whose image the checked-out commit changes: stopped and
    /// started with `services` from the build (or switch) that found them on.
    repointed: Mutex<Vec<ImageChange>>,
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
    /// Image-only services whose image the commit changes: they are restarted too.
    pub image_changes: Vec<ImageChange>,
    pub took_ms: u64,
}

/// An image-only service (`image:`, no `build:`) whose image reference in the
/// checked-out commit differs from the one its container was created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageChange {
    pub service: String,
    /// What its container runs now (`Config.Image`).
    pub from: String,
    /// What the commit's Compose files name.
    pub to: String,
    /// Pulled because it was not on this host.
    pub pulled: bool,
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
                Ok(Runtime::Compose(Box::new(ComposeApp {
                    compose,
                    spec,
                    services,
                    db_service: db_service.map(str::to_string),
                    repointed: Mutex::new(Vec::new()),
                    keep_images: r.keep_images as usize,
                    state_dir: loaded.state_dir(),
                })))
            }
        }
    }

    /// Builds the app at the checked-out commit `commit` while the running app keeps
    /// serving, tags the built images for the commit, and pulls the images of image-only
    /// services the commit changes (which the following stop and start then include).
    /// Refuses when the start that follows would restart nothing: no runtime, an empty
    /// `runtime.start`, or no Compose service to stop and start.
    pub fn build(&self, commit: &str) -> anyhow::Result<BuildReport> {
        let started = Instant::now();
        let (tagged, image_changes) = match self {
            Runtime::Compose(app) => app.build(commit)?,
            Runtime::Command(app) => {
                if app.start.trim().is_empty() {
                    bail!(
                        "runtime.start is empty: nothing would start the new release, so the health gate would judge the app that already runs; set runtime.start and runtime.stop to the commands that restart the app"
                    );
                }
                if let Some(build) = &app.build {
                    app.run("build", build, BUILD_TIMEOUT)?;
                }
                (Vec::new(), Vec::new())
            }
            Runtime::None => bail!(
                "no runtime is configured: nothing would start the new release, so the health gate would judge the app that already runs; add a Compose file or set runtime.start and runtime.stop (`start = \"true\"` and `stop = \"true\"` when checking out the code is the whole release)"
            ),
        };
        Ok(BuildReport {
            commit: commit.to_string(),
            tagged,
            image_changes,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Stops the app (not the database); false when there is nothing stablehand stops.
    pub fn stop_app(&self) -> anyhow::Result<bool> {
        match self {
            Runtime::Compose(app) if !app.active_services().is_empty() => {
                let services = app.active_services();
                tracing::info!(?services, "stopping the app");
                app.compose
                    .cmd(
                        ["stop"]
                            .into_iter()
                            .chain(services.iter().map(String::as_str)),
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

    /// Starts (or recreates) the app with the images it has, never building. With
    /// Compose, an error when afterwards no app container started (the health gate would
    /// judge containers of an earlier start) or a changed image-only service still runs
    /// its old image.
    pub fn start_app(&self) -> anyhow::Result<()> {
        match self {
            Runtime::Compose(app) if !app.active_services().is_empty() => app.start(),
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
        // The abandoned build's image-only changes are not started; their containers
        // never stopped.
        app.repointed_mut().clear();
        for s in app.built_services() {
            let retained = images::commit_tag(&s.image, commit);
            if images::image_id(&app.compose.access, &retained)?.is_some() {
                images::tag(&app.compose.access, &retained, &s.image)?;
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
            if images::image_id(&app.compose.access, &target)?.is_some() {
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
            let image = app
                .compose
                .docker(["inspect", "--format", "{{.Image}}", container])
                .timeout(APP_COMMAND_TIMEOUT)
                .output()?;
            images::tag(&app.compose.access, image.trim(), &target)?;
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
            present.extend(images::commits_tagged(
                &app.compose.access,
                images::split_repo_tag(&s.image).0,
            )?);
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
                if images::image_id(&app.compose.access, &reference)?.is_none() {
                    continue;
                }
                match images::untag(&app.compose.access, &reference) {
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
    /// The services stop, start and switch act on: `services`, then the image-only
    /// services whose image the checked-out commit changes.
    pub fn active_services(&self) -> Vec<String> {
        let mut all = self.services.clone();
        for change in self.repointed_mut().iter() {
            if !all.contains(&change.service) {
                all.push(change.service.clone());
            }
        }
        all
    }

    fn repointed_mut(&self) -> std::sync::MutexGuard<'_, Vec<ImageChange>> {
        // The list stays valid whatever a panicking holder did: recover it.
        self.repointed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The image-only app services (never the database service) whose image in
    /// `target` (the checked-out commit's Compose config) differs from the image their
    /// containers were created from. A service with no container is left out: the
    /// running release does not run it, so no old container can pass for it.
    fn image_changes(&self, target: &ProjectSpec, containers: &[Container]) -> Vec<ImageChange> {
        let mut changes = Vec::new();
        for s in &target.services {
            let is_db = Some(s.name.as_str()) == self.db_service.as_deref();
            if s.build {
                continue;
            }
            let Some(old) = containers
                .iter()
                .find(|c| c.service == s.name && !images::same_reference(&c.image, &s.image))
            else {
                continue;
            };
            if is_db {
                tracing::warn!(
                    "the database service {} runs {} and the Compose files now name {}: stablehand never restarts the database; upgrade it separately",
                    s.name,
                    old.image,
                    s.image
                );
                continue;
            }
            changes.push(ImageChange {
                service: s.name.clone(),
                from: old.image.clone(),
                to: s.image.clone(),
                pulled: false,
            });
        }
        changes
    }

    /// Pulls each changed image this host does not have (`compose pull SERVICE`).
    fn pull_missing(&self, changes: &mut [ImageChange]) -> anyhow::Result<()> {
        for change in changes {
            if images::image_id(&self.compose.access, &change.to)?.is_some() {
                continue;
            }
            tracing::info!(service = change.service, image = change.to, "pulling");
            let pulled = self
                .compose
                .cmd(["pull", change.service.as_str()])
                .timeout(PULL_TIMEOUT)
                .output();
            let present =
                pulled.is_ok() && images::image_id(&self.compose.access, &change.to)?.is_some();
            if !present {
                let why = match pulled {
                    Err(e) => format!("{e}"),
                    Ok(_) => "the pull finished but Docker has no such image".into(),
                };
                bail!(
                    "could not pull image {} for service {} (the Compose files changed its `image:` from {}): {why}; push the image to its registry (or build or load it on this host), run `docker login` if the registry needs it, or correct the tag",
                    change.to,
                    change.service,
                    change.from
                );
            }
            change.pulled = true;
        }
        Ok(())
    }

    /// Finds (in the checked-out commit) the image-only services whose image changes,
    /// pulls what is missing, and adds them to the services acted on.
    fn repoint_image_only_services(&self) -> anyhow::Result<Vec<ImageChange>> {
        let target = self.compose.project_spec()?;
        let containers = self.compose.containers()?;
        let mut changes = self.image_changes(&target, &containers);
        // Services repointed earlier in this run (the deploy's build, before a rollback's
        // switch) stay acted on, now with the image the checked-out commit names.
        for earlier in self.repointed_mut().iter() {
            if changes.iter().any(|c| c.service == earlier.service) {
                continue;
            }
            if let Some(s) = target.service(&earlier.service).filter(|s| !s.build) {
                let from = containers
                    .iter()
                    .find(|c| c.service == s.name)
                    .map_or(earlier.to.clone(), |c| c.image.clone());
                changes.push(ImageChange {
                    service: s.name.clone(),
                    from,
                    to: s.image.clone(),
                    pulled: false,
                });
            }
        }
        if !changes.is_empty() {
            tracing::info!(
                "image-only services restarted with the app for this commit: {}",
                changes
                    .iter()
                    .map(|c| format!("{} ({} -> {})", c.service, c.from, c.to))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.pull_missing(&mut changes)?;
        }
        *self.repointed_mut() = changes.clone();
        Ok(changes)
    }

    /// Errors when a repointed service's containers do not run the image its commit names.
    fn check_repointed(&self, containers: &[Container]) -> anyhow::Result<()> {
        for change in self.repointed_mut().iter() {
            if let Some(stale) = containers.iter().find(|c| {
                c.service == change.service && !images::same_reference(&c.image, &change.to)
            }) {
                bail!(
                    "service {} still runs image {} after `compose up` (the Compose files name {}); run `docker compose up -d {}` by hand to see why Compose did not recreate it",
                    change.service,
                    stale.image,
                    change.to,
                    change.service
                );
            }
        }
        Ok(())
    }

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
        let build = || {
            self.compose
                .cmd(["build"].into_iter().chain(names.iter().copied()))
                .timeout(BUILD_TIMEOUT)
                .output()
        };
        let mut result = build();
        // Docker's legacy builder can pick a cached layer that the engine is deleting
        // at that moment (an image removal elsewhere takes its untagged parents): the
        // build then fails with "unable to find image sha256:...". That is transient:
        // build once more (the cache lookup then skips the deleted layer).
        if let Err(e) = &result {
            if e.to_string().contains("unable to find image \"sha256:")
                && !crate::process::interrupted()
            {
                tracing::warn!("the build hit a cached layer being deleted; building again");
                result = build();
            }
        }
        result.with_context(|| format!("building {} (compose build)", names.join(", ")))?;
        Ok(())
    }

    fn build(&self, commit: &str) -> anyhow::Result<(Vec<String>, Vec<ImageChange>)> {
        let changes = self.repoint_image_only_services()?;
        if self.active_services().is_empty() {
            bail!(
                "nothing would start the new release: no app service has a `build:` section and this release changes no service's `image:`, so the health gate would judge the containers that already run; list the services that run the app in runtime.services (every deploy then stops and starts them)"
            );
        }
        let services = self.built_services();
        self.build_services(&services)?;
        let mut tagged = Vec::new();
        for s in &services {
            if images::image_id(&self.compose.access, &s.image)?.is_none() {
                bail!(
                    "compose built service {} but no image {} exists; give the service an explicit `image:` name in the Compose file",
                    s.name,
                    s.image
                );
            }
            let target = images::commit_tag(&s.image, commit);
            images::tag(&self.compose.access, &s.image, &target)?;
            tagged.push(target);
        }
        if !tagged.is_empty() {
            BuildRecord::note(&self.state_dir, commit)?;
        }
        Ok((tagged, changes))
    }

    fn up(&self) -> anyhow::Result<()> {
        let services = self.active_services();
        tracing::info!(?services, "starting the app");
        self.compose
            .cmd(
                ["up", "-d", "--no-build"]
                    .into_iter()
                    .chain(services.iter().map(String::as_str)),
            )
            .timeout(APP_COMMAND_TIMEOUT)
            .cleanup()
            .output()
            .context("starting the app services (compose up -d --no-build)")?;
        Ok(())
    }

    /// `up`, then proof that it started something: some app container started after
    /// (or was created since) the moment before `up`, and the repointed services run
    /// their new images.
    fn start(&self) -> anyhow::Result<()> {
        let services = self.active_services();
        let ours = |c: &Container| services.contains(&c.service);
        let before: Vec<Container> = self
            .compose
            .containers()?
            .into_iter()
            .filter(ours)
            .collect();
        self.up()?;
        let after: Vec<Container> = self
            .compose
            .containers()?
            .into_iter()
            .filter(ours)
            .collect();
        if !started_any(&before, &after) {
            bail!(
                "nothing was restarted: `compose up` of {} started no container, so the health gate would judge containers of an earlier start; check `docker compose ps`, and list the services that run the app in runtime.services",
                services.join(", ")
            );
        }
        self.check_repointed(&after)
    }

    fn switch_to(&self, commit: &str) -> anyhow::Result<(Vec<ServiceImage>, bool)> {
        self.compose.ensure_engine()?;
        // Image-only services go back to the image the commit names (pulled if gone).
        self.repoint_image_only_services()?;
        let mut report = Vec::new();
        let mut missing = Vec::new();
        for s in self.built_services() {
            let retained = images::commit_tag(&s.image, commit);
            if images::image_id(&self.compose.access, &retained)?.is_some() {
                images::tag(&self.compose.access, &retained, &s.image)?;
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
                images::tag(&self.compose.access, &s.image, &target)?;
                report.push(ServiceImage {
                    service: s.name.clone(),
                    image: target,
                    source: "rebuilt".into(),
                });
            }
            BuildRecord::note(&self.state_dir, commit)?;
        }
        for change in self.repointed_mut().iter() {
            report.push(ServiceImage {
                service: change.service.clone(),
                image: change.to.clone(),
                source: if change.pulled { "pulled" } else { "present" }.into(),
            });
        }
        if !self.active_services().is_empty() {
            self.up()?;
            self.check_repointed(&self.compose.containers()?)?;
        }
        Ok((report, rebuilt))
    }

    /// The state of the app services' containers.
    pub fn container_states(&self) -> anyhow::Result<Vec<ContainerState>> {
        self.compose.container_states(&self.services)
    }
}

/// Whether some container in `after` is new or started again since `before`.
fn started_any(before: &[Container], after: &[Container]) -> bool {
    after.iter().any(|c| {
        c.started_at.is_some()
            && !before
                .iter()
                .any(|b| b.id == c.id && b.started_at == c.started_at)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, started_at: Option<&str>) -> Container {
        Container {
            project: "shop".into(),
            service: "web".into(),
            id: id.into(),
            image: "shop-web".into(),
            started_at: started_at.map(str::to_string),
        }
    }

    #[test]
    fn a_start_counts_only_when_a_container_started_anew() {
        let before = [c("a", Some("t1")), c("b", None)];
        assert!(!started_any(&before, &before), "nothing changed");
        assert!(started_any(&before, &[c("a", Some("t2"))]), "restarted");
        assert!(started_any(&before, &[c("z", Some("t1"))]), "recreated");
        assert!(
            !started_any(&before, &[c("z", None)]),
            "created, never started"
        );
        assert!(started_any(&[], &[c("a", Some("t1"))]), "first start");
        assert!(!started_any(&before, &[]), "removed");
    }
}
