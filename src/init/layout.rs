//! The decisions `init` makes about an app's layout, as plain functions over plain data:
//! which compose file(s) the server runs, the services of the resolved Compose
//! configuration, which database they create, what the health gate can check, and where
//! the Prisma migrations live. The I/O (running `compose config`, reading files) is in
//! `init.rs`.

use std::collections::BTreeMap;

use serde_norway::Value;

use crate::config::COMPOSE_FILE_NAMES;

/// The compose file(s) init chose, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChoice {
    pub files: Vec<String>,
    /// One line for the output: why these.
    pub reason: String,
    /// Compose files in the directory that were not chosen.
    pub others: Vec<String>,
}

/// Looks like a compose file: `compose*.y(a)ml` or `docker-compose*.y(a)ml`.
pub fn is_compose_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    (lower.ends_with(".yml") || lower.ends_with(".yaml"))
        && (lower.starts_with("compose") || lower.starts_with("docker-compose"))
}

/// Named for production: a `prod` or `production` part in the name
/// (`docker-compose.prod.yml`, `docker-compose.production.yml`, `compose.prod.yaml`,
/// `docker-compose-prod.yml`).
pub fn is_production_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let stem = lower
        .strip_suffix(".yml")
        .or_else(|| lower.strip_suffix(".yaml"))
        .unwrap_or(&lower);
    stem.split(['.', '-', '_'])
        .any(|part| part == "prod" || part == "production")
}

/// The override file Compose adds by itself to `default` when no `-f` is given.
fn override_of(default: &str) -> Vec<String> {
    let (stem, _) = default.rsplit_once('.').unwrap_or((default, ""));
    ["yaml", "yml"]
        .iter()
        .map(|ext| format!("{stem}.override.{ext}"))
        .collect()
}

/// Chooses the compose file(s) the way the server runs them: `explicit` (`init --file`);
/// else the file set a deploy workflow passes with `-f` (`workflows`: each workflow's
/// path and the sets found in it, only sets whose files exist); else a file named for
/// production; else Compose's default file (with its override file, which Compose adds
/// by itself). `present`: the compose files in the app directory.
pub fn choose_files(
    explicit: &[String],
    workflows: &[(String, Vec<Vec<String>>)],
    present: &[String],
) -> Option<FileChoice> {
    let others = |chosen: &[String]| {
        present
            .iter()
            .filter(|p| !chosen.contains(p))
            .cloned()
            .collect::<Vec<_>>()
    };
    if !explicit.is_empty() {
        return Some(FileChoice {
            files: explicit.to_vec(),
            reason: "given with --file".into(),
            others: others(explicit),
        });
    }
    let deployish = |path: &str| {
        let lower = path.to_ascii_lowercase();
        lower.contains("deploy") || lower.contains("prod") || lower.contains("release")
    };
    let mut ordered: Vec<&(String, Vec<Vec<String>>)> = workflows.iter().collect();
    ordered.sort_by_key(|(path, _)| (!deployish(path), path.clone()));
    for (path, sets) in ordered {
        // The set with a production-named file first, then the one with most files.
        let best = sets.iter().filter(|s| !s.is_empty()).max_by_key(|s| {
            (
                s.iter().any(|f| is_production_name(f)),
                s.len(),
                std::cmp::Reverse(s.join(" ")),
            )
        });
        if let Some(set) = best {
            let shown = set
                .iter()
                .map(|f| format!("-f {f}"))
                .collect::<Vec<_>>()
                .join(" ");
            return Some(FileChoice {
                files: set.clone(),
                reason: format!("the workflow {path} runs compose {shown}"),
                others: others(set),
            });
        }
    }
    if let Some(prod) = present.iter().find(|p| is_production_name(p)) {
        let files = vec![prod.clone()];
        return Some(FileChoice {
            reason: "its name says production (no deploy workflow names a compose file)".into(),
            others: others(&files),
            files,
        });
    }
    let default = COMPOSE_FILE_NAMES
        .iter()
        .find(|n| present.iter().any(|p| p == *n))?;
    let mut files = vec![default.to_string()];
    if let Some(o) = override_of(default)
        .into_iter()
        .find(|o| present.contains(o))
    {
        files.push(o);
    }
    Some(FileChoice {
        reason: if files.len() > 1 {
            "Compose's default file and its override file (no deploy workflow or production-named file)".into()
        } else {
            "Compose's default file (no deploy workflow or production-named file)".into()
        },
        others: others(&files),
        files,
    })
}

/// The compose file sets a workflow passes: every `docker compose` / `docker-compose`
/// command's `-f F` / `--file F` / `--file=F` arguments (in order, `./` dropped), and a
/// `COMPOSE_FILE` setting. Arguments holding a variable are skipped (they cannot be
/// resolved here).
pub fn compose_file_sets(workflow: &str) -> Vec<Vec<String>> {
    let joined = workflow.replace("\\\r\n", " ").replace("\\\n", " ");
    let clean = |t: &str| {
        t.trim_matches(|c: char| "\"'`();".contains(c))
            .trim_start_matches("./")
            .to_string()
    };
    let mut sets: Vec<Vec<String>> = Vec::new();
    let mut add = |set: Vec<String>| {
        if !set.is_empty() && !sets.contains(&set) {
            sets.push(set);
        }
    };
    for line in joined.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let mut i = 0;
        while i < tokens.len() {
            let t = clean(tokens[i]);
            let start = if t.ends_with("docker-compose") {
                Some(i + 1)
            } else if t.ends_with("docker")
                && tokens.get(i + 1).map(|n| clean(n)) == Some("compose".into())
            {
                Some(i + 2)
            } else {
                None
            };
            let Some(mut j) = start else {
                i += 1;
                continue;
            };
            let mut set = Vec::new();
            while j < tokens.len() {
                let raw = tokens[j];
                if ["&&", "||", ";", "|"].iter().any(|s| raw.starts_with(s)) {
                    break;
                }
                let tok = clean(raw);
                let value = if tok == "-f" || tok == "--file" {
                    j += 1;
                    tokens.get(j).map(|v| clean(v))
                } else {
                    tok.strip_prefix("--file=").map(str::to_string)
                };
                if let Some(v) = value.filter(|v| !v.is_empty() && !v.contains('$')) {
                    set.push(v);
                }
                let last = tokens.get(j).copied().unwrap_or(raw);
                j += 1;
                if last.ends_with(';') {
                    break;
                }
            }
            add(set);
            i = j;
        }
        if let Some(pos) = line.find("COMPOSE_FILE") {
            let rest = line[pos + "COMPOSE_FILE".len()..].trim_start();
            if let Some(value) = rest.strip_prefix([':', '=']) {
                let value = value.trim().trim_matches(['"', '\'']);
                if !value.is_empty() && !value.contains('$') {
                    add(value
                        .split(':')
                        .map(|f| f.trim_start_matches("./").to_string())
                        .collect());
                }
            }
        }
    }
    sets
}

/// A published or exposed port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub host_ip: Option<String>,
    /// The host port; None when only the container port is given (Compose picks one).
    pub published: Option<u16>,
    pub target: u16,
}

/// A service's compose healthcheck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// The test command as one line (`CMD`/`CMD-SHELL` dropped).
    pub test: String,
}

/// One service of the resolved configuration, as far as init reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub image: Option<String>,
    /// The build context, when the service is built (absolute after `compose config`).
    pub build_context: Option<String>,
    /// The environment after Compose applied `environment`, `env_file` and interpolation
    /// (None: declared without a value).
    pub env: Vec<(String, Option<String>)>,
    pub ports: Vec<Port>,
    pub network_mode: Option<String>,
    /// None without one, or when it is disabled.
    pub healthcheck: Option<Healthcheck>,
    /// Bind mounts: (host path, container path).
    pub binds: Vec<(String, String)>,
    /// Secrets: (secret name, container path).
    pub secrets: Vec<(String, String)>,
}

impl Service {
    /// A variable's value; `Some("")` when it is declared but empty.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
}

/// The resolved configuration's services, and the host files of its secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub services: Vec<Service>,
    pub secret_files: BTreeMap<String, String>,
}

impl Resolved {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn port_number(v: &Value) -> Option<u16> {
    scalar(v)?.trim().parse().ok()
}

fn parse_port(v: &Value) -> Option<Port> {
    match v {
        Value::Mapping(_) => Some(Port {
            host_ip: v.get("host_ip").and_then(scalar).filter(|s| !s.is_empty()),
            published: v.get("published").and_then(port_number),
            target: v.get("target").and_then(port_number)?,
        }),
        other => {
            let text = scalar(other)?;
            let text = text.split('/').next().unwrap_or(&text);
            let mut parts = text.rsplitn(3, ':');
            let target = parts.next()?.parse().ok()?;
            let published = parts.next().and_then(|p| p.parse().ok());
            let host_ip = parts
                .next()
                .map(|ip| ip.trim_matches(['[', ']']).to_string())
                .filter(|s| !s.is_empty());
            Some(Port {
                host_ip,
                published,
                target,
            })
        }
    }
}

fn parse_env(v: Option<&Value>) -> Vec<(String, Option<String>)> {
    match v {
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar(v))))
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| {
                let s = i.as_str()?;
                Some(match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (s.to_string(), None),
                })
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_healthcheck(v: Option<&Value>) -> Option<Healthcheck> {
    let v = v?;
    if v.get("disable").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let test = match v.get("test")? {
        Value::String(s) => s.clone(),
        Value::Sequence(items) => {
            let words: Vec<String> = items.iter().filter_map(scalar).collect();
            match words.first().map(String::as_str) {
                Some("NONE") | None => return None,
                Some("CMD") | Some("CMD-SHELL") => words[1..].join(" "),
                _ => words.join(" "),
            }
        }
        _ => return None,
    };
    (!test.trim().is_empty()).then_some(Healthcheck { test })
}

/// Reads the services of a resolved Compose configuration (`compose config` of v1 or
/// v2, YAML or JSON) or of a compose file read as it is.
pub fn parse_resolved(doc: &Value) -> anyhow::Result<Resolved> {
    let Some(Value::Mapping(map)) = doc.get("services") else {
        anyhow::bail!("the Compose configuration defines no services");
    };
    let mut services = Vec::new();
    for (name, spec) in map {
        let Some(name) = name.as_str() else { continue };
        let build_context = match spec.get("build") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(b) => Some(
                b.get("context")
                    .and_then(Value::as_str)
                    .unwrap_or(".")
                    .to_string(),
            ),
        };
        let ports = spec
            .get("ports")
            .and_then(Value::as_sequence)
            .map(|ps| ps.iter().filter_map(parse_port).collect())
            .unwrap_or_default();
        let mut binds = Vec::new();
        for vol in spec
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            match vol {
                Value::String(s) => {
                    let mut parts = s.splitn(3, ':');
                    if let (Some(src), Some(dst)) = (parts.next(), parts.next()) {
                        if src.starts_with(['/', '.', '~']) {
                            binds.push((src.to_string(), dst.to_string()));
                        }
                    }
                }
                m @ Value::Mapping(_) => {
                    let kind = m.get("type").and_then(Value::as_str).unwrap_or("bind");
                    if let (Some(src), Some(dst), "bind") = (
                        m.get("source").and_then(Value::as_str),
                        m.get("target").and_then(Value::as_str),
                        kind,
                    ) {
                        binds.push((src.to_string(), dst.to_string()));
                    }
                }
                _ => {}
            }
        }
        let secrets = spec
            .get("secrets")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let (source, target) = match s {
                    Value::String(name) => (name.clone(), None),
                    m => (
                        m.get("source")?.as_str()?.to_string(),
                        m.get("target").and_then(Value::as_str).map(str::to_string),
                    ),
                };
                let target = match target {
                    Some(t) if t.starts_with('/') => t,
                    Some(t) => format!("/run/secrets/{t}"),
                    None => format!("/run/secrets/{source}"),
                };
                Some((source, target))
            })
            .collect();
        services.push(Service {
            name: name.to_string(),
            image: spec.get("image").and_then(scalar),
            build_context,
            env: parse_env(spec.get("environment")),
            ports,
            network_mode: spec.get("network_mode").and_then(scalar),
            healthcheck: parse_healthcheck(spec.get("healthcheck")),
            binds,
            secrets,
        });
    }
    if services.is_empty() {
        anyhow::bail!("the Compose configuration defines no services");
    }
    let secret_files = doc
        .get("secrets")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    Some((
                        k.as_str()?.to_string(),
                        v.get("file")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Resolved {
        services,
        secret_files,
    })
}

/// The PostgreSQL service: by image, by `POSTGRES_*` variables, then by name.
pub fn postgres_service(r: &Resolved) -> Option<&Service> {
    let by_image = |s: &&Service| {
        s.image.as_deref().is_some_and(|i| {
            let repo = i.rsplit('/').next().unwrap_or(i);
            repo.contains("postgres") || repo.contains("postgis") || repo.contains("timescale")
        })
    };
    let by_env = |s: &&Service| {
        s.build_context.is_none()
            && s.env
                .iter()
                .any(|(k, _)| k.starts_with("POSTGRES_") || k.starts_with("POSTGRESQL_"))
    };
    let by_name = |s: &&Service| {
        matches!(
            s.name.as_str(),
            "postgres" | "postgresql" | "db" | "database" | "pg"
        )
    };
    r.services
        .iter()
        .find(by_image)
        .or_else(|| r.services.iter().find(by_env))
        .or_else(|| r.services.iter().find(by_name))
}

/// The host file behind a path inside a service's container: a secret's file, or the
/// longest bind mount that holds it.
pub fn host_path(r: &Resolved, service: &Service, container_path: &str) -> Option<String> {
    if let Some((name, _)) = service.secrets.iter().find(|(_, t)| t == container_path) {
        return r.secret_files.get(name).cloned();
    }
    service
        .binds
        .iter()
        .filter_map(|(src, dst)| {
            let dst = dst.trim_end_matches('/');
            let rest = container_path.strip_prefix(dst)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| (dst.len(), format!("{src}{rest}")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, p)| p)
}

/// Which database the service creates, and how init knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbIdentity {
    pub user: String,
    pub name: String,
    /// Where each came from, for the output ("POSTGRES_USER", "POSTGRES_DB_FILE ...").
    pub user_from: String,
    pub name_from: String,
}

/// The database user and name the service's image creates: `POSTGRES_USER`,
/// `POSTGRES_DB` (default: the user), their `*_FILE` variants (the file read through
/// `read` at its host path: only these two, never a password), Bitnami's `POSTGRESQL_*`;
/// the official image's default `postgres` only when the service sets no user variable
/// at all. Err says why it cannot tell (a variable declared but empty: its value comes
/// from an environment or `.env` that is not here).
pub fn db_identity(
    r: &Resolved,
    service: &Service,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<DbIdentity, String> {
    let from = |keys: &[&str]| -> Result<Option<(String, String)>, String> {
        for key in keys {
            if let Some(v) = service.var(key) {
                if !v.trim().is_empty() {
                    return Ok(Some((v.trim().to_string(), (*key).to_string())));
                }
            }
            let file_key = format!("{key}_FILE");
            if let Some(path) = service.var(&file_key).filter(|p| !p.trim().is_empty()) {
                let host = host_path(r, service, path.trim()).ok_or_else(|| {
                    format!(
                        "{file_key} points at {path} inside service {}, which is neither a secret's file nor under a bind mount, so it cannot be read from here",
                        service.name
                    )
                })?;
                let value = read(&host).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).ok_or_else(|| {
                    format!("{file_key} points at {path} ({host} on this machine), which cannot be read or is empty")
                })?;
                return Ok(Some((value, format!("{file_key} ({host})"))));
            }
        }
        for key in keys {
            if service.var(key).is_some() {
                return Err(format!(
                    "{key} is empty in service {} after Compose resolved it: the variable it comes from is not set here (a `.env` that lives on the server only?)",
                    service.name
                ));
            }
        }
        Ok(None)
    };
    let official = service.var("POSTGRES_PASSWORD").is_some()
        || service.var("POSTGRES_PASSWORD_FILE").is_some()
        || service.var("POSTGRES_HOST_AUTH_METHOD").is_some()
        || service
            .image
            .as_deref()
            .is_some_and(|i| i.rsplit('/').next().unwrap_or(i).starts_with("postgres"));
    let (user, user_from) = match from(&["POSTGRES_USER", "POSTGRESQL_USERNAME"])? {
        Some(found) => found,
        None if official => (
            "postgres".to_string(),
            "the postgres image's default: the service sets no POSTGRES_USER".to_string(),
        ),
        None => {
            return Err(format!(
                "service {} sets no POSTGRES_USER (or POSTGRES_USER_FILE), so its database user is unknown",
                service.name
            ))
        }
    };
    let (name, name_from) = match from(&["POSTGRES_DB", "POSTGRESQL_DATABASE"])? {
        Some(found) => found,
        None => (
            user.clone(),
            "POSTGRES_DB is not set: the image names the database after the user".to_string(),
        ),
    };
    Ok(DbIdentity {
        user,
        name,
        user_from,
        name_from,
    })
}

/// What the health gate can check of one app service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceHealth {
    /// An HTTP URL from its healthcheck that answers from the host (published port or
    /// host networking); `healthcheck`: Docker's health status counts too.
    Probe { url: String, why: String },
    /// A healthcheck with no URL usable from the host: its Docker health status is the
    /// check. `why` says what was found.
    Healthcheck { why: String },
    /// No healthcheck: the gate sees only that it runs and does not restart. `guess`: a
    /// URL on its own port worth trying (init uses it only if it answers).
    Running { guess: Option<String> },
}

fn container_local(host: &str) -> bool {
    matches!(
        host,
        "127.0.0.1" | "localhost" | "0.0.0.0" | "::1" | "[::1]" | "::" | "[::]"
    )
}

/// The first HTTP URL in a healthcheck command (`http://...`, or curl/wget's scheme-less
/// `localhost:3000/path`).
pub fn healthcheck_url(test: &str) -> Option<url::Url> {
    let with_scheme = regex::Regex::new(r#"https?://[^\s'"`|;&)]+"#).expect("a valid regex");
    if let Some(m) = with_scheme.find(test) {
        return url::Url::parse(m.as_str()).ok();
    }
    let bare =
        regex::Regex::new(r#"(?:^|[\s'"])((?:localhost|127\.0\.0\.1):\d+(?:/[^\s'"`|;&)]*)?)"#)
            .expect("a valid regex");
    let m = bare.captures(test)?.get(1)?;
    url::Url::parse(&format!("http://{}", m.as_str())).ok()
}

/// What the gate can check of `service` from where stablehand runs. A healthcheck URL
/// counts only when it is reachable from the host: under host networking as it is, or
/// through the port that publishes its container port. Never another service's port.
pub fn service_health(service: &Service) -> ServiceHealth {
    let host_network = service.network_mode.as_deref() == Some("host");
    if let Some(hc) = &service.healthcheck {
        let Some(url) = healthcheck_url(&hc.test) else {
            return ServiceHealth::Healthcheck {
                why: format!("its healthcheck (`{}`) calls no HTTP URL", hc.test),
            };
        };
        let host = url.host_str().unwrap_or("").to_string();
        if !container_local(&host) {
            return ServiceHealth::Healthcheck {
                why: format!(
                    "its healthcheck calls {url}, a host only the container network knows"
                ),
            };
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let rewrite = |ip: &str, host_port: u16| {
            let mut u = url.clone();
            let _ = u.set_host(Some(ip));
            let _ = u.set_port(Some(host_port));
            u.to_string()
        };
        if host_network {
            return ServiceHealth::Probe {
                url: rewrite("127.0.0.1", port),
                why: format!("its healthcheck calls {url}, and it runs on the host's network"),
            };
        }
        if let Some(p) = service
            .ports
            .iter()
            .find(|p| p.target == port && p.published.is_some())
        {
            let ip = p
                .host_ip
                .as_deref()
                .filter(|ip| !matches!(*ip, "0.0.0.0" | "::" | ""))
                .unwrap_or("127.0.0.1");
            let published = p.published.unwrap_or(port);
            return ServiceHealth::Probe {
                url: rewrite(ip, published),
                why: format!(
                    "its healthcheck calls {url}, and port {port} is published on {ip}:{published}"
                ),
            };
        }
        return ServiceHealth::Healthcheck {
            why: format!(
                "its healthcheck calls {url}, but port {port} is not published: only the compose network reaches it"
            ),
        };
    }
    let own_port = service.ports.iter().find_map(|p| p.published).or_else(|| {
        host_network
            .then(|| {
                ["PORT", "APP_PORT", "HTTP_PORT", "WEB_PORT"]
                    .iter()
                    .find_map(|k| service.var(k)?.trim().parse::<u16>().ok())
            })
            .flatten()
    });
    ServiceHealth::Running {
        guess: own_port.map(|p| format!("http://127.0.0.1:{p}/health")),
    }
}

/// A Prisma schema init found: where, and the migrations folder it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrismaSchema {
    /// The schema file or folder, relative to the app directory.
    pub schema: String,
    /// The migrations folder, relative to the app directory.
    pub migrations: String,
    /// How it was found ("package.json prisma.schema", "prisma.config.ts", "found").
    pub how: String,
}

/// `prisma.config.ts`'s `schema: "..."` and `migrations: { path: "..." }`.
pub fn prisma_config_paths(text: &str) -> (Option<String>, Option<String>) {
    let schema =
        regex::Regex::new(r#"(?m)^\s*schema\s*:\s*(?:path\.join\([^,]*,\s*)?["'`]([^"'`]+)["'`]"#)
            .expect("a valid regex");
    let migrations =
        regex::Regex::new(r#"migrations\s*:\s*\{[^}]*?path\s*:\s*["'`]([^"'`]+)["'`]"#)
            .expect("a valid regex");
    (
        schema.captures(text).map(|c| c[1].to_string()),
        migrations.captures(text).map(|c| c[1].to_string()),
    )
}

/// package.json's `"prisma": { "schema": "..." }`.
pub fn package_json_schema(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get("prisma")?.get("schema")?.as_str().map(str::to_string)
}

/// Joins a path written in a file in `base` (relative to the app directory) to a clean
/// relative path; None when it leaves the app directory.
pub fn join_relative(base: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = base
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// The migrations folder to use: a schema declared in package.json or prisma.config.ts
/// wins over one found by looking; among several, the one inside an app service's build
/// context (relative to the app directory), then the shortest path.
pub fn choose_prisma<'a>(
    schemas: &'a [PrismaSchema],
    build_contexts: &[String],
) -> Option<&'a PrismaSchema> {
    let in_context = |s: &PrismaSchema| {
        build_contexts.iter().any(|c| {
            c.is_empty()
                || c == "."
                || s.schema
                    .starts_with(&format!("{}/", c.trim_end_matches('/')))
        })
    };
    schemas.iter().min_by_key(|s| {
        (
            s.how == "found",
            !in_context(s),
            s.schema.matches('/').count(),
            s.schema.clone(),
        )
    })
}

/// How the migrations folder compares with the ledger's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerMatch {
    Ok(String),
    /// Works, but something is off.
    Warn(String),
    /// A rollback would not find its down migrations.
    Fail(String),
}

/// Compares the migrations the ledger records as applied with the folders in
/// `migrations_dir` (None: the folder does not exist).
pub fn ledger_matches(applied: &[String], folders: Option<&[String]>, dir: &str) -> LedgerMatch {
    let Some(folders) = folders else {
        return if applied.is_empty() {
            LedgerMatch::Warn(format!(
                "{dir} does not exist and the ledger is empty (no migration applied yet)"
            ))
        } else {
            LedgerMatch::Fail(format!(
                "{dir} does not exist, but the ledger records {} applied migration(s) (newest {})",
                applied.len(),
                applied.last().map(String::as_str).unwrap_or("")
            ))
        };
    };
    if applied.is_empty() {
        return LedgerMatch::Ok(format!(
            "{} migration folder(s) in {dir}; the ledger is empty (none applied yet)",
            folders.len()
        ));
    }
    let missing: Vec<&String> = applied.iter().filter(|a| !folders.contains(a)).collect();
    if missing.is_empty() {
        LedgerMatch::Ok(format!(
            "all {} applied migration(s) have their folder in {dir}",
            applied.len()
        ))
    } else if missing.len() == applied.len() {
        LedgerMatch::Fail(format!(
            "none of the {} migration(s) the ledger records (e.g. {}) has a folder in {dir}: it is not this app's migrations folder",
            applied.len(),
            missing[0]
        ))
    } else {
        LedgerMatch::Warn(format!(
            "{} of {} applied migration(s) have no folder in {dir} (e.g. {}): squashed or renamed migrations have no down.sql",
            missing.len(),
            applied.len(),
            missing[0]
        ))
    }
}

/// Compares the compose files the running containers were created from (their
/// `com.docker.compose.project.config_files` and `...working_dir` labels) with the ones
/// the config names (absolute paths). Err names both.
pub fn running_files_match(
    labels: &[(String, String)],
    expected: &[std::path::PathBuf],
) -> Result<String, String> {
    let canon = |p: std::path::PathBuf| p.canonicalize().unwrap_or(p);
    let expected: Vec<std::path::PathBuf> = expected.iter().cloned().map(canon).collect();
    for (files, working_dir) in labels {
        let running: Vec<std::path::PathBuf> = files
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| canon(std::path::Path::new(working_dir).join(f)))
            .collect();
        if running != expected {
            let show = |v: &[std::path::PathBuf]| {
                v.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "the running containers were created from {}, but the config names {}",
                show(&running),
                show(&expected)
            ));
        }
    }
    Ok(format!(
        "the running containers come from {}",
        expected
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn file_choice_follows_the_server() {
        let present = s(&["docker-compose.production.yml", "docker-compose.yml"]);
        let explicit = choose_files(&s(&["a.yml", "b.yml"]), &[], &present).unwrap();
        assert_eq!(explicit.files, ["a.yml", "b.yml"]);
        assert_eq!(explicit.reason, "given with --file");

        let wf = vec![
            (
                ".github/workflows/ci.yml".to_string(),
                vec![s(&["docker-compose.yml"])],
            ),
            (
                ".github/workflows/deploy.yml".to_string(),
                vec![s(&["docker-compose.production.yml"])],
            ),
        ];
        let c = choose_files(&[], &wf, &present).unwrap();
        assert_eq!(c.files, ["docker-compose.production.yml"]);
        assert!(c.reason.contains("deploy.yml"), "{}", c.reason);
        assert_eq!(c.others, ["docker-compose.yml"]);

        let c = choose_files(&[], &[], &present).unwrap();
        assert_eq!(c.files, ["docker-compose.production.yml"]);
        assert!(c.reason.contains("production"));

        let c = choose_files(&[], &[], &s(&["compose.yaml", "docker-compose.yml"])).unwrap();
        assert_eq!(c.files, ["compose.yaml"]);
        assert_eq!(c.others, ["docker-compose.yml"]);

        let c = choose_files(
            &[],
            &[],
            &s(&["docker-compose.override.yml", "docker-compose.yml"]),
        )
        .unwrap();
        assert_eq!(
            c.files,
            ["docker-compose.yml", "docker-compose.override.yml"]
        );
        assert!(choose_files(&[], &[], &[]).is_none());
    }

    #[test]
    fn production_names() {
        for n in [
            "docker-compose.prod.yml",
            "docker-compose.production.yml",
            "compose.prod.yaml",
            "docker-compose-prod.yml",
        ] {
            assert!(is_production_name(n), "{n}");
        }
        for n in [
            "docker-compose.yml",
            "compose.products.yaml",
            "docker-compose.dev.yml",
        ] {
            assert!(!is_production_name(n), "{n}");
        }
        assert!(is_compose_file_name("docker-compose.production.yml"));
        assert!(!is_compose_file_name("Dockerfile"));
    }

    #[test]
    fn workflows_name_their_compose_files() {
        let wf = r#"
jobs:
  deploy:
    steps:
      - run: |
          ssh "$HOST" "cd /srv/app && docker-compose -f docker-compose.production.yml pull && \
            docker-compose -f ./docker-compose.production.yml up -d --build"
      - run: docker compose --file compose.yaml --file=compose.prod.yaml config
      - run: docker-compose -f "$FILE" up
      - run: echo nothing here
"#;
        assert_eq!(
            compose_file_sets(wf),
            vec![
                s(&["docker-compose.production.yml"]),
                s(&["compose.yaml", "compose.prod.yaml"])
            ]
        );
        assert_eq!(
            compose_file_sets("env:\n  COMPOSE_FILE: docker-compose.yml:docker-compose.prod.yml\n"),
            vec![s(&["docker-compose.yml", "docker-compose.prod.yml"])]
        );
    }

    const V1_CONFIG: &str = r#"
secrets:
  db_user:
    file: /srv/app/secrets/db_user
services:
  backend:
    build:
      context: /srv/app/backend
    expose:
    - '3000'
    healthcheck:
      test:
      - CMD
      - wget
      - --spider
      - http://127.0.0.1:3000/api/v1/health
  nginx:
    image: nginx
    ports:
    - published: 80
      target: 80
    - 127.0.0.1:8443:443/tcp
  postgres:
    environment:
      POSTGRES_DB: charhub_db
      POSTGRES_PASSWORD: hunter2
      POSTGRES_USER: charhub
    image: postgres:16
  api:
    build:
      context: /srv/app
    ports:
    - target: 3000
      published: 13000
    healthcheck:
      test: curl -fsS localhost:3000/healthz || exit 1
  worker:
    build: {context: /srv/app}
    network_mode: host
    healthcheck:
      test: ["CMD-SHELL", "wget -qO- http://localhost:9100/ready"]
  cron:
    build: {context: /srv/app}
    healthcheck:
      test: ["CMD", "pgrep", "cron"]
  sidecar:
    build: {context: /srv/app}
    ports: ["8088:8080"]
    healthcheck:
      disable: true
version: '3.8'
"#;

    fn resolved() -> Resolved {
        parse_resolved(&serde_norway::from_str(V1_CONFIG).unwrap()).unwrap()
    }

    #[test]
    fn health_comes_from_what_the_app_declares() {
        let r = resolved();
        let h = |n: &str| service_health(r.service(n).unwrap());
        assert!(
            matches!(h("backend"), ServiceHealth::Healthcheck { why } if why.contains("not published")),
            "expose only: gated on its healthcheck"
        );
        assert_eq!(
            h("api"),
            ServiceHealth::Probe {
                url: "http://127.0.0.1:13000/healthz".into(),
                why: "its healthcheck calls http://localhost:3000/healthz, and port 3000 is published on 127.0.0.1:13000".into()
            }
        );
        assert!(
            matches!(h("worker"), ServiceHealth::Probe { url, .. } if url == "http://127.0.0.1:9100/ready")
        );
        assert!(matches!(h("cron"), ServiceHealth::Healthcheck { .. }));
        assert_eq!(
            h("sidecar"),
            ServiceHealth::Running {
                guess: Some("http://127.0.0.1:8088/health".into())
            }
        );
        // The proxy's published port is never taken for another service.
        assert_eq!(
            h("nginx"),
            ServiceHealth::Running {
                guess: Some("http://127.0.0.1:80/health".into())
            }
        );
        let nginx = r.service("nginx").unwrap();
        assert_eq!(
            nginx.ports[1],
            Port {
                host_ip: Some("127.0.0.1".into()),
                published: Some(8443),
                target: 443
            }
        );
    }

    #[test]
    fn a_v2_json_config_reads_the_same() {
        let json = r#"{"name":"shop","services":{"db":{"image":"postgres:16","environment":{"POSTGRES_USER":"shop","POSTGRES_PASSWORD":null}},
            "api":{"build":{"context":"/srv/shop"},"ports":[{"mode":"ingress","host_ip":"127.0.0.1","target":8080,"published":"18080","protocol":"tcp"}],
            "healthcheck":{"test":["CMD","wget","-q","--spider","http://127.0.0.1:8080/health"],"interval":"5s"}}}}"#;
        let doc: Value = serde_json::from_str(json).unwrap();
        let r = parse_resolved(&doc).unwrap();
        assert!(
            matches!(service_health(r.service("api").unwrap()), ServiceHealth::Probe { url, .. } if url == "http://127.0.0.1:18080/health")
        );
        let db = postgres_service(&r).unwrap();
        let id = db_identity(&r, db, &|_| None).unwrap();
        assert_eq!((id.user.as_str(), id.name.as_str()), ("shop", "shop"));
    }

    #[test]
    fn database_identity_from_the_resolved_service() {
        let r = resolved();
        let pg = postgres_service(&r).unwrap();
        assert_eq!(pg.name, "postgres");
        let id = db_identity(&r, pg, &|_| None).unwrap();
        assert_eq!(
            (id.user.as_str(), id.name.as_str()),
            ("charhub", "charhub_db")
        );

        // An interpolated variable that is not set here: an error that says so, never postgres.
        let mut empty = pg.clone();
        empty.env = vec![
            ("POSTGRES_USER".into(), Some(String::new())),
            ("POSTGRES_DB".into(), Some(String::new())),
        ];
        let err = db_identity(&r, &empty, &|_| None).unwrap_err();
        assert!(err.contains("POSTGRES_USER is empty"), "{err}");

        // *_FILE through a secret and through a bind mount; the password file is never read.
        let mut files = pg.clone();
        files.env = vec![
            (
                "POSTGRES_USER_FILE".into(),
                Some("/run/secrets/db_user".into()),
            ),
            ("POSTGRES_DB_FILE".into(), Some("/conf/db/name".into())),
            (
                "POSTGRES_PASSWORD_FILE".into(),
                Some("/run/secrets/db_pw".into()),
            ),
        ];
        files.secrets = vec![("db_user".into(), "/run/secrets/db_user".into())];
        files.binds = vec![
            ("/srv/app/conf".into(), "/conf".into()),
            ("/srv/app/dbconf".into(), "/conf/db".into()),
        ];
        let read = |p: &str| match p {
            "/srv/app/secrets/db_user" => Some("app_user\n".to_string()),
            "/srv/app/dbconf/name" => Some("app_db".to_string()),
            other => panic!("read {other}"),
        };
        let id = db_identity(&r, &files, &read).unwrap();
        assert_eq!((id.user.as_str(), id.name.as_str()), ("app_user", "app_db"));
        assert!(id.user_from.contains("POSTGRES_USER_FILE"));

        // The official image with no user variable: its documented default, said so.
        let mut bare = pg.clone();
        bare.env = vec![("POSTGRES_PASSWORD".into(), Some("x".into()))];
        let id = db_identity(&r, &bare, &|_| None).unwrap();
        assert_eq!(
            (id.user.as_str(), id.name.as_str()),
            ("postgres", "postgres")
        );
        assert!(id.user_from.contains("default"));
        // A custom image with no variable: unknown.
        bare.image = Some("acme/db:1".into());
        bare.env.clear();
        assert!(db_identity(&r, &bare, &|_| None).is_err());
    }

    #[test]
    fn prisma_locations() {
        assert_eq!(
            prisma_config_paths("export default defineConfig({\n  schema: \"prisma/schema.prisma\",\n  migrations: { path: 'db/migrations' },\n})"),
            (Some("prisma/schema.prisma".into()), Some("db/migrations".into()))
        );
        assert_eq!(
            package_json_schema(r#"{"name":"api","prisma":{"schema":"db/schema.prisma"}}"#)
                .as_deref(),
            Some("db/schema.prisma")
        );
        assert_eq!(
            join_relative("apps/api", "../api/prisma/x").as_deref(),
            Some("apps/api/prisma/x")
        );
        assert_eq!(join_relative("", "../x"), None);
        let found = |schema: &str| PrismaSchema {
            schema: schema.into(),
            migrations: schema.rsplit_once('/').unwrap().0.to_string() + "/migrations",
            how: "found".into(),
        };
        let schemas = vec![
            found("apps/web/prisma/schema.prisma"),
            found("apps/api/prisma/schema.prisma"),
        ];
        assert_eq!(
            choose_prisma(&schemas, &s(&["apps/api"]))
                .unwrap()
                .migrations,
            "apps/api/prisma/migrations"
        );
    }

    #[test]
    fn ledger_and_folders() {
        let dir = "backend/prisma/migrations";
        assert!(matches!(
            ledger_matches(&[], None, dir),
            LedgerMatch::Warn(_)
        ));
        assert!(matches!(
            ledger_matches(&s(&["001_init"]), None, dir),
            LedgerMatch::Fail(_)
        ));
        assert!(matches!(
            ledger_matches(&s(&["001_init"]), Some(&s(&["001_init", "002_x"])), dir),
            LedgerMatch::Ok(_)
        ));
        assert!(matches!(
            ledger_matches(&s(&["001_init", "002_x"]), Some(&s(&["002_x"])), dir),
            LedgerMatch::Warn(_)
        ));
        assert!(matches!(
            ledger_matches(&s(&["001_init"]), Some(&s(&["20240101_other"])), dir),
            LedgerMatch::Fail(_)
        ));
    }

    #[test]
    fn running_compose_files_are_compared() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("docker-compose.yml"), "").unwrap();
        std::fs::write(d.join("docker-compose.production.yml"), "").unwrap();
        let wd = d.display().to_string();
        let prod = vec![d.join("docker-compose.production.yml")];
        assert!(running_files_match(
            &[("docker-compose.production.yml".into(), wd.clone())],
            &prod
        )
        .is_ok());
        let abs = d
            .join("docker-compose.production.yml")
            .display()
            .to_string();
        assert!(running_files_match(&[(abs, "/elsewhere".into())], &prod).is_ok());
        let err = running_files_match(&[("docker-compose.yml".into(), wd)], &prod).unwrap_err();
        assert!(
            err.contains("docker-compose.yml") && err.contains("production"),
            "{err}"
        );
    }
}
