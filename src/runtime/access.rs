//! How stablehand reaches Docker and Compose on this server: which binaries
//! (`runtime.docker`, `runtime.compose`, else the ones on PATH) and whether through
//! `sudo -n` (`runtime.sudo`), the way a deploy user outside the `docker` group runs
//! them. Through sudo, the environment variables Docker and Compose read pass by name
//! (`--preserve-env=NAMES`): no value, and so no secret, reaches the command line.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_norway::Value;

use crate::config::{RuntimeConfig, COMPOSE_FILE_NAMES};
use crate::process::Cmd;

/// Prefixes of the variables the Docker CLI and Compose read from their environment.
const ENGINE_ENV_PREFIXES: &[&str] = &["COMPOSE_", "DOCKER_", "BUILDKIT_"];

/// The way to run `docker` and a standalone Compose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Docker {
    /// The docker CLI: `runtime.docker`; else, through sudo, the `docker` on PATH as an
    /// absolute path (what the sudoers rule names; sudo's own PATH could find another);
    /// else `docker`.
    pub docker: PathBuf,
    /// `runtime.compose`: a standalone Compose binary (v1 or v2), used instead of
    /// `docker compose` and the `docker-compose` on PATH.
    pub compose: Option<PathBuf>,
    /// `runtime.sudo`: run both through `sudo -n`.
    pub sudo: bool,
    /// Names of the variables passed through sudo (those set in this environment).
    pub preserve: Vec<String>,
}

impl Docker {
    /// The access `runtime` describes for the app in `app_dir`.
    pub fn from_config(app_dir: &Path, runtime: &RuntimeConfig) -> Docker {
        Docker {
            docker: runtime
                .docker
                .clone()
                .or_else(|| runtime.sudo.then(|| find_on_path("docker")).flatten())
                .unwrap_or_else(|| PathBuf::from("docker")),
            compose: runtime.compose.clone(),
            sudo: runtime.sudo,
            preserve: if runtime.sudo {
                env_names_to_preserve(app_dir, runtime, |n| std::env::var_os(n).is_some())
            } else {
                Vec::new()
            },
        }
    }

    /// `program` (the docker CLI or a Compose binary), through sudo when configured.
    pub fn program(&self, program: impl AsRef<OsStr>) -> Cmd {
        let cmd = Cmd::new(program);
        if self.sudo {
            cmd.via_sudo(self.preserve.clone())
        } else {
            cmd
        }
    }

    /// A standalone Compose binary. Compose runs the docker CLI itself (v1 builds with
    /// it), found on PATH: the configured `runtime.docker` goes first there. (Through
    /// sudo, PATH is sudo's `secure_path`, which holds the usual docker.)
    pub fn compose_program(&self, binary: &Path) -> Cmd {
        let cmd = self.program(binary);
        match self
            .docker
            .parent()
            .filter(|_| self.docker.is_absolute() && !self.sudo)
        {
            Some(dir) => {
                let mut dirs = vec![dir.to_owned()];
                if let Some(path) = std::env::var_os("PATH") {
                    dirs.extend(std::env::split_paths(&path));
                }
                match std::env::join_paths(dirs) {
                    Ok(path) => cmd.env("PATH", path),
                    Err(_) => cmd,
                }
            }
            None => cmd,
        }
    }

    /// `docker ARGS`.
    pub fn docker<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.program(&self.docker)
            .args(args)
            .not_found_hint("install Docker, or set runtime.docker to the docker CLI's path")
    }

    /// How the docker CLI is reached, for reports: `/usr/bin/docker` or
    /// `sudo -n /usr/bin/docker`.
    pub fn describe(&self, program: &Path) -> String {
        if self.sudo {
            format!("sudo -n {}", program.display())
        } else {
            program.display().to_string()
        }
    }
}

/// The first executable `name` in PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable_file(p))
}

pub use crate::files::is_executable_file;

/// The Compose files whose variables matter: `runtime.files`, else those of Compose's
/// standard names (and their overrides) that exist.
fn compose_files(app_dir: &Path, runtime: &RuntimeConfig) -> Vec<PathBuf> {
    if !runtime.files.is_empty() {
        return runtime.files.iter().map(|f| app_dir.join(f)).collect();
    }
    COMPOSE_FILE_NAMES
        .iter()
        .flat_map(|name| {
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, "yml"));
            [name.to_string(), format!("{stem}.override.{ext}")]
        })
        .map(|name| app_dir.join(name))
        .filter(|p| p.is_file())
        .collect()
}

/// The variables set here (`is_set`) that Docker or Compose read: every `COMPOSE_*`,
/// `DOCKER_*` and `BUILDKIT_*` one, those the Compose files interpolate (`$NAME`,
/// `${NAME...}`) and those a service takes from the environment by name (`environment:
/// [NAME]`, build args without a value). Sorted, no duplicates.
pub fn env_names_to_preserve(
    app_dir: &Path,
    runtime: &RuntimeConfig,
    is_set: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| ENGINE_ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect();
    for file in compose_files(app_dir, runtime) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        names.extend(referenced_variables(&text));
    }
    // PATH stays sudo's secure_path, and sudo strips the loader's variables anyway.
    names.retain(|n| {
        is_env_name(n)
            && !matches!(n.as_str(), "PATH" | "IFS" | "SHELL" | "PWD" | "OLDPWD")
            && !n.starts_with("LD_")
            && is_set(n)
    });
    names.sort();
    names.dedup();
    names
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variable names a Compose file reads from the environment (pure): interpolated
/// ones, and `environment` entries and build args given by name only.
pub fn referenced_variables(yaml: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = yaml.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        // `$$` is a literal dollar sign.
        if bytes.get(i + 1) == Some(&b'$') {
            i += 2;
            continue;
        }
        let start = if bytes.get(i + 1) == Some(&b'{') {
            i + 2
        } else {
            i + 1
        };
        let end = bytes[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(bytes.len(), |n| start + n);
        if end > start {
            names.push(yaml[start..end].to_string());
        }
        i = end.max(i + 1);
    }
    if let Ok(doc) = serde_norway::from_str::<Value>(yaml) {
        if let Some(Value::Mapping(services)) = doc.get("services") {
            for (_, service) in services {
                names.extend(by_name_only(service.get("environment")));
                names.extend(by_name_only(
                    service.get("build").and_then(|b| b.get("args")),
                ));
            }
        }
    }
    names
}

/// Entries of a Compose list or map that carry a name and no value.
fn by_name_only(section: Option<&Value>) -> Vec<String> {
    match section {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|i| !i.contains('='))
            .map(|i| i.trim().to_string())
            .collect(),
        Some(Value::Mapping(map)) => map
            .iter()
            .filter(|(_, v)| v.is_null())
            .filter_map(|(k, _)| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// One doctor finding: (check, Ok(detail) or Err((blocking, detail, fix))).
pub type DoctorFinding = (&'static str, Result<String, (bool, String, String)>);

/// The first line a `version` subcommand prints, or its error.
fn first_line(cmd: Cmd) -> Result<String, String> {
    cmd.timeout(Duration::from_secs(20))
        .output()
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
        .map_err(|e| e.to_string())
}

/// Doctor's findings about Docker access: (check, Ok(detail) or Err((blocking, detail,
/// fix))). Through sudo: that sudo runs the docker CLI without a password, and passes
/// the variables Compose needs.
pub fn doctor_findings(docker: &Docker) -> Vec<DoctorFinding> {
    let mut found = Vec::new();
    if !docker.sudo {
        return found;
    }
    let plain = docker.program(&docker.docker).via_sudo(Vec::new()).args([
        "version",
        "--format",
        "{{.Server.Version}}",
    ]);
    let sudoers = format!(
        "add a sudoers rule, e.g. /etc/sudoers.d/stablehand: `{} ALL=(root) NOPASSWD:SETENV: {}{}` (visudo -f to edit it)",
        current_user(),
        docker.docker.display(),
        docker
            .compose
            .as_ref()
            .map(|c| format!(", {}", c.display()))
            .unwrap_or_default()
    );
    found.push((
        "sudo",
        first_line(plain)
            .map(|v| {
                format!(
                    "sudo -n {} runs without a password (engine {v})",
                    docker.docker.display()
                )
            })
            .map_err(|e| (true, e, sudoers.clone())),
    ));
    if !docker.preserve.is_empty() {
        let with_env = docker.docker(["version", "--format", "{{.Server.Version}}"]);
        found.push((
            "sudo environment",
            first_line(with_env)
                .map(|_| format!("sudo passes {} by name", docker.preserve.join(", ")))
                .map_err(|e| (true, e, sudoers)),
        ));
    }
    found
}

/// The name of the user stablehand runs as.
pub fn current_user() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// The compose binary the repository's CI workflows or scripts call (the first
/// absolute path ending in `/docker-compose`), for `init`.
pub fn compose_named_in_repository(app_dir: &Path) -> Option<PathBuf> {
    let mut files = Vec::new();
    for dir in [
        ".github/workflows",
        "scripts",
        "scripts/ops",
        "deploy",
        "bin",
    ] {
        if let Ok(entries) = std::fs::read_dir(app_dir.join(dir)) {
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            files.extend(names.into_iter().filter(|p| p.is_file()));
        }
    }
    files.extend(["Makefile", "deploy.sh"].map(|f| app_dir.join(f)));
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|text| compose_path_in(&text))
}

/// The first absolute path to a `docker-compose` binary in `text` (pure).
pub fn compose_path_in(text: &str) -> Option<PathBuf> {
    text.match_indices("/docker-compose").find_map(|(at, m)| {
        let end = at + m.len();
        // The name must end there (not docker-compose.yml, docker-compose-plugin).
        if text[end..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        {
            return None;
        }
        let start = text[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_')))
            .map_or(0, |i| i + 1);
        // `${COMPOSE:-/opt/bin/docker-compose}`: the default's dash is not the path's.
        let path = text[start..end].trim_start_matches('-');
        (path.starts_with('/') && !path.contains("/./") && !path.contains("/../"))
            .then(|| PathBuf::from(path))
    })
}

/// `init`'s generated config with the Compose binary the repository's workflows or
/// scripts call written into `[runtime]`: as `compose = "PATH"` when that file is an
/// executable here, commented out with a CHECK note when it is not (a config naming
/// a missing binary would not load).
pub fn add_detected_compose(text: String, app_dir: &Path) -> String {
    let Some(path) = compose_named_in_repository(app_dir) else {
        return text;
    };
    let line = if is_executable_file(&path) {
        format!(
            "compose = {:?}   # the Compose binary your deploy scripts call\n",
            path.display().to_string()
        )
    } else {
        format!(
            "# compose = {:?}   # CHECK: your scripts call it, but it is not an executable on this machine\n",
            path.display().to_string()
        )
    };
    match text.find("\n[runtime]\n") {
        Some(at) => {
            let end = at + "\n[runtime]\n".len();
            format!("{}{line}{}", &text[..end], &text[end..])
        }
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_read_by_compose_are_found() {
        let yaml = r#"
services:
  db:
    image: postgres:${PG_TAG:-16}
    environment:
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}
      LITERAL: "cost $$5"
  api:
    build:
      context: .
      args: [NPM_TOKEN, "FIXED=1"]
    environment:
      - DATABASE_URL
      - PORT=$API_PORT
"#;
        let mut names = referenced_variables(yaml);
        names.sort();
        names.dedup();
        assert_eq!(
            names,
            [
                "API_PORT",
                "DATABASE_URL",
                "NPM_TOKEN",
                "PG_TAG",
                "POSTGRES_PASSWORD"
            ]
        );
    }

    #[test]
    fn only_set_variables_are_preserved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("docker-compose.yml"),
            "services:\n  web:\n    image: x:${WEB_TAG}\n    environment: [SECRET, UNSET_ONE, PATH=$PATH]\n",
        )
        .unwrap();
        let names = env_names_to_preserve(dir.path(), &RuntimeConfig::default(), |n| {
            matches!(n, "WEB_TAG" | "SECRET" | "PATH")
        });
        assert_eq!(names, ["SECRET", "WEB_TAG"]);
    }

    #[test]
    fn the_compose_binary_of_the_seed_scripts_is_found() {
        let workflow = "    APP_DIR=\"/mnt/stateful_partition/charhub\"\n    COMPOSE=\"/var/lib/toolbox/bin/docker-compose\"\n    sudo $COMPOSE up -d\n";
        assert_eq!(
            compose_path_in(workflow),
            Some(PathBuf::from("/var/lib/toolbox/bin/docker-compose"))
        );
        assert_eq!(
            compose_path_in("COMPOSE=${COMPOSE:-/opt/bin/docker-compose}"),
            Some(PathBuf::from("/opt/bin/docker-compose"))
        );
        assert_eq!(
            compose_path_in("docker-compose -f ./docker-compose.yml up"),
            None
        );
        assert_eq!(compose_path_in("cp x /srv/app/docker-compose.yml"), None);
        assert_eq!(compose_path_in("apt install docker-compose-plugin"), None);
    }

    #[test]
    fn init_writes_the_compose_binary_of_the_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("toolbox/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let compose = bin.join("docker-compose");
        std::fs::write(&compose, "#!/bin/sh\n").unwrap();
        std::fs::create_dir_all(dir.path().join(".github/workflows")).unwrap();
        std::fs::write(
            dir.path().join(".github/workflows/deploy.yml"),
            format!("      run: sudo {} up -d\n", compose.display()),
        )
        .unwrap();
        let text = "[git]\nremote = \"origin\"\n\n[runtime]\nkind = \"compose\"\n\n[database]\nname = \"app\"\n".to_string();
        // Not executable yet: commented out, so the config still loads.
        let out = add_detected_compose(text.clone(), dir.path());
        assert!(out.contains("# compose = "), "{out}");
        crate::config::parse(&out, Path::new("stablehand.toml")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&compose, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = add_detected_compose(text, dir.path());
        let c = crate::config::parse(&out, Path::new("stablehand.toml")).unwrap();
        assert_eq!(c.runtime.compose.as_deref(), Some(compose.as_path()));
    }

    #[test]
    fn sudo_wraps_the_binary_and_passes_names_only() {
        let docker = Docker {
            docker: PathBuf::from("/usr/bin/docker"),
            compose: None,
            sudo: true,
            preserve: vec!["COMPOSE_PROJECT_NAME".into(), "DB_PASSWORD".into()],
        };
        let cmd = docker.docker(["ps"]).env("EXTRA", "s3cret-value");
        let shown = cmd.display();
        assert_eq!(
            shown,
            "sudo -n --preserve-env=COMPOSE_PROJECT_NAME,DB_PASSWORD,EXTRA -- /usr/bin/docker ps"
        );
        assert!(!shown.contains("s3cret"));
        let plain = Docker {
            sudo: false,
            preserve: Vec::new(),
            ..docker
        };
        assert_eq!(plain.docker(["ps"]).display(), "/usr/bin/docker ps");
    }
}
