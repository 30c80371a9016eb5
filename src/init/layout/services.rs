//! The services of a resolved Compose configuration: their ports, environment and health checks, which one runs PostgreSQL and which database it creates, and what the health gate can probe.

use super::*;

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

pub(super) fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn port_number(v: &Value) -> Option<u16> {
    scalar(v)?.trim().parse().ok()
}

pub(super) fn parse_port(v: &Value) -> Option<Port> {
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

pub(super) fn parse_env(v: Option<&Value>) -> Vec<(String, Option<String>)> {
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

pub(super) fn parse_healthcheck(v: Option<&Value>) -> Option<Healthcheck> {
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

pub(super) fn container_local(host: &str) -> bool {
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
