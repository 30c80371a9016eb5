//! `stablehand init`: looks at the app directory (compose files and their services,
//! which one is PostgreSQL and its environment, a Prisma schema, the git remote and
//! branch, a health endpoint) and writes a commented `stablehand.toml` that works as it
//! is for the common case. What it found is a pure function of the files it read.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_norway::Value;

use crate::config::COMPOSE_FILE_NAMES;

/// What init found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Detected {
    pub compose_file: Option<String>,
    pub project: String,
    pub db_service: Option<String>,
    pub db_user: Option<String>,
    pub db_name: Option<String>,
    /// Services with a `build:` section (what stablehand rebuilds and restarts).
    pub app_services: Vec<String>,
    pub prisma: bool,
    pub git_remote: Option<String>,
    pub git_branch: Option<String>,
    pub health_url: Option<String>,
    /// Things the user should look at, written as comments too.
    pub notes: Vec<String>,
}

/// `${VAR:-default}` / `${VAR-default}` -> default; `${VAR}` -> None; plain -> itself.
fn env_value(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        return inner
            .split_once(":-")
            .or_else(|| inner.split_once('-'))
            .map(|(_, d)| d.to_string())
            .filter(|d| !d.is_empty());
    }
    (!raw.is_empty() && !raw.contains('$')).then(|| raw.to_string())
}

/// A service's environment as (key, value) pairs (map or list form).
fn environment(service: &Value) -> Vec<(String, String)> {
    match service.get("environment") {
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some((k.as_str()?.to_string(), v))
            })
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| {
                i.as_str()?
                    .split_once('=')
                    .map(|(k, v)| (k.into(), v.into()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn is_postgres(name: &str, service: &Value) -> bool {
    let image = service.get("image").and_then(Value::as_str).unwrap_or("");
    image.contains("postgres")
        || environment(service)
            .iter()
            .any(|(k, _)| k.starts_with("POSTGRES_"))
        || matches!(name, "postgres" | "postgresql" | "db" | "database")
}

/// The host port an app service answers on: a published port, or a PORT-like variable
/// under host networking.
fn app_port(service: &Value) -> Option<String> {
    if let Some(Value::Sequence(ports)) = service.get("ports") {
        for p in ports {
            let text = match p {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            let parts: Vec<&str> = text.split(':').collect();
            // "3000", "3000:3000", "127.0.0.1:3000:3000"
            let host = if parts.len() >= 2 {
                parts[parts.len() - 2]
            } else {
                parts[0]
            };
            let host = host.split('/').next().unwrap_or(host);
            if host.chars().all(|c| c.is_ascii_digit()) && !host.is_empty() {
                return Some(host.to_string());
            }
        }
    }
    environment(service)
        .into_iter()
        .find(|(k, _)| matches!(k.as_str(), "PORT" | "WEB_PORT" | "APP_PORT" | "HTTP_PORT"))
        .and_then(|(_, v)| env_value(&v))
}

/// What a compose file says (pure).
pub fn detect_compose(yaml: &str, file: &str, project: &str) -> anyhow::Result<Detected> {
    let doc: Value = serde_norway::from_str(yaml).with_context(|| format!("reading {file}"))?;
    let Some(Value::Mapping(services)) = doc.get("services") else {
        bail!("{file} defines no services");
    };
    let mut d = Detected {
        compose_file: Some(file.to_string()),
        project: project.to_string(),
        ..Default::default()
    };
    for (name, service) in services {
        let Some(name) = name.as_str() else { continue };
        if d.db_service.is_none() && is_postgres(name, service) {
            d.db_service = Some(name.to_string());
            let env = environment(service);
            let get = |k: &str| {
                env.iter()
                    .find(|(key, _)| key == k)
                    .and_then(|(_, v)| env_value(v))
            };
            d.db_user = get("POSTGRES_USER");
            d.db_name = get("POSTGRES_DB").or_else(|| d.db_user.clone());
            continue;
        }
        if service.get("build").is_some() {
            d.app_services.push(name.to_string());
            if d.health_url.is_none() {
                if let Some(port) = app_port(service) {
                    d.health_url = Some(format!("http://127.0.0.1:{port}/health"));
                }
            }
        }
    }
    if d.db_service.is_none() {
        d.notes.push("no PostgreSQL service found in the compose file: set [database] by hand (mode = \"direct\" with a DATABASE_URL, or the service name)".into());
    }
    if d.db_user.is_none() && d.db_service.is_some() {
        d.notes
            .push("the database user was not found (POSTGRES_USER): check [database] user".into());
    }
    if d.health_url.is_none() {
        d.notes.push(
            "no port found for the app: set [[health.http]] url to your health endpoint".into(),
        );
    }
    Ok(d)
}

fn git_out(dir: &Path, args: &[&str]) -> Option<String> {
    crate::ownership::git_in(dir)
        .args(args)
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Inspects `dir`.
pub fn detect(dir: &Path) -> anyhow::Result<Detected> {
    // The name Compose itself would use here.
    let project = crate::runtime::compose::normalize_project_name(
        &std::env::var("COMPOSE_PROJECT_NAME")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| {
                dir.canonicalize()
                    .unwrap_or_else(|_| dir.to_owned())
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
    );
    let mut d = match COMPOSE_FILE_NAMES.iter().find(|n| dir.join(n).is_file()) {
        Some(name) => {
            let yaml = std::fs::read_to_string(dir.join(name))?;
            detect_compose(&yaml, name, &project)?
        }
        None => Detected {
            project,
            notes: vec!["no compose file here: the config uses direct mode (DATABASE_URL) and no runtime; add [runtime] start/stop commands for an app run by systemd".into()],
            ..Default::default()
        },
    };
    d.prisma = [
        "prisma/schema.prisma",
        "backend/prisma/schema.prisma",
        "schema.prisma",
    ]
    .iter()
    .any(|p| dir.join(p).is_file());
    d.git_remote = git_out(dir, &["remote"]).and_then(|r| {
        let remotes: Vec<&str> = r.lines().collect();
        remotes
            .iter()
            .find(|r| **r == "origin")
            .or(remotes.first())
            .map(|s| s.to_string())
    });
    if let Some(remote) = &d.git_remote {
        d.git_branch = git_out(
            dir,
            &[
                "symbolic-ref",
                "--short",
                &format!("refs/remotes/{remote}/HEAD"),
            ],
        )
        .and_then(|b| b.split_once('/').map(|(_, b)| b.to_string()))
        .or_else(|| git_out(dir, &["symbolic-ref", "--short", "HEAD"]));
    } else {
        d.notes.push(
            "no git remote: stable tags stay local (set git.push = false, or add a remote)".into(),
        );
    }
    Ok(d)
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

/// The commented config for what was found (pure).
pub fn render(d: &Detected) -> String {
    let mut t = String::new();
    t.push_str(
        "# stablehand.toml, written by `stablehand init` from what it found in this directory.\n",
    );
    t.push_str("# Every key not written here has a default; see docs/configuration.md.\n");
    for n in &d.notes {
        t.push_str(&format!("# CHECK: {n}\n"));
    }
    t.push_str("\n[git]\n");
    t.push_str(&format!(
        "remote = {}\n",
        q(d.git_remote.as_deref().unwrap_or("origin"))
    ));
    match &d.git_branch {
        Some(b) => t.push_str(&format!(
            "branch = {}                 # the branch deploys follow\n",
            q(b)
        )),
        None => {
            t.push_str("# branch = \"main\"            # default: the remote's default branch\n")
        }
    }
    if d.git_remote.is_none() {
        t.push_str("push = false                   # no remote to push the stable tags to\n");
    }
    t.push_str("\n[runtime]\n");
    let services = d
        .app_services
        .iter()
        .map(|s| q(s))
        .collect::<Vec<_>>()
        .join(", ");
    if d.compose_file.is_some() {
        t.push_str("kind = \"compose\"\n");
        t.push_str(&format!(
            "project = {}             # compose's default for this directory\n",
            q(&d.project)
        ));
        if !d.app_services.is_empty() {
            t.push_str(&format!(
                "services = [{services}]   # rebuilt and restarted by a deploy (never the database)\n"
            ));
        }
        t.push_str("keep_images = 5                # commits whose images are kept for instant rollbacks\n");
    } else {
        t.push_str("# kind = \"command\"\n# build = \"make build\"\n# stop = \"systemctl stop myapp\"\n# start = \"systemctl start myapp\"\n");
    }
    t.push_str("\n[health]\n");
    if !d.app_services.is_empty() {
        t.push_str(&format!(
            "containers = [{services}]   # running, healthy, and no restart during the window\n"
        ));
    }
    t.push_str("consecutive = 3                # good rounds in a row, then ...\nstable_for = \"20s\"             # ... this long with no failure and no restart\ntimeout = \"120s\"\ninterval = \"2s\"\n");
    match &d.health_url {
        Some(url) => t.push_str(&format!(
            "[[health.http]]\nurl = {}   # CHECK: your app's health endpoint\n",
            q(url)
        )),
        None => t.push_str("# [[health.http]]\n# url = \"http://127.0.0.1:3000/health\"\n"),
    }
    t.push_str("\n[database]\n");
    match &d.db_service {
        Some(service) => {
            t.push_str("mode = \"compose\"                # pg_dump/psql/pg_restore run inside the service\n");
            t.push_str(&format!("service = {}\n", q(service)));
            t.push_str(&format!(
                "user = {}\n",
                q(d.db_user.as_deref().unwrap_or("postgres"))
            ));
            t.push_str(&format!(
                "name = {}\n",
                q(d.db_name.as_deref().unwrap_or("postgres"))
            ));
        }
        None => {
            t.push_str("mode = \"direct\"\nurl_env = \"DATABASE_URL\"        # the URL (with its password) comes from this variable\n");
        }
    }
    t.push_str(&format!(
        "migrations = {}{}\n",
        q(if d.prisma { "prisma" } else { "none" }),
        if d.prisma {
            "            # _prisma_migrations tells what a deploy applied"
        } else {
            ""
        }
    ));
    t.push_str("on_rollback = \"auto\"           # roll the database back only when the deploy changed it\n");
    t.push_str("snapshot = false               # true: instant database rollback (needs room for a copy)\n");
    t.push_str("\n[backup]\ndir = \"backups/database\"\nkeep_last = 10\nkeep_within = \"30d\"\n");
    t.push_str("\n# [notify]\n# slack_webhook_env = \"SLACK_WEBHOOK_URL\"   # the URL itself goes in the environment\n");
    t
}

/// `stablehand init [--force]`: writes `path`; returns what was found.
pub fn init(path: &Path, force: bool) -> anyhow::Result<(PathBuf, Detected)> {
    let path = &std::path::absolute(path)?;
    if path.exists() && !force {
        bail!(
            "{} already exists; nothing was written (pass --force to replace it)",
            path.display()
        );
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let detected = detect(dir)?;
    let text = render(&detected);
    // The Compose binary the repository's scripts call, when it is not on PATH.
    let text = crate::runtime::access::add_detected_compose(text, dir);
    // What is written must load: a bug here must not leave a broken config behind.
    crate::config::parse(&text, path).context("the generated config does not parse (a bug)")?;
    crate::backup::manifest::write_file_atomic(path, text.as_bytes())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    // .stablehand/ never goes into git.
    if let Some(git_dir) = git_out(dir, &["rev-parse", "--git-dir"]) {
        let exclude = dir.join(git_dir).join("info/exclude");
        let existing = std::fs::read_to_string(&exclude).unwrap_or_default();
        if !existing.lines().any(|l| l.trim() == ".stablehand/") {
            if let Some(parent) = exclude.parent() {
                fs_err::create_dir_all(parent)?;
            }
            let mut text = existing;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(".stablehand/\n");
            std::fs::write(&exclude, text)?;
        }
    }
    Ok((path.to_owned(), detected))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPOSE: &str = r#"
services:
  postgres:
    image: postgres:16
    environment:
      POSTGRES_USER: ${DB_USER:-charhub}
      POSTGRES_PASSWORD: ${DB_PASSWORD}
      POSTGRES_DB: charhub_db
  backend:
    build: ./backend
    ports: ["3000:3000"]
  frontend:
    build: ./frontend
    ports: ["127.0.0.1:8080:80"]
  redis:
    image: redis:7
"#;

    #[test]
    fn finds_the_database_the_app_and_its_port() {
        let d = detect_compose(COMPOSE, "docker-compose.yml", "charhub").unwrap();
        assert_eq!(d.db_service.as_deref(), Some("postgres"));
        assert_eq!(d.db_user.as_deref(), Some("charhub"));
        assert_eq!(d.db_name.as_deref(), Some("charhub_db"));
        assert_eq!(d.app_services, ["backend", "frontend"]);
        assert_eq!(
            d.health_url.as_deref(),
            Some("http://127.0.0.1:3000/health")
        );
        assert!(d.notes.is_empty(), "{:?}", d.notes);
    }

    #[test]
    fn the_rendered_config_parses_and_says_what_it_found() {
        let mut d = detect_compose(COMPOSE, "docker-compose.yml", "charhub").unwrap();
        d.prisma = true;
        d.git_remote = Some("origin".into());
        d.git_branch = Some("main".into());
        let text = render(&d);
        let c = crate::config::parse(&text, Path::new("stablehand.toml")).unwrap();
        assert_eq!(c.database.name.as_deref(), Some("charhub_db"));
        assert_eq!(c.database.user, "charhub");
        assert_eq!(c.database.migrations, "prisma");
        assert_eq!(
            c.runtime.services.as_deref(),
            Some(&["backend".to_string(), "frontend".to_string()][..])
        );
        assert_eq!(c.health.http[0].url, "http://127.0.0.1:3000/health");
        assert_eq!(c.git.branch.as_deref(), Some("main"));
        assert!(!text.contains("DB_PASSWORD"), "no secret is copied");
        // Without a compose file: direct mode, and it still parses.
        let bare = render(&Detected {
            project: "x".into(),
            ..Default::default()
        });
        let c = crate::config::parse(&bare, Path::new("stablehand.toml")).unwrap();
        assert_eq!(c.database.mode, crate::config::DbMode::Direct);
        assert!(!c.git.push || bare.contains("push = false"));
    }

    #[test]
    fn env_defaults() {
        assert_eq!(env_value("${X:-app}").as_deref(), Some("app"));
        assert_eq!(env_value("${X-app}").as_deref(), Some("app"));
        assert_eq!(env_value("${X}"), None);
        assert_eq!(env_value("plain").as_deref(), Some("plain"));
    }
}
