//! doctor's checks of what the config says about the app, against what runs: the health
//! URLs answer, the database user and name exist in the service, the migrations folder
//! holds the ledger's migrations, and the running containers came from the compose
//! files the config names. Each is what would make the first deploy fail or roll back.

use std::path::PathBuf;
use std::time::Duration;

use super::{fail, warn, Findings};
use crate::config::{DbMode, Loaded, RuntimeKind, COMPOSE_FILE_NAMES};
use crate::db::Database;
use crate::init::LedgerMatch;

/// One container started from the app directory, from its Compose labels.
struct Labeled {
    project: String,
    service: String,
    config_files: String,
    working_dir: String,
    running: bool,
}

/// The project name Compose uses for the config: `runtime.project`, else
/// `COMPOSE_PROJECT_NAME`, else the app directory's name.
fn project_name(loaded: &Loaded) -> String {
    let raw = loaded
        .config
        .runtime
        .project
        .clone()
        .or_else(|| {
            std::env::var("COMPOSE_PROJECT_NAME")
                .ok()
                .filter(|p| !p.is_empty())
        })
        .unwrap_or_else(|| {
            let dir = loaded
                .app_dir
                .canonicalize()
                .unwrap_or_else(|_| loaded.app_dir.clone());
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    crate::runtime::compose::normalize_project_name(&raw)
}

/// The compose files the config names, as absolute paths (Compose's default file and
/// its override file when `runtime.files` is empty).
fn expected_files(loaded: &Loaded) -> Vec<PathBuf> {
    let dir = &loaded.app_dir;
    if !loaded.config.runtime.files.is_empty() {
        return loaded
            .config
            .runtime
            .files
            .iter()
            .map(|f| dir.join(f))
            .collect();
    }
    let Some(default) = COMPOSE_FILE_NAMES.iter().find(|n| dir.join(n).is_file()) else {
        return Vec::new();
    };
    let mut files = vec![dir.join(default)];
    let stem = default.rsplit_once('.').map(|(s, _)| s).unwrap_or(default);
    if let Some(o) = ["yaml", "yml"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.override.{ext}")))
        .find(|p| p.is_file())
    {
        files.push(o);
    }
    files
}

/// The containers Compose created from the app directory (any project), by label.
fn containers_from(loaded: &Loaded) -> anyhow::Result<Vec<Labeled>> {
    let dir = &loaded.app_dir;
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    // Through the configured docker (runtime.docker, runtime.sudo), as every call.
    let out = crate::runtime::access::Docker::from_config(&loaded.app_dir, &loaded.config.runtime)
        .docker(["ps", "--all", "--no-trunc", "--filter"])
        .arg(format!(
            "label=com.docker.compose.project.working_dir={}",
            dir.display()
        ))
        .arg("--format")
        .arg("{{.State}}\t{{.Label \"com.docker.compose.project\"}}\t{{.Label \"com.docker.compose.service\"}}\t{{.Label \"com.docker.compose.project.config_files\"}}\t{{.Label \"com.docker.compose.project.working_dir\"}}")
        .timeout(Duration::from_secs(60))
        .output()?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let state = f.next()?;
            Some(Labeled {
                running: state == "running",
                project: f.next()?.to_string(),
                service: f.next()?.to_string(),
                config_files: f.next()?.to_string(),
                working_dir: f.next()?.to_string(),
            })
        })
        .collect())
}

/// The checks of this file, appended to `f`. `db`: the database, when doctor could
/// build access to it.
pub(super) fn checks(loaded: &Loaded, db: Option<&Database>, f: &mut Findings) {
    let cfg = &loaded.config;
    let compose = cfg.runtime.effective_kind(&loaded.app_dir) == Some(RuntimeKind::Compose);
    let project = project_name(loaded);
    let containers = if compose {
        match containers_from(loaded) {
            Ok(c) => Some(c),
            Err(e) => {
                f.push(
                    "compose files",
                    Err(warn(e, "check that this user may use Docker (`docker ps`)")),
                );
                None
            }
        }
    } else {
        None
    };
    let ours: Vec<&Labeled> = containers
        .iter()
        .flatten()
        .filter(|c| c.project == project)
        .collect();
    // The app runs: one of its services (not the database's) has a running container.
    let app_services: Vec<&String> = match &cfg.runtime.services {
        Some(list) => list.iter().collect(),
        None => cfg.health.containers.iter().collect(),
    };
    let app_running = ours.iter().any(|c| {
        c.running && c.service != cfg.database.service && app_services.contains(&&c.service)
    });

    // The running containers came from the files the config names.
    if let Some(all) = &containers {
        let expected = expected_files(loaded);
        if ours.is_empty() {
            let others: std::collections::BTreeSet<&str> =
                all.iter().map(|c| c.project.as_str()).collect();
            f.push(
                "compose files",
                if others.is_empty() {
                    Ok("no container of the app exists yet: the first deploy creates them".into())
                } else {
                    Err(fail(
                        format!(
                            "the containers started from this directory belong to the Compose project {}, but the config's project is {project}: a deploy would start a second copy beside them",
                            others.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                        "set runtime.project to the running project's name",
                    ))
                },
            );
        } else {
            let labels: Vec<(String, String)> = ours
                .iter()
                .map(|c| (c.config_files.clone(), c.working_dir.clone()))
                .collect();
            f.push(
                "compose files",
                crate::init::running_files_match(&labels, &expected).map_err(|e| {
                    fail(
                        e,
                        "set runtime.files to the files the server runs (`stablehand init --force --file F` rewrites the config)",
                    )
                }),
            );
        }
    }

    // Every health URL answers now (when the app runs, a failure is what the gate will see).
    for probe in &cfg.health.http {
        let result = crate::health::probe_http(probe);
        let check = format!("health {}", result.url);
        f.push(
            &check,
            if result.ok {
                Ok(format!("answers: {}", result.detail))
            } else if app_running {
                Err(fail(
                    format!("the app runs, but {} answers: {}", result.url, result.detail),
                    "point [[health.http]] url at an endpoint reachable from this host (a published port, or host networking), or remove the probe and gate on the service's healthcheck",
                ))
            } else {
                Err(warn(
                    format!("{}: {} (the app is not running now)", result.url, result.detail),
                    "start the app and run doctor again: the gate will probe this URL after a deploy",
                ))
            },
        );
    }

    let Some(db) = db else { return };
    // The user and the database exist in the service.
    if db.mode == DbMode::Compose {
        let user = &cfg.database.user;
        let name = db.name.clone();
        let service_says = || -> String {
            let files: Vec<String> = cfg
                .runtime
                .files
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let files = if files.is_empty() {
                expected_files(loaded)
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect()
            } else {
                files
            };
            crate::init::resolved_services(&loaded.app_dir, &files)
                .ok()
                .and_then(|r| {
                    let svc = r.service(&cfg.database.service)?.clone();
                    let id = crate::init::db_identity(&r, &svc, &|p| {
                        std::fs::read_to_string(loaded.app_dir.join(p)).ok()
                    })
                    .ok()?;
                    Some(format!(
                        " (the service's environment says user {}, database {})",
                        id.user, id.name
                    ))
                })
                .unwrap_or_default()
        };
        match db.maintenance().query("select current_user") {
            Err(e)
                if format!("{e:#}").contains("does not exist")
                    && format!("{e:#}").contains("role") =>
            {
                f.push(
                    "database user",
                    Err(fail(
                        format!(
                            "the role {user:?} does not exist in service {}{}",
                            cfg.database.service,
                            service_says()
                        ),
                        "set database.user to the role the service creates (POSTGRES_USER)",
                    )),
                );
            }
            Err(_) => {}
            Ok(_) => {
                f.push(
                    "database user",
                    Ok(format!("{user} exists in service {}", cfg.database.service)),
                );
                let exists = db.maintenance().query(&format!(
                    "select exists (select from pg_database where datname = {})::text",
                    crate::db::ops::literal(&name)
                ));
                if let Ok(exists) = exists {
                    f.push(
                        "database name",
                        if exists.trim() == "true" {
                            Ok(format!("{name} exists"))
                        } else {
                            let list = db
                                .maintenance()
                                .query("select string_agg(datname, ', ' order by datname) from pg_database where not datistemplate")
                                .unwrap_or_default();
                            Err(fail(
                                format!(
                                    "there is no database {name:?} in service {}{}; it has: {}",
                                    cfg.database.service,
                                    service_says(),
                                    list.trim()
                                ),
                                "set database.name to the app's database (POSTGRES_DB)",
                            ))
                        },
                    );
                }
            }
        }
    }

    // The migrations folder holds the migrations the ledger records.
    if cfg.database.migrations == "prisma" {
        if let Ok(ledger) = db.migration_ledger() {
            let applied: Vec<String> = ledger
                .rows
                .iter()
                .filter(|r| r.is_applied())
                .map(|r| r.migration_name.clone())
                .collect();
            let dir = loaded.app_dir.join(&cfg.database.migrations_dir);
            let folders: Option<Vec<String>> = std::fs::read_dir(&dir).ok().map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            });
            let shown = cfg.database.migrations_dir.display().to_string();
            let fix = "set database.migrations_dir to the folder beside the app's schema.prisma (for example backend/prisma/migrations)";
            f.push(
                "migrations dir",
                match crate::init::ledger_matches(&applied, folders.as_deref(), &shown) {
                    LedgerMatch::Ok(s) => Ok(s),
                    LedgerMatch::Warn(s) => Err(warn(s, fix)),
                    LedgerMatch::Fail(s) => Err(fail(s, fix)),
                },
            );
        }
    }
}
