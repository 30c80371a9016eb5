//! Docker Compose, v2 (`docker compose`) or v1 (`docker-compose`), detected in that order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use super::access::{find_on_path, Docker};
use crate::config::RuntimeConfig;
use crate::process::{Cmd, ProcessError};

/// The project labels of apps' containers seen in this process (see
/// [`Compose::containers`]): later reads list containers with `docker ps` instead of a
/// (slow, on v1) `compose ps`.
type ProjectIdentity = (PathBuf, Option<String>, Vec<PathBuf>);
static PROJECT_LABELS: Remembered<ProjectIdentity, String> = Remembered::new();

/// Values this process remembers, by key: each costs a process start to learn again.
struct Remembered<K, V>(std::sync::Mutex<Vec<(K, V)>>);

impl<K: PartialEq, V: Clone> Remembered<K, V> {
    const fn new() -> Self {
        Remembered(std::sync::Mutex::new(Vec::new()))
    }

    fn get(&self, key: &K) -> Option<V> {
        let known = self.0.lock().expect("a process cache");
        known.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut known = self.0.lock().expect("a process cache");
        known.retain(|(k, _)| *k != key);
        known.push((key, value));
    }
}

/// A container id remembered until a Compose command may have replaced containers
/// (see [`CONTAINERS_CHANGED`]); `lookup` runs otherwise, and only an id it finds is
/// remembered (a container being created is looked up again).
fn remembered_container<K: PartialEq>(
    cache: &Remembered<K, (u64, String)>,
    key: K,
    lookup: impl FnOnce() -> Option<String>,
) -> Option<String> {
    let now = CONTAINERS_CHANGED.load(std::sync::atomic::Ordering::SeqCst);
    if let Some((_, id)) = cache.get(&key).filter(|(at, _)| *at == now) {
        return Some(id);
    }
    let id = lookup()?;
    cache.put(key, (now, id.clone()));
    Some(id)
}

/// Counts the Compose commands that may have created, replaced or removed containers.
static CONTAINERS_CHANGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
    /// How docker and Compose are reached (binaries, sudo).
    pub access: Docker,
    /// The standalone binary run, or None for the `docker compose` plugin.
    pub binary: Option<PathBuf>,
    /// What `version` printed (first line), for reports.
    pub version: String,
    app_dir: PathBuf,
    project: Option<String>,
    files: Vec<PathBuf>,
}

/// The flavor a standalone Compose binary's `version` output names: v2 prints "Docker
/// Compose version v2.24.0", v1 "docker-compose version 1.29.2, build ...".
pub fn flavor_of_version(output: &str) -> Flavor {
    let version = output
        .split_whitespace()
        .skip_while(|w| !w.eq_ignore_ascii_case("version"))
        .nth(1)
        .unwrap_or("");
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1);
    if major >= 2 {
        Flavor::V2
    } else {
        Flavor::V1
    }
}

impl Compose {
    /// `runtime.compose` when set; otherwise `docker compose`, then `docker-compose` on
    /// PATH. A clear error when none works.
    pub fn detect(app_dir: &Path, runtime: &RuntimeConfig) -> anyhow::Result<Compose> {
        let access = Docker::from_config(app_dir, runtime);
        let (flavor, binary, version) = detected(&access)?;
        Ok(Compose {
            flavor,
            access,
            binary,
            version,
            app_dir: app_dir.to_owned(),
            project: runtime.project.clone(),
            files: runtime.files.clone(),
        })
    }
}

impl Compose {
    /// The same Compose on other files and another project (a release beside the
    /// running one: see `runtime::colour`).
    pub fn for_project(&self, files: Vec<PathBuf>, project: &str) -> Compose {
        Compose {
            files,
            project: Some(project.to_string()),
            ..self.clone()
        }
    }
}

/// The running container of `service` in Compose project `project`, found by the labels
/// Compose gives its containers (`docker ps`, no Compose run), remembered as
/// [`Compose::service_container`] remembers its own; None when none is running.
pub fn container_by_labels(docker: &Docker, project: &str, service: &str) -> Option<String> {
    static KNOWN: Remembered<(Docker, String, String), (u64, String)> = Remembered::new();
    let key = (docker.clone(), project.to_string(), service.to_string());
    remembered_container(&KNOWN, key, || {
        let out = docker
            .docker(["ps", "--quiet", "--no-trunc"])
            .args([
                "--filter",
                &format!("label=com.docker.compose.project={project}"),
            ])
            .args([
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
            ])
            .args(["--filter", "label=com.docker.compose.oneoff=False"])
            .timeout(Duration::from_secs(60))
            .output()
            .ok()?;
        container_ids(&out).first().map(|s| s.to_string())
    })
}

/// Which Compose `access` reaches, asked once per process (each `version` costs a
/// process start: 0.3-0.5 s for Compose v1) and remembered with the PATH it was found on.
fn detected(access: &Docker) -> anyhow::Result<(Flavor, Option<PathBuf>, String)> {
    type Found = (Flavor, Option<PathBuf>, String);
    static FOUND: Remembered<(Docker, Option<std::ffi::OsString>), Found> = Remembered::new();
    let key = (access.clone(), std::env::var_os("PATH"));
    if let Some(found) = FOUND.get(&key) {
        return Ok(found);
    }
    let found = probe_compose(access)?;
    FOUND.put(key, found.clone());
    Ok(found)
}

/// Runs `version` on the Compose `access` names, else on the `docker compose` plugin, else
/// on `docker-compose`.
fn probe_compose(access: &Docker) -> anyhow::Result<(Flavor, Option<PathBuf>, String)> {
    let probe = |cmd: Cmd| {
        cmd.timeout(Duration::from_secs(20))
            .output()
            .map(|out| out.lines().next().unwrap_or("").trim().to_string())
    };
    let (flavor, binary, version) = if let Some(binary) = &access.compose {
        match probe(access.program(binary).arg("version")) {
            Ok(v) => (flavor_of_version(&v), Some(binary.clone()), v),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "runtime.compose = {:?} does not run (`{} version` failed)",
                    binary.display(),
                    access.describe(binary)
                )))
            }
        }
    } else {
        match probe(access.docker(["compose", "version"])) {
            Ok(v) => (Flavor::V2, None, v),
            // sudo refused: say what to add to sudoers, not that Compose is missing.
            Err(
                e @ (ProcessError::Interrupted { .. }
                | ProcessError::SudoPassword { .. }
                | ProcessError::SudoEnvironment { .. }),
            ) => return Err(e.into()),
            Err(v2_error) => {
                // Through sudo, the one on our PATH (what the sudoers rule names).
                let v1 = access
                    .sudo
                    .then(|| find_on_path("docker-compose"))
                    .flatten()
                    .unwrap_or_else(|| PathBuf::from("docker-compose"));
                match probe(access.program(&v1).arg("version")) {
                    Ok(v) => (Flavor::V1, Some(v1), v),
                    // Cut short by an interrupt: say that, not that Compose is missing.
                    Err(e @ ProcessError::Interrupted { .. }) => return Err(e.into()),
                    Err(v1_error) => bail!(
                        "neither `docker compose` (v2) nor `docker-compose` (v1) works on this machine \
                         (docker compose: {v2_error}; docker-compose: {v1_error}); install the Docker Compose \
                         plugin (or docker-compose), set runtime.compose to the path of the Compose binary \
                         this server uses, or use database.mode = \"direct\""
                    ),
                }
            }
        }
    };
    Ok((flavor, binary, version))
}

impl Compose {
    /// `docker compose [-f F]... [-p P] <args>` run in the app directory.
    pub fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let files: Vec<PathBuf> = self.files.iter().map(|f| self.app_dir.join(f)).collect();
        self.cmd_for(&files, self.project.as_deref(), args)
    }

    /// `compose` on other files and another project (a second release beside the
    /// first: see `runtime::colour`), run in the app directory.
    pub fn cmd_for<I, S>(&self, files: &[PathBuf], project: Option<&str>, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = match &self.binary {
            None => self.access.docker(["compose"]),
            Some(binary) => self.access.compose_program(binary),
        };
        for f in files {
            cmd = cmd.arg("-f").arg(f);
        }
        if let Some(p) = project {
            cmd = cmd.arg("-p").arg(p);
        }
        let args: Vec<S> = args.into_iter().collect();
        let reads_only = args.first().is_some_and(|a| {
            matches!(
                a.as_ref().to_str(),
                Some(
                    "ps" | "config"
                        | "version"
                        | "images"
                        | "logs"
                        | "ls"
                        | "port"
                        | "top"
                        | "exec"
                        | "build"
                        | "pull"
                )
            )
        });
        if !reads_only {
            // It may create, replace or remove containers: ids looked up so far may be gone.
            CONTAINERS_CHANGED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        cmd.args(args).current_dir(&self.app_dir)
    }

    /// The id of `service`'s container (None when it has none), looked up with
    /// `compose ps -q` once per process and again only after a Compose command that may
    /// have replaced containers (each `compose ps` costs 0.3-0.5 s on Compose v1).
    pub fn service_container(&self, service: &str) -> Option<String> {
        static KNOWN: Remembered<(ProjectIdentity, String), (u64, String)> = Remembered::new();
        remembered_container(&KNOWN, (self.identity(), service.to_string()), || {
            let ids = self
                .cmd(["ps", "-q", service])
                .timeout(Duration::from_secs(60))
                .output()
                .ok()?;
            container_ids(&ids).first().map(|s| s.to_string())
        })
    }

    /// `docker ARGS`, reached the way Compose is (same binary, same sudo).
    pub fn docker<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.access.docker(args)
    }

    /// How Compose is run, for reports: `docker compose`, `/usr/bin/docker-compose`,
    /// `sudo -n /var/lib/toolbox/bin/docker-compose`.
    pub fn describe(&self) -> String {
        match &self.binary {
            None => format!("{} compose", self.access.describe(&self.access.docker)),
            Some(b) => self.access.describe(b),
        }
    }
}

/// What the Compose files declare, as far as stablehand needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSpec {
    /// The project name Compose uses (and prefixes default image names with).
    pub name: String,
    pub services: Vec<ServiceSpec>,
}

/// One service of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// Has a `build:` section: stablehand builds, tags and retains its image.
    pub build: bool,
    /// The image the service runs: its `image:`, or the name Compose gives a built image.
    pub image: String,
}

impl ProjectSpec {
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Parses `compose config` output (YAML on v1 and v2). `default_project` is the name
/// Compose picks when the output does not say (v1 never does).
pub fn parse_config(
    yaml: &str,
    flavor: Flavor,
    default_project: &str,
) -> anyhow::Result<ProjectSpec> {
    let doc: serde_norway::Value =
        serde_norway::from_str(yaml).context("reading the output of `compose config`")?;
    let name = doc
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or(default_project)
        .to_string();
    let separator = match flavor {
        Flavor::V1 => "_",
        Flavor::V2
            if std::env::var("COMPOSE_COMPATIBILITY").is_ok_and(|v| v == "true" || v == "1") =>
        {
            "_"
        }
        Flavor::V2 => "-",
    };
    let mut services = Vec::new();
    if let Some(map) = doc.get("services").and_then(|s| s.as_mapping()) {
        for (key, spec) in map {
            let Some(service) = key.as_str() else {
                continue;
            };
            let image = spec.get("image").and_then(|i| i.as_str());
            services.push(ServiceSpec {
                name: service.to_string(),
                build: spec.get("build").is_some(),
                image: match image {
                    Some(i) => i.to_string(),
                    None => format!("{name}{separator}{service}"),
                },
            });
        }
    }
    if services.is_empty() {
        bail!("the Compose files define no services");
    }
    Ok(ProjectSpec { name, services })
}

/// Compose's default project name for a directory: lowercased, with only letters,
/// digits, '-' and '_' kept.
pub fn normalize_project_name(raw: &str) -> String {
    raw.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

impl Compose {
    /// The project as Compose sees it (`compose config`, parsed).
    pub fn project_spec(&self) -> anyhow::Result<ProjectSpec> {
        // The output is kept in memory only: interpolated env values may be secrets.
        let yaml = self.resolved_config()?;
        parse_config(&yaml, self.flavor, &self.default_project_name())
    }

    /// Compose's resolved config (`compose config`), as YAML. It holds interpolated
    /// values (secrets among them): keep it in memory, or in a 0600 file.
    pub fn resolved_config(&self) -> anyhow::Result<String> {
        self.cmd(["config"])
            .timeout(Duration::from_secs(60))
            .output()
            .context("reading the Compose files (`compose config`)")
    }

    /// `-p`, else `COMPOSE_PROJECT_NAME`, else the directory of the first compose file.
    pub fn default_project_name(&self) -> String {
        if let Some(p) = &self.project {
            return normalize_project_name(p);
        }
        if let Ok(p) = std::env::var("COMPOSE_PROJECT_NAME") {
            if !p.is_empty() {
                return normalize_project_name(&p);
            }
        }
        let dir = match self.files.first() {
            Some(f) => self
                .app_dir
                .join(f)
                .parent()
                .map(Path::to_owned)
                .unwrap_or_else(|| self.app_dir.clone()),
            None => self.app_dir.clone(),
        };
        let dir = dir.canonicalize().unwrap_or(dir);
        normalize_project_name(
            &dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    }

    /// Fails with what to do when the Docker engine does not answer.
    pub fn ensure_engine(&self) -> anyhow::Result<()> {
        // Asked once per process: an engine that answered goes on answering.
        static ANSWERED: Remembered<Docker, ()> = Remembered::new();
        if ANSWERED.get(&self.access).is_some() {
            return Ok(());
        }
        self.engine_answers()?;
        ANSWERED.put(self.access.clone(), ());
        Ok(())
    }

    fn engine_answers(&self) -> anyhow::Result<()> {
        self.docker(["info", "--format", "{{.ServerVersion}}"])
            .timeout(Duration::from_secs(20))
            .output()
            .map(drop)
            .map_err(|e| match e {
                // sudo's own refusal already says what to do.
                e @ (ProcessError::SudoPassword { .. } | ProcessError::SudoEnvironment { .. }) => {
                    anyhow::Error::new(e)
                }
                e => anyhow::Error::new(e).context("the Docker engine does not answer; start it (e.g. `systemctl start docker`) and check that this user may use it (`docker info`; a user outside the docker group sets runtime.sudo = true)"),
            })
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

/// One container of the project: which service, which image, when it last started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The Compose project label.
    pub project: String,
    pub service: String,
    pub id: String,
    /// The image reference it was created from (`Config.Image`), as the Compose file
    /// named it when the container was made.
    pub image: String,
    /// `State.StartedAt`; None when it never started.
    pub started_at: Option<String>,
}

/// `docker inspect` format read by `parse_containers`: tab-separated, image last.
const CONTAINER_FORMAT: &str = "{{.Id}}\t{{.State.StartedAt}}\t{{index .Config.Labels \"com.docker.compose.project\"}}\t{{index .Config.Labels \"com.docker.compose.service\"}}\t{{index .Config.Labels \"com.docker.compose.oneoff\"}}\t{{.Config.Image}}";

/// Parses `CONTAINER_FORMAT` lines; containers without a service label and one-off
/// containers are left out.
pub fn parse_containers(out: &str) -> Vec<Container> {
    out.lines()
        .filter_map(|line| {
            let mut fields = line.trim_end().split('\t');
            let id = fields.next()?.trim();
            let started_at = fields.next()?.trim();
            let project = fields.next()?.trim();
            let service = fields.next()?.trim();
            let oneoff = fields.next()?.trim();
            let image = fields.next()?.trim();
            if id.is_empty() || service.is_empty() || oneoff.eq_ignore_ascii_case("true") {
                return None;
            }
            Some(Container {
                project: project.to_string(),
                service: service.to_string(),
                id: id.to_string(),
                image: image.to_string(),
                // Docker's zero time marks a container created but never started.
                started_at: (!started_at.is_empty() && !started_at.starts_with("0001-"))
                    .then(|| started_at.to_string()),
            })
        })
        .collect()
}

/// The container ids in the output of `ps -q` (one per line, blank lines skipped).
fn container_ids(out: &str) -> Vec<&str> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

impl Compose {
    /// The containers of `services`, read with [`Compose::containers`] and `docker
    /// inspect` (the same on Compose v1 and v2).
    pub fn container_states(&self, services: &[String]) -> anyhow::Result<Vec<ContainerState>> {
        // The project's containers, stopped ones included (a replica that exited must
        // count, not vanish): `docker ps` by project label once it is known, so each
        // round of the gate costs no (slow, on v1) `compose ps`.
        let all = self.containers()?;
        let mut states = Vec::new();
        for service in services {
            let ids: Vec<&str> = all
                .iter()
                .filter(|c| c.service == *service)
                .map(|c| c.id.as_str())
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
                let out = self
                    .docker([
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

    /// The project's service containers, stopped ones included (one-off `compose run`
    /// containers left out), read with `compose ps --all -q` (then, once their project
    /// label is known, `docker ps` filtered by it) and one `docker inspect`.
    pub fn containers(&self) -> anyhow::Result<Vec<Container>> {
        let ids = match self.project_label() {
            Some(project) => self
                .docker(["ps", "--all", "--quiet", "--no-trunc", "--filter"])
                .arg(format!("label=com.docker.compose.project={project}"))
                .timeout(Duration::from_secs(60))
                .output()
                .context("listing the app's containers (docker ps)")?,
            None => self
                .cmd(["ps", "--all", "-q"])
                .timeout(Duration::from_secs(60))
                .output()
                .context("listing the app's containers (compose ps)")?,
        };
        let ids = container_ids(&ids);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .docker(["inspect", "--format", CONTAINER_FORMAT])
            .args(&ids)
            .timeout(Duration::from_secs(60))
            .output()
            .context("reading the app's containers (docker inspect)")?;
        let containers = parse_containers(&out);
        if let Some(c) = containers.iter().find(|c| !c.project.is_empty()) {
            self.learn_project_label(&c.project);
        }
        Ok(containers)
    }

    /// The project label of the app's containers, once [`Compose::containers`] has seen
    /// one in this process (any `Compose` of the same app directory, project and files).
    fn project_label(&self) -> Option<String> {
        PROJECT_LABELS.get(&self.identity())
    }

    fn learn_project_label(&self, label: &str) {
        PROJECT_LABELS.put(self.identity(), label.to_string());
    }

    /// What names this app's Compose project: its directory, `-p` and `-f` files.
    fn identity(&self) -> ProjectIdentity {
        (
            self.app_dir.clone(),
            self.project.clone(),
            self.files.clone(),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "services:\n  db:\n    image: postgres:15\n  api:\n    build:\n      context: /srv/app\n    image: acme/api:2\n  web:\n    build:\n      context: /srv/app/web\nversion: '2.4'\n";

    #[test]
    fn v1_config_names_images_with_underscore() {
        let spec = parse_config(V1, Flavor::V1, "myapp").unwrap();
        assert_eq!(spec.name, "myapp");
        let web = spec.service("web").unwrap();
        assert!(web.build);
        assert_eq!(web.image, "myapp_web");
        assert_eq!(spec.service("api").unwrap().image, "acme/api:2");
        assert!(!spec.service("db").unwrap().build);
    }

    #[test]
    fn v2_config_carries_the_project_name_and_uses_a_dash() {
        let yaml = format!("name: shop\n{V1}");
        let spec = parse_config(&yaml, Flavor::V2, "ignored").unwrap();
        assert_eq!(spec.name, "shop");
        assert_eq!(spec.service("web").unwrap().image, "shop-web");
    }

    #[test]
    fn no_services_is_an_error() {
        assert!(parse_config("version: '3'\n", Flavor::V1, "x").is_err());
        assert!(parse_config(": : :", Flavor::V1, "x").is_err());
    }

    #[test]
    fn containers_are_read_from_inspect_lines() {
        let out = "aaa\t2026-12-01T10:00:00.5Z\tshop\tweb\tFalse\tshop_web\n\
                   bbb\t0001-01-01T00:00:00Z\tshop\tsidecar\tFalse\tshop-sidecar:2\n\
                   ccc\t2026-12-01T10:00:01Z\tshop\tweb\tTrue\tshop_web\n\
                   ddd\t2026-12-01T10:00:01Z\t\t\t\tother\n";
        let containers = parse_containers(out);
        assert_eq!(
            containers,
            [
                Container {
                    project: "shop".into(),
                    service: "web".into(),
                    id: "aaa".into(),
                    image: "shop_web".into(),
                    started_at: Some("2026-12-01T10:00:00.5Z".into()),
                },
                Container {
                    project: "shop".into(),
                    service: "sidecar".into(),
                    id: "bbb".into(),
                    image: "shop-sidecar:2".into(),
                    started_at: None,
                },
            ]
        );
    }

    #[test]
    fn standalone_compose_flavor_is_read_from_its_version() {
        assert_eq!(
            flavor_of_version("docker-compose version 1.29.2, build unknown"),
            Flavor::V1
        );
        assert_eq!(
            flavor_of_version("Docker Compose version v2.24.6"),
            Flavor::V2
        );
        assert_eq!(
            flavor_of_version("Docker Compose version 2.27.0"),
            Flavor::V2
        );
        assert_eq!(flavor_of_version("garbage"), Flavor::V1);
    }

    #[test]
    fn project_names_are_normalized_as_compose_does() {
        assert_eq!(normalize_project_name("My.App"), "myapp");
        assert_eq!(normalize_project_name("shop_v2-x"), "shop_v2-x");
    }
}
