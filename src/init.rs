//! `stablehand init`: looks at the app directory the way the server runs it and writes a
//! commented `stablehand.toml` that works as it is. The compose file(s) are the ones the
//! deploy workflow names (or `--file`, a production-named file, Compose's default); the
//! services are read from Compose itself (`compose config`: `.env`, `env_file`,
//! `${VAR:-default}` and several files applied), the database from the PostgreSQL
//! service's resolved environment, the health gate from the healthchecks the app
//! declares, the migrations folder from the Prisma schema's location. The decisions are
//! plain functions in `init/layout.rs`; this file does the reading.

mod layout;

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

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$VAR` from `vars` (the fallback
/// when no compose tool is installed; Compose does this itself otherwise).
fn interpolate(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let re = regex::Regex::new(
        r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)",
    )
    .expect("a valid regex");
    re.replace_all(s, |c: &regex::Captures| {
        let name = c.get(1).or(c.get(4)).map(|m| m.as_str()).unwrap_or("");
        let value = vars(name);
        match (c.get(2).map(|m| m.as_str()), value) {
            (Some(":-"), Some(v)) if v.is_empty() => c[3].to_string(),
            (_, Some(v)) => v,
            (Some(_), None) => c[3].to_string(),
            (None, None) => String::new(),
        }
    })
    .into_owned()
}

/// `KEY=VALUE` lines of an env file (comments and blank lines skipped, quotes dropped).
fn env_file_vars(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            Some((
                k.trim().to_string(),
                v.trim().trim_matches(['"', '\'']).to_string(),
            ))
        })
        .collect()
}

fn interpolate_value(v: &mut Value, vars: &dyn Fn(&str) -> Option<String>) {
    match v {
        Value::String(s) => *s = interpolate(s, vars),
        Value::Sequence(items) => items.iter_mut().for_each(|i| interpolate_value(i, vars)),
        Value::Mapping(m) => m.iter_mut().for_each(|(_, i)| interpolate_value(i, vars)),
        _ => {}
    }
}

/// Compose's merge of a later file over an earlier one, simplified: mappings merge key
/// by key (`environment`, `build`, ...), anything else is replaced.
fn merge_into(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Mapping(into), Value::Mapping(from)) => {
            for (k, v) in from {
                match into.get_mut(k) {
                    Some(existing) => merge_into(existing, v),
                    None => {
                        into.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (into, from) => *into = from.clone(),
    }
}

/// The compose files read as they are (no compose tool here): the services of later
/// files merged over earlier ones key by key, `.env` and the environment interpolated,
/// `env_file` entries added under `environment`.
fn read_files_directly(dir: &Path, files: &[String]) -> anyhow::Result<Value> {
    let dotenv = std::fs::read_to_string(dir.join(".env"))
        .map(|t| env_file_vars(&t))
        .unwrap_or_default();
    let vars = |name: &str| {
        std::env::var(name).ok().or_else(|| {
            dotenv
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    };
    let mut merged = serde_norway::Mapping::new();
    let mut secrets = serde_norway::Mapping::new();
    for f in files {
        let text = fs_err::read_to_string(dir.join(f))?;
        let mut doc: Value =
            serde_norway::from_str(&text).with_context(|| format!("reading {f}"))?;
        interpolate_value(&mut doc, &vars);
        if let Some(Value::Mapping(services)) = doc.get("services") {
            for (name, spec) in services {
                let entry = merged
                    .entry(name.clone())
                    .or_insert_with(|| Value::Mapping(Default::default()));
                merge_into(entry, spec);
            }
        }
        if let Some(Value::Mapping(s)) = doc.get("secrets") {
            for (k, v) in s {
                let mut v = v.clone();
                if let Some(file) = v.get("file").and_then(Value::as_str) {
                    let abs = dir.join(file).display().to_string();
                    v["file"] = Value::String(abs);
                }
                secrets.insert(k.clone(), v);
            }
        }
    }
    for (_, spec) in merged.iter_mut() {
        let env_files: Vec<String> = match spec.get("env_file") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(|i| i.as_str().or_else(|| i.get("path")?.as_str()))
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let mut env = serde_norway::Mapping::new();
        for f in env_files {
            if let Ok(text) = std::fs::read_to_string(dir.join(&f)) {
                for (k, v) in env_file_vars(&text) {
                    env.insert(Value::String(k), Value::String(v));
                }
            }
        }
        for (k, v) in layout_env(spec.get("environment")) {
            env.insert(
                Value::String(k),
                v.map(Value::String).unwrap_or(Value::Null),
            );
        }
        if let Value::Mapping(m) = spec {
            m.insert(Value::String("environment".into()), Value::Mapping(env));
        }
    }
    let mut doc = serde_norway::Mapping::new();
    doc.insert(Value::String("services".into()), Value::Mapping(merged));
    doc.insert(Value::String("secrets".into()), Value::Mapping(secrets));
    Ok(Value::Mapping(doc))
}

fn layout_env(v: Option<&Value>) -> Vec<(String, Option<String>)> {
    let mut probe = serde_norway::Mapping::new();
    let mut svc = serde_norway::Mapping::new();
    if let Some(v) = v {
        svc.insert(Value::String("environment".into()), v.clone());
    }
    probe.insert(Value::String("x".into()), Value::Mapping(svc));
    let mut doc = serde_norway::Mapping::new();
    doc.insert(Value::String("services".into()), Value::Mapping(probe));
    parse_resolved(&Value::Mapping(doc))
        .map(|r| r.services[0].env.clone())
        .unwrap_or_default()
}

/// The effective configuration of `files`: from the compose tool (`config`), or, when
/// no compose tool is installed, from the files themselves. Returns it and how it was
/// read. The text stays in memory: interpolated values may be secrets.
fn resolve(dir: &Path, files: &[String]) -> anyhow::Result<(Value, String, bool)> {
    // The Compose binary the repository's scripts call (not on PATH on such servers).
    let named = crate::runtime::access::compose_named_in_repository(dir)
        .filter(|p| crate::runtime::access::is_executable_file(p));
    let runtime = RuntimeConfig {
        files: files.iter().map(PathBuf::from).collect(),
        compose: named,
        ..Default::default()
    };
    let compose = match Compose::detect(dir, &runtime) {
        Ok(c) => c,
        Err(e) if crate::process::interruption_in(&e).is_some() => return Err(e),
        Err(_) => {
            let doc = read_files_directly(dir, files)?;
            return Ok((
                doc,
                "the file itself: no compose tool is installed here, so init applied `.env`, env_file and ${VAR:-default} on its own; check the result".into(),
                false,
            ));
        }
    };
    let (args, tool): (&[&str], &str) = match compose.flavor {
        Flavor::V2 => (&["config", "--format", "json"], "docker compose config"),
        Flavor::V1 => (&["config"], "docker-compose config"),
    };
    let text = compose
        .cmd(args)
        .timeout(Duration::from_secs(60))
        .output()
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "Compose could not resolve {} (`{tool}`); fix the file, or choose others with init --file",
                files.join(", ")
            )
        })?;
    let doc: Value = match compose.flavor {
        Flavor::V2 => serde_json::from_str(&text)
            .context("reading the output of `docker compose config --format json`")?,
        Flavor::V1 => serde_norway::from_str(&text)
            .context("reading the output of `docker-compose config`")?,
    };
    Ok((
        doc,
        format!("`{tool}` (Compose applied .env, env_file, ${{VAR:-default}} and every file)"),
        true,
    ))
}

/// The services of `files` in `dir` as Compose resolves them (for doctor's hints).
pub fn resolved_services(dir: &Path, files: &[String]) -> anyhow::Result<Resolved> {
    let (doc, _, _) = resolve(dir, files)?;
    parse_resolved(&doc)
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

fn q(s: &str) -> String {
    format!("{s:?}")
}

fn list(items: &[String]) -> String {
    items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
}

/// The commented config for what was found (pure).
pub fn render(d: &Detected) -> String {
    let mut t = String::new();
    t.push_str(
        "# stablehand.toml, written by `stablehand init` from what it found in this directory.\n",
    );
    t.push_str("# Every key not written here has a default; see docs/configuration.md.\n");
    if let Some(reason) = &d.compose_reason {
        t.push_str(&format!(
            "# Compose files: {} ({reason}).\n",
            d.compose_files.join(", ")
        ));
        if !d.other_compose_files.is_empty() {
            t.push_str(&format!(
                "#   Also here, not used: {} (`stablehand init --force --file F` to choose).\n",
                d.other_compose_files.join(", ")
            ));
        }
    }
    if let Some(how) = &d.resolved_with {
        t.push_str(&format!("# Services read from {how}.\n"));
    }
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
    let services = list(&d.app_services);
    if !d.compose_files.is_empty() {
        t.push_str("kind = \"compose\"\n");
        t.push_str(&format!(
            "project = {}             # compose's default for this directory\n",
            q(&d.project)
        ));
        t.push_str(&format!(
            "files = [{}]   # the files the server runs\n",
            list(&d.compose_files)
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
    for line in &d.health_lines {
        t.push_str(&format!("# {line}\n"));
    }
    if !d.app_services.is_empty() {
        t.push_str(&format!(
            "containers = [{services}]   # running, healthy (when they declare a healthcheck), no restart during the window\n"
        ));
    }
    t.push_str("consecutive = 3                # good rounds in a row, then ...\nstable_for = \"20s\"             # ... this long with no failure and no restart\ntimeout = \"120s\"\ninterval = \"2s\"\n");
    for (url, why) in &d.health_urls {
        t.push_str(&format!("[[health.http]]   # {why}\nurl = {}\n", q(url)));
    }
    for url in &d.health_guesses {
        t.push_str(&format!(
            "# [[health.http]]   # CHECK: did not answer during init\n# url = {}\n",
            q(url)
        ));
    }
    if d.health_urls.is_empty() && d.health_guesses.is_empty() && d.app_services.is_empty() {
        t.push_str("# [[health.http]]\n# url = \"http://127.0.0.1:3000/health\"\n");
    }
    t.push_str("\n[database]\n");
    match &d.db_service {
        Some(service) => {
            t.push_str("mode = \"compose\"                # pg_dump/psql/pg_restore run inside the service\n");
            t.push_str(&format!("service = {}\n", q(service)));
            t.push_str(&format!(
                "user = {}   # {}\n",
                q(d.db_user.as_deref().unwrap_or_default()),
                d.db_user_from.as_deref().unwrap_or("")
            ));
            t.push_str(&format!(
                "name = {}   # {}\n",
                q(d.db_name.as_deref().unwrap_or_default()),
                d.db_name_from.as_deref().unwrap_or("")
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
    if let Some(dir) = &d.migrations_dir {
        t.push_str(&format!(
            "migrations_dir = {}   # {}\n",
            q(dir),
            d.migrations_from.as_deref().unwrap_or("")
        ));
    }
    t.push_str("on_rollback = \"auto\"           # roll the database back only when the deploy changed it\n");
    t.push_str("snapshot = false               # true: instant database rollback (needs room for a copy)\n");
    t.push_str("\n[backup]\ndir = \"backups/database\"\nkeep_last = 10\nkeep_within = \"30d\"\n");
    t.push_str("\n# [notify]\n# slack_webhook_env = \"SLACK_WEBHOOK_URL\"   # the URL itself goes in the environment\n");
    t
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
    healthcheck:
      test: ["CMD", "wget", "--spider", "http://localhost:3000/api/health"]
  frontend:
    build: ./frontend
    ports: ["127.0.0.1:8080:80"]
  redis:
    image: redis:7
"#;

    #[test]
    fn reading_the_file_itself_interpolates_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("docker-compose.yml"), COMPOSE).unwrap();
        std::fs::write(
            d.join("docker-compose.prod.yml"),
            "services:\n  postgres:\n    env_file: db.env\n    environment:\n      POSTGRES_DB: ${PROD_DB}\n",
        )
        .unwrap();
        std::fs::write(d.join(".env"), "PROD_DB=\"prod_db\"\n").unwrap();
        std::fs::write(d.join("db.env"), "# comment\nPOSTGRES_USER=from_env_file\n").unwrap();
        let doc = read_files_directly(
            d,
            &[
                "docker-compose.yml".into(),
                "docker-compose.prod.yml".into(),
            ],
        )
        .unwrap();
        let r = parse_resolved(&doc).unwrap();
        let pg = postgres_service(&r).unwrap();
        assert_eq!(pg.var("POSTGRES_DB"), Some("prod_db"));
        // `environment` wins over env_file, as in Compose.
        assert_eq!(pg.var("POSTGRES_USER"), Some("charhub"));
        assert_eq!(
            r.service("backend").unwrap().build_context.as_deref(),
            Some("./backend")
        );
    }

    #[test]
    fn interpolation() {
        let vars = |n: &str| match n {
            "SET" => Some("v".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(interpolate("${SET}-$SET-${NOPE:-d}", &vars), "v-v-d");
        assert_eq!(interpolate("${EMPTY:-d}|${EMPTY-d}|${NOPE}", &vars), "d||");
    }

    #[test]
    fn the_rendered_config_parses_and_says_what_it_found() {
        let d = Detected {
            compose_files: vec!["docker-compose.production.yml".into()],
            compose_reason: Some("the workflow .github/workflows/deploy.yml runs compose -f docker-compose.production.yml".into()),
            other_compose_files: vec!["docker-compose.yml".into()],
            resolved_with: Some("`docker-compose config`".into()),
            project: "charhub".into(),
            db_service: Some("postgres".into()),
            db_user: Some("charhub".into()),
            db_name: Some("charhub_db".into()),
            db_user_from: Some("POSTGRES_USER".into()),
            db_name_from: Some("POSTGRES_DB".into()),
            app_services: vec!["backend".into(), "frontend".into()],
            prisma: true,
            migrations_dir: Some("backend/prisma/migrations".into()),
            migrations_from: Some("beside backend/prisma/schema.prisma".into()),
            git_remote: Some("origin".into()),
            git_branch: Some("main".into()),
            health_urls: vec![("http://127.0.0.1:8080/health".into(), "frontend: published".into())],
            health_guesses: vec!["http://127.0.0.1:9/health".into()],
            health_lines: vec!["backend: Docker's health status".into()],
            notes: vec!["look".into()],
        };
        let text = render(&d);
        let c = crate::config::parse(&text, Path::new("stablehand.toml")).unwrap();
        assert_eq!(c.database.name.as_deref(), Some("charhub_db"));
        assert_eq!(c.database.user, "charhub");
        assert_eq!(c.database.migrations, "prisma");
        assert_eq!(
            c.database.migrations_dir,
            Path::new("backend/prisma/migrations")
        );
        assert_eq!(
            c.runtime.files,
            [PathBuf::from("docker-compose.production.yml")]
        );
        assert_eq!(
            c.runtime.services.as_deref(),
            Some(&["backend".to_string(), "frontend".to_string()][..])
        );
        assert_eq!(c.health.containers, ["backend", "frontend"]);
        assert_eq!(c.health.http.len(), 1);
        assert_eq!(c.health.http[0].url, "http://127.0.0.1:8080/health");
        assert_eq!(c.git.branch.as_deref(), Some("main"));
        assert!(
            text.contains("Also here, not used: docker-compose.yml"),
            "{text}"
        );
        // Without a compose file: direct mode, and it still parses.
        let bare = render(&Detected {
            project: "x".into(),
            ..Default::default()
        });
        let c = crate::config::parse(&bare, Path::new("stablehand.toml")).unwrap();
        assert_eq!(c.database.mode, crate::config::DbMode::Direct);
        assert!(!c.git.push || bare.contains("push = false"));
    }
}
