//! `stablehand init`: looks at the app directory the way the server runs it and writes a
//! commented `stablehand.toml` that works as it is. The compose file(s) are the ones the
//! deploy workflow names (or `--file`, a production-named file, Compose's default); the
//! services are read from Compose itself (`compose config`: `.env`, `env_file`,
//! `${VAR:-default}` and several files applied), the database from the PostgreSQL
//! service's resolved environment, the health gate from the healthchecks the app
//! declares, the migrations folder from the Prisma schema's location. The decisions are
//! plain functions in `init/layout.rs`; this file does the reading.

mod layout;
mod render;
mod resolve;

use layout::{
    choose_files, compose_file_sets, parse_resolved, service_health, FileChoice, ServiceHealth,
};
pub use layout::{
    db_identity, ledger_matches, postgres_service, running_files_match, DbIdentity, LedgerMatch,
    Resolved,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_norway::Value;

use crate::config::RuntimeConfig;
use crate::runtime::compose::{Compose, Flavor};
pub use render::*;
pub use resolve::*;

/// What init found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Detected {
    /// The compose files written to `runtime.files` (relative to the app directory).
    pub compose_files: Vec<String>,
    /// Why those.
    pub compose_reason: Option<String>,
    /// Compose files in the directory that were not chosen.
    pub other_compose_files: Vec<String>,
    /// How the services were read: `docker-compose config`, or the file itself.
    pub resolved_with: Option<String>,
    pub project: String,
    pub db_service: Option<String>,
    pub db_user: Option<String>,
    pub db_name: Option<String>,
    /// Where the user and the name came from.
    pub db_user_from: Option<String>,
    pub db_name_from: Option<String>,
    /// Services with a `build:` section (what stablehand rebuilds and restarts).
    pub app_services: Vec<String>,
    pub prisma: bool,
    /// The migrations folder, relative to the app directory, and why.
    pub migrations_dir: Option<String>,
    pub migrations_from: Option<String>,
    pub git_remote: Option<String>,
    pub git_branch: Option<String>,
    /// `[[health.http]]` probes, each with where it came from.
    pub health_urls: Vec<(String, String)>,
    /// URLs worth a try that did not answer during init: written commented out.
    pub health_guesses: Vec<String>,
    /// What the gate checks of each app service, one line each.
    pub health_lines: Vec<String>,
    /// Things the user should look at, written as comments too.
    pub notes: Vec<String>,
}

fn git_out(dir: &Path, args: &[&str]) -> Option<String> {
    crate::ownership::git_in(dir)
        .args(args)
        .timeout(Duration::from_secs(20))
        .output()
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The compose files in `dir`, sorted.
fn compose_files_in(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| layout::is_compose_file_name(n))
        .collect();
    files.sort();
    files
}

/// Each workflow in `.github/workflows` with the compose file sets it passes whose files
/// all exist in `dir`.
fn workflow_sets(dir: &Path) -> Vec<(String, Vec<Vec<String>>)> {
    let mut out = Vec::new();
    let wf_dir = dir.join(".github/workflows");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&wf_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let sets: Vec<Vec<String>> = compose_file_sets(&text)
            .into_iter()
            .filter(|set| set.iter().all(|f| dir.join(f).is_file()))
            .collect();
        if !sets.is_empty() {
            let name = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .display()
                .to_string();
            out.push((name, sets));
        }
    }
    out
}

/// The Prisma schemas in `dir`: declared in package.json (`prisma.schema`) or
/// prisma.config.ts at the root or in a build context, then found by looking (up to four
/// levels down, node_modules and dot directories skipped).
fn prisma_schemas(dir: &Path, contexts: &[String]) -> Vec<layout::PrismaSchema> {
    let mut out: Vec<layout::PrismaSchema> = Vec::new();
    let migrations_for = |schema: &str| -> String {
        let p = dir.join(schema);
        let base = if p.is_dir() {
            if p.join("migrations").is_dir() {
                return format!("{schema}/migrations");
            }
            Path::new(schema).parent()
        } else {
            Path::new(schema).parent()
        };
        match base
            .map(|b| b.display().to_string())
            .filter(|b| !b.is_empty())
        {
            Some(b) => format!("{b}/migrations"),
            None => "migrations".into(),
        }
    };
    let mut bases: Vec<String> = vec![String::new()];
    bases.extend(contexts.iter().filter(|c| !c.is_empty()).cloned());
    for base in &bases {
        let at = |f: &str| dir.join(base).join(f);
        if let Ok(text) = std::fs::read_to_string(at("prisma.config.ts")) {
            let (schema, migrations) = layout::prisma_config_paths(&text);
            if let Some(schema) = schema.and_then(|s| layout::join_relative(base, &s)) {
                let migrations = migrations
                    .and_then(|m| layout::join_relative(base, &m))
                    .unwrap_or_else(|| migrations_for(&schema));
                out.push(layout::PrismaSchema {
                    how: format!(
                        "{} names it",
                        Path::new(base).join("prisma.config.ts").display()
                    ),
                    schema,
                    migrations,
                });
            }
        }
        if let Ok(text) = std::fs::read_to_string(at("package.json")) {
            if let Some(schema) =
                layout::package_json_schema(&text).and_then(|s| layout::join_relative(base, &s))
            {
                out.push(layout::PrismaSchema {
                    how: format!(
                        "{} prisma.schema names it",
                        Path::new(base).join("package.json").display()
                    ),
                    migrations: migrations_for(&schema),
                    schema,
                });
            }
        }
    }
    fn walk(dir: &Path, rel: &str, depth: usize, found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir.join(rel)) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                if depth < 4
                    && !name.starts_with('.')
                    && !matches!(
                        name.as_str(),
                        "node_modules" | "dist" | "build" | "vendor" | "backups" | "target"
                    )
                {
                    walk(dir, &path, depth + 1, found);
                }
            } else if name == "schema.prisma" {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, "", 0, &mut found);
    for schema in found {
        if out.iter().any(|s| s.schema == schema) {
            continue;
        }
        out.push(layout::PrismaSchema {
            migrations: migrations_for(&schema),
            how: "found".into(),
            schema,
        });
    }
    out
}

/// Whether `url` answers with 200-399 within two seconds.
fn answers(url: &str) -> bool {
    let probe = crate::config::HttpProbeConfig {
        url: url.to_string(),
        expect_status: None,
        contains: None,
        matches: None,
        timeout: Duration::from_secs(2),
    };
    crate::health::probe_http(&probe).ok
}

/// Inspects `dir`; `explicit`: the `--file` arguments (relative to `dir`).
pub fn detect(dir: &Path, explicit: &[String]) -> anyhow::Result<Detected> {
    // The name Compose itself would use here: the environment, then `.env`, then the
    // directory's name (v2's `config` output names it too, and wins: see detect_compose).
    let dotenv_project = std::fs::read_to_string(dir.join(".env"))
        .ok()
        .and_then(|t| {
            env_file_vars(&t)
                .into_iter()
                .find(|(k, _)| k == "COMPOSE_PROJECT_NAME")
                .map(|(_, v)| v)
        })
        .filter(|p| !p.is_empty());
    let project = crate::runtime::compose::normalize_project_name(
        &std::env::var("COMPOSE_PROJECT_NAME")
            .ok()
            .filter(|p| !p.is_empty())
            .or(dotenv_project)
            .unwrap_or_else(|| {
                dir.canonicalize()
                    .unwrap_or_else(|_| dir.to_owned())
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
    );
    for f in explicit {
        if !dir.join(f).is_file() {
            bail!(
                "init --file {f}: there is no such file in {}",
                dir.display()
            );
        }
    }
    let present = compose_files_in(dir);
    let workflows = workflow_sets(dir);
    let mut d = Detected {
        project,
        ..Default::default()
    };
    match choose_files(explicit, &workflows, &present) {
        None => d.notes.push("no compose file here: the config uses direct mode (DATABASE_URL) and no runtime; add [runtime] start/stop commands for an app run by systemd".into()),
        Some(choice) => detect_compose(dir, choice, &mut d)?,
    }
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

/// A path Compose printed (absolute after `config`) relative to `dir`, when inside it.
fn relative_to(dir: &Path, path: &str) -> Option<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let p = Path::new(path);
    let p = if p.is_absolute() {
        p.to_owned()
    } else {
        dir.join(p)
    };
    let p = p.canonicalize().unwrap_or(p);
    p.strip_prefix(&dir).ok().map(|r| r.display().to_string())
}

fn detect_compose(dir: &Path, choice: FileChoice, d: &mut Detected) -> anyhow::Result<()> {
    let (doc, resolved_with, by_compose) = resolve(dir, &choice.files)?;
    let resolved = parse_resolved(&doc).with_context(|| choice.files.join(", "))?;
    d.compose_files = choice.files;
    d.compose_reason = Some(choice.reason);
    d.other_compose_files = choice.others;
    d.resolved_with = Some(resolved_with);
    if let Some(name) = doc
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        d.project = crate::runtime::compose::normalize_project_name(name);
    }
    if !by_compose {
        d.notes.push("no compose tool is installed here: the compose file was read as it is, not resolved by Compose; run init again where Compose runs".into());
    }
    let db = postgres_service(&resolved).and_then(|svc| {
        let read = |host: &str| {
            let p = Path::new(host);
            let p = if p.is_absolute() {
                p.to_owned()
            } else {
                dir.join(p)
            };
            std::fs::read_to_string(p).ok()
        };
        match db_identity(&resolved, svc, &read) {
            Ok(id) => Some(Ok((svc, id))),
            // A service found by its name only, with no PostgreSQL variable: not ours.
            Err(_)
                if !svc.env.iter().any(|(k, _)| k.starts_with("POSTGRES"))
                    && !svc.image.as_deref().unwrap_or("").contains("postgres") =>
            {
                None
            }
            Err(why) => Some(Err(why)),
        }
    });
    match db {
        Some(Ok((svc, id))) => {
            d.db_service = Some(svc.name.clone());
            d.db_user = Some(id.user);
            d.db_name = Some(id.name);
            d.db_user_from = Some(id.user_from);
            d.db_name_from = Some(id.name_from);
        }
        Some(Err(why)) => bail!(
            "cannot tell which database to back up: {why}. Run init where the app's environment is (its `.env` on the server), or give the values to init, which Compose interpolates: POSTGRES_USER=app POSTGRES_DB=app_db stablehand init"
        ),
        None => d.notes.push("no PostgreSQL service found in the compose file: set [database] by hand (mode = \"direct\" with a DATABASE_URL, or the service name)".into()),
    }
    let mut contexts = Vec::new();
    for svc in &resolved.services {
        let Some(context) = &svc.build_context else {
            continue;
        };
        if Some(&svc.name) == d.db_service.as_ref() {
            continue;
        }
        d.app_services.push(svc.name.clone());
        if let Some(rel) = relative_to(dir, context) {
            contexts.push(rel);
        }
        match service_health(svc) {
            ServiceHealth::Probe { url, why } => {
                d.health_lines.push(format!(
                    "{}: Docker's health status and [[health.http]] {url}; {why}",
                    svc.name
                ));
                d.health_urls.push((url, format!("{}: {why}", svc.name)));
            }
            ServiceHealth::Healthcheck { why } => d.health_lines.push(format!(
                "{}: Docker's health status from its healthcheck, no HTTP probe; {why}",
                svc.name
            )),
            ServiceHealth::Running { guess } => match guess {
                Some(url) if answers(&url) => {
                    d.health_lines.push(format!(
                        "{}: running, no restart, and {url}, which answered during init (no healthcheck declared)",
                        svc.name
                    ));
                    d.health_urls.push((
                        url,
                        format!(
                            "{}: its own published port; it answered during init",
                            svc.name
                        ),
                    ));
                }
                guess => {
                    d.health_lines.push(format!(
                        "{}: running and no restart only: it declares no healthcheck",
                        svc.name
                    ));
                    d.notes.push(format!(
                        "{} declares no healthcheck: the gate only sees it running; add a compose healthcheck or a [[health.http]] probe",
                        svc.name
                    ));
                    d.health_guesses.extend(guess);
                }
            },
        }
    }
    if d.app_services.is_empty() {
        d.notes.push("no service with a build: section: list the app's services in [runtime] services and [health] containers".into());
    }
    let schemas = prisma_schemas(dir, &contexts);
    if let Some(chosen) = layout::choose_prisma(&schemas, &contexts) {
        d.prisma = true;
        d.migrations_dir = Some(chosen.migrations.clone());
        d.migrations_from = Some(if chosen.how == "found" {
            format!("beside {}", chosen.schema)
        } else {
            format!("for {}, which {}", chosen.schema, chosen.how)
        });
        for other in schemas.iter().filter(|s| s.migrations != chosen.migrations) {
            d.notes.push(format!(
                "another Prisma schema is here too: {} (migrations {}); set database.migrations_dir if that is the app's",
                other.schema, other.migrations
            ));
        }
    }
    Ok(())
}

/// `stablehand init [--force] [--file F]...`: writes `path`; returns what was found.
/// `files` are taken relative to the current directory (as Compose's `-f` is) and must
/// be inside the app directory.
pub fn init(path: &Path, force: bool, files: &[PathBuf]) -> anyhow::Result<(PathBuf, Detected)> {
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
    let canonical_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mut explicit = Vec::new();
    for f in files {
        let abs = std::path::absolute(f)?;
        let abs = abs.canonicalize().unwrap_or(abs);
        match abs.strip_prefix(&canonical_dir) {
            Ok(rel) => explicit.push(rel.display().to_string()),
            Err(_) => bail!(
                "init --file {}: the compose file must be inside the app directory {} (the directory of the config file)",
                f.display(),
                canonical_dir.display()
            ),
        }
    }
    let detected = detect(dir, &explicit)?;
    let text = render(&detected);
    // The Compose binary the repository's scripts call, when it is not on PATH.
    let text = crate::runtime::access::add_detected_compose(text, dir);
    // What is written must load: a bug here must not leave a broken config behind.
    crate::config::parse(&text, path).context("the generated config does not parse (a bug)")?;
    crate::files::write_file_atomic(path, text.as_bytes())?;
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
mod tests;
