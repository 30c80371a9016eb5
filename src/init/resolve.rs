//! Resolving a layout's Compose files: `compose config` where it answers, the files read directly (with `.env` interpolation) where it does not.

use super::*;

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$VAR` from `vars` (the fallback
/// when no compose tool is installed; Compose does this itself otherwise).
pub(super) fn interpolate(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
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
pub(super) fn env_file_vars(text: &str) -> Vec<(String, String)> {
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

pub(super) fn interpolate_value(v: &mut Value, vars: &dyn Fn(&str) -> Option<String>) {
    match v {
        Value::String(s) => *s = interpolate(s, vars),
        Value::Sequence(items) => items.iter_mut().for_each(|i| interpolate_value(i, vars)),
        Value::Mapping(m) => m.iter_mut().for_each(|(_, i)| interpolate_value(i, vars)),
        _ => {}
    }
}

/// Compose's merge of a later file over an earlier one, simplified: mappings merge key
/// by key (`environment`, `build`, ...), anything else is replaced.
pub(super) fn merge_into(into: &mut Value, from: &Value) {
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
pub(super) fn read_files_directly(dir: &Path, files: &[String]) -> anyhow::Result<Value> {
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

pub(super) fn layout_env(v: Option<&Value>) -> Vec<(String, Option<String>)> {
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
pub(super) fn resolve(dir: &Path, files: &[String]) -> anyhow::Result<(Value, String, bool)> {
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
