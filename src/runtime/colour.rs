//! A second release of the app's services running beside the first (issue 18, blue/green):
//! its own Compose project, `<project>-<colour>`, from a file generated out of Compose's
//! resolved config (`compose config`, never the YAML re-read by hand). Only the app
//! services go in it, each with the release's image, no `container_name`, no published
//! ports, no `depends_on` (the database and other services keep running in the main
//! project), its listen port set to the colour's, on the main project's networks and
//! named volumes. The file holds interpolated values (secrets among them): it is
//! written 0600 under `.stablehand/colours/` and removed with the colour.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_norway::{Mapping, Value};

use super::compose::Compose;

/// How the colour's instance learns its listen port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    /// Host networking (or an app that reads its port): this environment variable.
    Env(String),
    /// The port inside the container, published on 127.0.0.1 at the colour's port.
    Container(u16),
}

/// One colour of the app.
#[derive(Debug, Clone)]
pub struct Colour {
    /// "blue" or "green".
    pub name: String,
    /// The main project's name.
    pub main_project: String,
    /// Where the colour's instance listens on this machine.
    pub port: u16,
    pub how: Port,
    /// service -> image of the release.
    pub images: BTreeMap<String, String>,
}

impl Colour {
    /// The colour's Compose project.
    pub fn project(&self) -> String {
        format!("{}-{}", self.main_project, self.name)
    }
}

fn key(k: &str) -> Value {
    Value::String(k.to_string())
}

/// The colour's Compose file, from the resolved config of the main project. Pure.
pub fn colour_file(resolved: &str, colour: &Colour) -> anyhow::Result<String> {
    let doc: Value = serde_norway::from_str(resolved).context("reading `compose config`")?;
    let services = doc
        .get("services")
        .and_then(Value::as_mapping)
        .context("`compose config` lists no services")?;
    let mut out_services = Mapping::new();
    let mut networks = Mapping::new();
    let mut volumes = Mapping::new();
    let declared = |section: &str, name: &str| -> String {
        doc.get(section)
            .and_then(|s| s.get(name))
            .and_then(|n| n.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}_{name}", colour.main_project))
    };
    for (service, image) in &colour.images {
        let Some(spec) = services.get(service.as_str()).and_then(Value::as_mapping) else {
            bail!("the Compose files define no service {service:?}");
        };
        let mut spec = spec.clone();
        for gone in [
            "container_name",
            "ports",
            "depends_on",
            "build",
            "links",
            "profiles",
        ] {
            spec.remove(gone);
        }
        spec.insert(key("image"), Value::String(image.clone()));
        match &colour.how {
            Port::Env(var) => {
                let env = spec
                    .entry(key("environment"))
                    .or_insert_with(|| Value::Mapping(Mapping::new()));
                if let Value::Sequence(list) = env {
                    // KEY=value entries, as some Compose versions print them.
                    let mut map = Mapping::new();
                    for item in list.iter().filter_map(Value::as_str) {
                        let (k, v) = item.split_once('=').unwrap_or((item, ""));
                        map.insert(key(k), key(v));
                    }
                    *env = Value::Mapping(map);
                }
                if let Value::Mapping(map) = env {
                    map.insert(key(var), Value::String(colour.port.to_string()));
                }
            }
            Port::Container(inside) => {
                spec.insert(
                    key("ports"),
                    Value::Sequence(vec![Value::String(format!(
                        "127.0.0.1:{}:{inside}",
                        colour.port
                    ))]),
                );
            }
        }
        let host_network = spec
            .get("network_mode")
            .and_then(Value::as_str)
            .is_some_and(|m| m == "host");
        if !host_network {
            // The main project's networks, so the colour reaches its database by name.
            let names: Vec<String> = match spec.get("networks") {
                Some(Value::Mapping(m)) => m
                    .keys()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect(),
                Some(Value::Sequence(s)) => s
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect(),
                _ => vec!["default".to_string()],
            };
            if spec.get("networks").is_none() {
                let mut m = Mapping::new();
                m.insert(key("default"), Value::Null);
                spec.insert(key("networks"), Value::Mapping(m));
            }
            for n in names {
                let mut external = Mapping::new();
                external.insert(key("external"), Value::Bool(true));
                external.insert(key("name"), Value::String(declared("networks", &n)));
                networks.insert(key(&n), Value::Mapping(external));
            }
        }
        // Named volumes are the main project's: the same data as the running release.
        if let Some(Value::Sequence(mounts)) = spec.get("volumes") {
            for m in mounts {
                let source = match m {
                    Value::Mapping(v)
                        if v.get("type").and_then(Value::as_str) == Some("volume") =>
                    {
                        v.get("source").and_then(Value::as_str).map(str::to_string)
                    }
                    Value::String(s) => s
                        .split(':')
                        .next()
                        .filter(|src| {
                            !src.starts_with('/')
                                && !src.starts_with('.')
                                && !src.is_empty()
                                && s.contains(':')
                        })
                        .map(str::to_string),
                    _ => None,
                };
                if let Some(name) = source {
                    let mut external = Mapping::new();
                    external.insert(key("external"), Value::Bool(true));
                    external.insert(key("name"), Value::String(declared("volumes", &name)));
                    volumes.insert(key(&name), Value::Mapping(external));
                }
            }
        }
        out_services.insert(key(service), Value::Mapping(spec));
    }
    let mut out = Mapping::new();
    if let Some(v) = doc.get("version") {
        out.insert(key("version"), v.clone());
    }
    out.insert(key("services"), Value::Mapping(out_services));
    if !networks.is_empty() {
        out.insert(key("networks"), Value::Mapping(networks));
    }
    if !volumes.is_empty() {
        out.insert(key("volumes"), Value::Mapping(volumes));
    }
    Ok(serde_norway::to_string(&Value::Mapping(out))?)
}

/// Where a colour's file lives.
pub fn file_path(state_dir: &Path, colour: &str) -> PathBuf {
    state_dir.join("colours").join(format!("{colour}.yml"))
}

/// Starts `colour` beside the running release: its file written (0600), its project up.
pub fn start(compose: &Compose, state_dir: &Path, colour: &Colour) -> anyhow::Result<()> {
    let text = colour_file(&compose.resolved_config()?, colour)?;
    let path = file_path(state_dir, &colour.name);
    fs_err::create_dir_all(path.parent().expect("a parent"))?;
    crate::files::write_file_atomic(&path, text.as_bytes())?;
    compose
        .cmd_for(
            std::slice::from_ref(&path),
            Some(&colour.project()),
            ["up", "-d", "--no-build"],
        )
        .timeout(Duration::from_secs(600))
        .output()
        .with_context(|| {
            format!(
                "starting the {} release (project {})",
                colour.name,
                colour.project()
            )
        })?;
    Ok(())
}

/// Removes `colour`'s containers (never a volume) and its file.
pub fn remove(compose: &Compose, state_dir: &Path, colour: &Colour) -> anyhow::Result<()> {
    let path = file_path(state_dir, &colour.name);
    if path.exists() {
        compose
            .cmd_for(
                std::slice::from_ref(&path),
                Some(&colour.project()),
                ["down", "--remove-orphans", "--timeout", "10"],
            )
            .timeout(Duration::from_secs(300))
            .output()
            .with_context(|| {
                format!(
                    "removing the {} release (project {})",
                    colour.name,
                    colour.project()
                )
            })?;
        fs_err::remove_file(&path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOLVED: &str = r#"
name: shop
services:
  backend:
    build:
      context: /srv/shop/backend
    container_name: shop-backend
    depends_on:
      db:
        condition: service_healthy
    environment:
      DATABASE_URL: postgresql://app:secret@db:5432/app
      PORT: "3000"
    image: shop-backend
    ports:
      - mode: ingress
        target: 3000
        published: "3000"
        protocol: tcp
    volumes:
      - type: volume
        source: uploads
        target: /app/uploads
      - type: bind
        source: /srv/shop/config
        target: /app/config
  web:
    image: nginx
    network_mode: host
    environment:
      - WEB_PORT=8080
  db:
    image: postgres:15
networks:
  default:
    name: shop_default
volumes:
  uploads:
    name: shop_uploads
"#;

    fn colour(how: Port, service: &str) -> Colour {
        Colour {
            name: "blue".into(),
            main_project: "shop".into(),
            port: 18081,
            how,
            images: BTreeMap::from([(service.to_string(), format!("shop-{service}:sh-abc"))]),
        }
    }

    #[test]
    fn a_colour_runs_only_the_app_service_with_its_image_and_port_on_the_main_network() {
        let text = colour_file(RESOLVED, &colour(Port::Container(3000), "backend")).unwrap();
        let doc: Value = serde_norway::from_str(&text).unwrap();
        let backend = &doc["services"]["backend"];
        assert!(doc["services"].get("db").is_none(), "{text}");
        assert_eq!(backend["image"], "shop-backend:sh-abc");
        for gone in ["container_name", "depends_on", "build"] {
            assert!(backend.get(gone).is_none(), "{gone}: {text}");
        }
        assert_eq!(backend["ports"][0], "127.0.0.1:18081:3000");
        assert_eq!(doc["networks"]["default"]["external"], true);
        assert_eq!(doc["networks"]["default"]["name"], "shop_default");
        assert_eq!(doc["volumes"]["uploads"]["name"], "shop_uploads");
        assert_eq!(
            backend["environment"]["DATABASE_URL"],
            "postgresql://app:secret@db:5432/app"
        );
    }

    #[test]
    fn a_host_network_colour_gets_its_port_through_the_environment() {
        let text = colour_file(RESOLVED, &colour(Port::Env("WEB_PORT".into()), "web")).unwrap();
        let doc: Value = serde_norway::from_str(&text).unwrap();
        let web = &doc["services"]["web"];
        assert_eq!(web["environment"]["WEB_PORT"], "18081");
        assert_eq!(web["network_mode"], "host");
        assert!(doc.get("networks").is_none(), "{text}");
        assert!(colour_file(RESOLVED, &colour(Port::Env("P".into()), "nope")).is_err());
    }
}
