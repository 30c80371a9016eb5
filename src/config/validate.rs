//! Checks of a parsed configuration that its types alone cannot make.

use std::path::Path;

use super::errors::locate_in;
use super::*;

/// A conservative subset of git's ref-name rules.
pub(crate) fn is_ref_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        && !s.starts_with(['-', '/', '.'])
        && !s.contains("..")
        && !s.contains("//")
        && !s.ends_with(".lock")
}

/// Why `program` (runtime.docker, runtime.compose) cannot be run, if it cannot.
pub(crate) fn unusable_program(program: &Path) -> Option<String> {
    if !program.is_absolute() {
        return Some(format!(
            "{} is not an absolute path; give the binary's full path (e.g. /var/lib/toolbox/bin/docker-compose)",
            program.display()
        ));
    }
    match std::fs::metadata(program) {
        Err(e) => Some(format!(
            "{} cannot be used ({e}); give the path of the binary this server runs (`command -v docker-compose`, or the path your deploy scripts call)",
            program.display()
        )),
        Ok(_) if !crate::files::is_executable_file(program) => Some(format!(
            "{} is not an executable file; point it at the binary itself (chmod +x if needed)",
            program.display()
        )),
        Ok(_) => None,
    }
}

pub(crate) fn validate(c: &Config, text: &str, path: &Path) -> Result<(), ConfigError> {
    // `nth`: which table of an array of tables (`[[health.http]]`, `[[backup.remote]]`).
    let invalid_in = |key: &str, nth: Option<usize>, message: String| {
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
        ConfigError::Invalid {
            path: path.to_owned(),
            location: locate_in(text, section, nth, name)
                .map(|(l, c)| format!(":{l}:{c}"))
                .unwrap_or_default(),
            key: key.to_string(),
            message,
        }
    };
    let invalid = |key: &str, message: String| invalid_in(key, None, message);
    for (key, value) in [
        ("git.stable_tag", Some(c.git.stable_tag.as_str())),
        ("git.stable_prefix", Some(c.git.stable_prefix.as_str())),
        ("git.environment", c.git.environment.as_deref()),
        ("git.branch", c.git.branch.as_deref()),
    ] {
        if let Some(v) = value {
            if !is_ref_part(v) {
                return Err(invalid(
                    key,
                    format!("{v:?} cannot be part of a git tag or branch name; use letters, digits, '.', '_', '-' and '/'"),
                ));
            }
        }
    }
    if c.database.mode == DbMode::Compose && c.database.name.as_deref().unwrap_or("").is_empty() {
        return Err(invalid(
            "database.name",
            "compose mode needs the database name (for example name = \"app_db\")".into(),
        ));
    }
    if let Some(url) = &c.database.url {
        let parsed = crate::redact::SafeUrl::parse(url)
            .map_err(|e| invalid("database.url", format!("not a valid URL: {e}")))?;
        if parsed.password().is_some() || url.to_ascii_lowercase().contains("password=") {
            return Err(invalid(
                "database.url",
                "the URL carries a password; secrets never go in the config file: put the URL in the environment variable named by database.url_env (default DATABASE_URL) instead".into(),
            ));
        }
    }
    for (key, value) in [
        ("runtime.docker", &c.runtime.docker),
        ("runtime.compose", &c.runtime.compose),
    ] {
        if let Some(program) = value {
            if let Some(problem) = unusable_program(program) {
                return Err(invalid(key, problem));
            }
        }
    }
    if !(1..=19).contains(&c.backup.compression_level) {
        return Err(invalid(
            "backup.compression_level",
            format!(
                "{} is out of range: use 1 (fastest) to 19 (smallest); 3 is the default",
                c.backup.compression_level
            ),
        ));
    }
    for (i, probe) in c.health.http.iter().enumerate() {
        let parsed = crate::redact::SafeUrl::parse(&probe.url).map_err(|e| {
            invalid_in(
                "health.http.url",
                Some(i),
                format!("probe {} has an invalid URL: {e}", i + 1),
            )
        })?;
        if let Some(pattern) = &probe.matches {
            if let Err(e) = regex::Regex::new(pattern) {
                return Err(invalid(
                    "health.matches",
                    format!("probe {} has an invalid regular expression: {e}", i + 1),
                ));
            }
        }
        if !matches!(parsed.inner().scheme(), "http" | "https") {
            return Err(invalid_in(
                "health.http.url",
                Some(i),
                format!("probe {} must be an http:// or https:// URL", i + 1),
            ));
        }
    }
    if c.health.consecutive == 0 || c.health.interval.is_zero() || c.health.timeout.is_zero() {
        return Err(invalid(
            "health.consecutive",
            "consecutive, interval and timeout must be greater than zero".into(),
        ));
    }
    let r = &c.runtime;
    match r.kind {
        Some(RuntimeKind::Compose) => {
            for (key, set) in [
                ("runtime.build", r.build.is_some()),
                ("runtime.stop", r.stop.is_some()),
                ("runtime.start", r.start.is_some()),
            ] {
                if set {
                    return Err(invalid(key, "is for kind = \"command\"; with kind = \"compose\" stablehand builds, stops and starts runtime.services itself".into()));
                }
            }
        }
        Some(RuntimeKind::Command) => {
            if r.services.is_some() {
                return Err(invalid("runtime.services", "is for kind = \"compose\"; with kind = \"command\" set runtime.build, runtime.stop and runtime.start".into()));
            }
            if r.start.is_none() {
                return Err(invalid("runtime.kind", "kind = \"command\" needs runtime.start and runtime.stop (and optionally runtime.build)".into()));
            }
        }
        None => {}
    }
    if let Some(services) = &r.services {
        if services.iter().any(|s| s.is_empty()) {
            return Err(invalid(
                "runtime.services",
                "a service name is empty".into(),
            ));
        }
        if c.database.mode == DbMode::Compose && services.contains(&c.database.service) {
            return Err(invalid("runtime.services", format!("lists the database service {:?}: stablehand never stops or rebuilds the database with the app; remove it", c.database.service)));
        }
    }
    if r.keep_images == 0 {
        return Err(invalid(
            "runtime.keep_images",
            "must be at least 1: the images of the running release are always kept".into(),
        ));
    }
    if c.runtime.stop.is_some() != c.runtime.start.is_some() {
        return Err(invalid(
            if c.runtime.stop.is_some() { "runtime.start" } else { "runtime.stop" },
            "runtime.stop and runtime.start go together: an app that stablehand stops must be started again".into(),
        ));
    }
    if !matches!(c.database.migrations.as_str(), "prisma" | "none") {
        return Err(invalid(
            "database.migrations",
            format!(
                "{:?} is not known: use \"prisma\" or \"none\"",
                c.database.migrations
            ),
        ));
    }
    if c.database.migrations_dir.is_absolute()
        || c.database
            .migrations_dir
            .components()
            .any(|p| matches!(p, std::path::Component::ParentDir))
    {
        return Err(invalid(
            "database.migrations_dir",
            "must be a path inside the app directory (relative, no `..`): the down migrations are read from the deployed commit's tree".into(),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, r) in c.backup.remote.iter().enumerate() {
        if r.name.is_empty()
            || !r
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
        {
            return Err(invalid_in(
                "backup.remote.name",
                Some(i),
                format!("{:?}: use letters, digits, '-' and '_'", r.name),
            ));
        }
        if !names.insert(r.name.as_str()) {
            return Err(invalid_in(
                "backup.remote.name",
                Some(i),
                format!("two remotes are named {:?}; names must be unique", r.name),
            ));
        }
        if let Err(why) = Location::parse(&r.url) {
            return Err(invalid_in(
                "backup.remote.url",
                Some(i),
                format!("remote {:?}: {why}", r.name),
            ));
        }
        if let Some(e) = &r.endpoint {
            if e.starts_with("http://") && !r.allow_http {
                return Err(invalid_in(
                    "backup.remote.endpoint",
                Some(i),
                    format!("remote {:?}: {e} is plain HTTP; set allow_http = true only for a local test endpoint", r.name),
                ));
            }
            if url::Url::parse(e).is_ok_and(|u| u.password().is_some() || !u.username().is_empty())
            {
                return Err(invalid_in(
                    "backup.remote.endpoint",
                Some(i),
                    format!("remote {:?}: credentials never go in the config file; name the environment variables with access_key_id_env and secret_access_key_env", r.name),
                ));
            }
        }
        if r.keep_last == Some(0) && r.keep_within.is_none_or(|d| d.is_zero()) {
            return Err(invalid_in(
                "backup.remote.keep_last",
                Some(i),
                format!(
                    "remote {:?}: keep_last = 0 without keep_within keeps nothing",
                    r.name
                ),
            ));
        }
    }
    if let Some(enc) = &c.backup.encryption {
        if enc.recipients.is_empty() {
            return Err(invalid(
                "backup.encryption.recipients",
                "list at least one age public key (age1...); `age-keygen -o key.txt` makes a key pair and prints its public key".into(),
            ));
        }
        for r in &enc.recipients {
            if let Err(why) = parse_recipient(r) {
                return Err(invalid("backup.encryption.recipients", why));
            }
        }
        if enc.encrypt_local && enc.identity_file.is_none() {
            return Err(invalid(
                "backup.encryption.encrypt_local",
                "encrypted local backups cannot be verified or restored without the key: set identity_file".into(),
            ));
        }
    }
    if c.database.on_rollback == DbPolicy::Down && c.database.migrations != "prisma" {
        return Err(invalid(
            "database.on_rollback",
            "\"down\" needs database.migrations = \"prisma\": down migrations are found through the _prisma_migrations ledger".into(),
        ));
    }
    for (key, env, file) in [
        (
            "notify.slack_webhook_env",
            &c.notify.slack_webhook_env,
            &c.notify.slack_webhook_file,
        ),
        (
            "notify.webhook_url_env",
            &c.notify.webhook_url_env,
            &c.notify.webhook_url_file,
        ),
    ] {
        if env.is_some() && file.is_some() {
            return Err(invalid(
                key,
                "set the variable or the file, not both".into(),
            ));
        }
        if let Some(name) = env {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                || name.contains("://")
            {
                return Err(invalid(key, "is not an environment variable name (letters, digits and _); the URL itself goes in the environment, e.g. SLACK_WEBHOOK_URL, and its name here".into()));
            }
        }
    }
    if c.notify.attempts == 0 || c.notify.timeout.is_zero() {
        return Err(invalid(
            "notify.attempts",
            "attempts and timeout must be greater than zero".into(),
        ));
    }
    for (key, expr) in [
        ("schedule.backup", &c.schedule.backup),
        ("schedule.verify", &c.schedule.verify),
        ("schedule.prune", &c.schedule.prune),
    ] {
        if let Some(expr) = expr {
            if let Err(e) = expr.parse::<croner::Cron>() {
                return Err(invalid(
                    key,
                    format!("{expr:?} is not a cron expression ({e}); write it like \"0 3 * * *\" (minute hour day month weekday, UTC)"),
                ));
            }
        }
    }
    if c.serve.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(invalid(
            "serve.listen",
            format!(
                "{:?} is not an address like \"127.0.0.1:9750\"",
                c.serve.listen
            ),
        ));
    }
    if let Some(p) = &c.proxy {
        for (key, value) in [("proxy.listen", &p.listen), ("proxy.upstream", &p.upstream)] {
            if value.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    key,
                    format!("{value:?} is not an address like \"127.0.0.1:8080\""),
                ));
            }
        }
        if p.listen == p.upstream {
            return Err(invalid(
                "proxy.upstream",
                "is proxy.listen: the app must serve on its own address, behind the proxy".into(),
            ));
        }
        let next = p.next_upstream();
        if p.next_port() == 0
            || [&p.listen, &p.upstream]
                .iter()
                .any(|a| a.ends_with(&format!(":{}", p.next_port())))
        {
            return Err(invalid(
                "proxy.port",
                format!("{next} is proxy.listen's or proxy.upstream's port: the new release needs a port of its own while it is gated"),
            ));
        }
        if p.port_env.trim().is_empty() && p.container_port.is_none() {
            return Err(invalid(
                "proxy.port_env",
                "is empty: name the variable the app reads its port from, or set proxy.container_port".into(),
            ));
        }
    }
    if c.database.keep_replaced_databases == 0 {
        return Err(invalid(
            "database.keep_replaced_databases",
            "must be at least 1: the database a restore replaces is always kept".into(),
        ));
    }
    if c.backup.timeout.is_zero() {
        return Err(invalid("backup.timeout", "must be longer than 0s".into()));
    }
    if c.backup.keeps_nothing() {
        return Err(invalid(
            "backup.keep_last",
            "the retention policy keeps nothing (keep_last, keep_within, keep_daily, keep_weekly and keep_monthly are all 0); refusing a policy that would delete every backup".into(),
        ));
    }
    Ok(())
}
