//! `stablehand doctor`: every precondition of a deploy checked and reported in one
//! table, each with a fix; exit 1 when anything blocks a deploy.

mod setup;

use std::time::Duration;

use serde::Serialize;

use crate::config::{DbMode, Loaded, RuntimeKind};
use crate::db::{Database, Tool};
use crate::process::Cmd;

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: String,
    /// ok, warn (works, but something is off), fail (blocks a deploy).
    pub status: String,
    pub detail: String,
    pub fix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub blocking: usize,
    pub findings: Vec<Finding>,
}

struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, check: &str, result: Result<String, (bool, String, String)>) {
        self.0.push(match result {
            Ok(detail) => Finding {
                check: check.into(),
                status: "ok".into(),
                detail,
                fix: String::new(),
            },
            Err((blocking, detail, fix)) => Finding {
                check: check.into(),
                status: if blocking { "fail" } else { "warn" }.into(),
                // One line per finding: a tool's stderr lines joined.
                detail: crate::redact::redact_text(
                    &detail
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect::<Vec<_>>()
                        .join(" | "),
                ),
                fix,
            },
        });
    }
}

fn fail(detail: impl std::fmt::Display, fix: &str) -> (bool, String, String) {
    (true, format!("{detail:#}"), fix.into())
}

fn warn(detail: impl std::fmt::Display, fix: &str) -> (bool, String, String) {
    (false, format!("{detail:#}"), fix.into())
}

fn version_of(program: &str, args: &[&str]) -> Result<String, String> {
    Cmd::new(program)
        .args(args)
        .timeout(Duration::from_secs(20))
        .output()
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
        .map_err(|e| e.to_string())
}

/// Runs every check.
pub fn doctor(loaded: &Loaded) -> Report {
    let mut f = Findings(Vec::new());
    let cfg = &loaded.config;

    // git, the repository, the remote, pushing tags.
    f.push(
        "git",
        version_of("git", &["--version"]).map_err(|e| fail(e, "install git")),
    );
    let repo = crate::git::Repo::open(&loaded.app_dir, &cfg.git);
    match &repo {
        Ok(r) => {
            f.push(
                "repository",
                r.head()
                    .map(|h| {
                        format!(
                            "{} at {}",
                            loaded.app_dir.display(),
                            crate::git::abbrev(&h, 12)
                        )
                    })
                    .map_err(|e| {
                        fail(
                            e,
                            "make the app directory a git clone with at least one commit",
                        )
                    }),
            );
            let remote = r.remote().to_string();
            let reachable = crate::ownership::git_in(&loaded.app_dir)
                .args(["ls-remote", "--heads", &remote])
                .timeout(Duration::from_secs(60))
                .output();
            f.push(
                "git remote",
                reachable
                    .map(|_| format!("{remote} answers"))
                    .map_err(|e| fail(e, "check git.remote, the network and the deploy key (a deploy fetches from it)")),
            );
            if cfg.git.push {
                let dry = crate::ownership::git_in(&loaded.app_dir)
                    .args([
                        "push",
                        "--dry-run",
                        "--quiet",
                        &remote,
                        "HEAD:refs/tags/stablehand-doctor-check",
                    ])
                    .timeout(Duration::from_secs(60))
                    .output();
                f.push(
                    "tags pushable",
                    dry.map(|_| "a dry-run push of a tag was accepted".to_string())
                        .map_err(|e| warn(e, "give the deploy key push rights for tags, or set git.push = false (the stable tags then stay local)")),
                );
            }
        }
        Err(e) => f.push(
            "repository",
            Err(fail(
                e,
                "run stablehand in (or point --config into) the app's git work tree",
            )),
        ),
    }

    // Docker and Compose, when the app or the database runs in Compose.
    let compose_needed = cfg.database.mode == DbMode::Compose
        || cfg.runtime.effective_kind(&loaded.app_dir) == Some(RuntimeKind::Compose);
    if compose_needed {
        match crate::runtime::compose::Compose::detect(&loaded.app_dir, &cfg.runtime) {
            Ok(c) => {
                f.push(
                    "compose",
                    Ok(format!("{:?}: {} ({})", c.flavor, c.describe(), c.version)),
                );
                for (check, result) in crate::runtime::access::doctor_findings(&c.access) {
                    f.push(check, result);
                }
                f.push(
                    "docker engine",
                    c.ensure_engine()
                        .map(|()| {
                            let version = c
                                .docker(["version", "--format", "{{.Server.Version}}"])
                                .timeout(Duration::from_secs(20))
                                .output()
                                .unwrap_or_default();
                            format!(
                                "{} via {}",
                                version.trim(),
                                c.access.describe(&c.access.docker)
                            )
                        })
                        .map_err(|e| fail(e, "start the Docker engine (systemctl start docker)")),
                );
            }
            Err(e) => f.push(
                "compose",
                Err(fail(
                    e,
                    "install the Docker Compose plugin (or docker-compose)",
                )),
            ),
        }
    }

    // The database: reachable, tools, versions, privileges.
    let database = Database::from_config(loaded);
    match &database {
        Ok(db) => {
            let server = db.server_version();
            f.push(
                "database",
                server
                    .as_ref()
                    .map(|v| format!("{} reachable, PostgreSQL {}", db.describe(), v.text))
                    .map_err(|e| fail(e, "start the database, check [database] (and DATABASE_URL in direct mode)")),
            );
            if let Ok(server) = &server {
                let dump = db
                    .pg_dump_version()
                    .and_then(|v| db.check_pg_dump(server, &v).map(|()| v));
                f.push(
                    "pg_dump",
                    dump.map(|v| {
                        format!(
                            "pg_dump {} ({})",
                            v.text,
                            if db.mode == DbMode::Compose {
                                "inside the service"
                            } else {
                                "local"
                            }
                        )
                    })
                    .map_err(|e| {
                        fail(
                            e,
                            "install a pg_dump at least as new as the server (or use compose mode)",
                        )
                    }),
                );
                let restore = db
                    .tool(Tool::PgRestore, false)
                    .arg("--version")
                    .timeout(Duration::from_secs(60))
                    .output();
                f.push(
                    "pg_restore",
                    restore
                        .map(|v| v.trim().to_string())
                        .map_err(|e| fail(e, "install pg_restore beside pg_dump")),
                );
                let createdb = db
                    .maintenance()
                    .query("select (rolcreatedb or rolsuper)::text from pg_roles where rolname = current_user");
                f.push(
                    "privileges",
                    match createdb.as_deref() {
                        Ok("true") => Ok(format!("CREATEDB, and connects to {} for CREATE/DROP/RENAME DATABASE", db.maintenance_db)),
                        Ok(_) => Err(fail(
                            "the user lacks CREATEDB: a rollback cannot restore into a new database and swap",
                            "ALTER ROLE <user> CREATEDB (or restore with --in-place by hand)",
                        )),
                        Err(e) => Err(fail(e, "let the user connect to the maintenance database (database.maintenance_db; default postgres, or template1 when the app's database is postgres)")),
                    },
                );
                // A restore or snapshot must give the app back its owners, grants, ACL
                // and settings: the deploy preflight refuses when it could not.
                f.push(
                    "faithful restores",
                    match db.faithful_copy_problems() {
                        Ok(p) if p.is_empty() => Ok("owners, grants, ACL and settings can be reproduced in a restored copy".into()),
                        Ok(p) => Err(fail(
                            p.join("; "),
                            "grant stablehand's role what the message names, or connect as a superuser: deploys are refused until then",
                        )),
                        Err(e) => Err(warn(e, "check that stablehand's role can read pg_database and pg_roles")),
                    },
                );
            }
        }
        Err(e) => f.push(
            "database",
            Err(fail(
                e,
                "check [database] (and DATABASE_URL in direct mode)",
            )),
        ),
    }
    // What the config says about the app, against what runs.
    setup::checks(loaded, database.as_ref().ok(), &mut f);

    // Room for a backup, and a usable backup directory.
    f.push(
        "disk",
        crate::deploy::check_disk_room(loaded)
            .map(|()| format!("room for a backup in {}", loaded.backup_dir().display()))
            .map_err(|e| fail(e, "free space or prune backups")),
    );

    // Offsite remotes answer with these credentials (blocking only when required).
    for r in &cfg.backup.remote {
        let reached = crate::remote::Remote::open(r).and_then(|remote| {
            let (copies, _) = remote.list()?;
            Ok(format!(
                "{} answers; it holds {} backup(s)",
                remote.describe(),
                copies.len()
            ))
        });
        let fix = "check the remote's url, endpoint and region, its credentials in the environment, and the network";
        f.push(
            &format!("remote {}", r.name),
            reached.map_err(|e| {
                if cfg.backup.remote_required {
                    fail(e, fix)
                } else {
                    warn(e, fix)
                }
            }),
        );
    }
    if let Some(enc) = &cfg.backup.encryption {
        if let Some(file) = &enc.identity_file {
            f.push(
                "encryption key",
                crate::backup::crypt::load_identities(file)
                    .map(|ids| format!("{} identity(ies) in {}", ids.len(), file.display()))
                    .map_err(|e| {
                        warn(e, "point backup.encryption.identity_file at the age key (needed to restore encrypted copies)")
                    }),
            );
        }
    }

    // Notification secrets are in the environment they are named in.
    let n = &cfg.notify;
    for (key, var) in [
        ("notify.slack_webhook_env", &n.slack_webhook_env),
        ("notify.webhook_url_env", &n.webhook_url_env),
        ("alerts.ping_url_env", &cfg.alerts.ping_url_env),
        ("serve.token_env", &cfg.serve.token_env),
    ] {
        if let Some(var) = var {
            let set = std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
            f.push(
                key,
                if set {
                    Ok(format!("{var} is set"))
                } else {
                    Err(warn(
                        format!("{var} is not set"),
                        "export it where stablehand runs (CI secrets, the service's environment)",
                    ))
                },
            );
        }
    }
    // Who owns the work tree, how git runs there, whether this user can use the state.
    for (check, result) in crate::ownership::doctor_findings(loaded) {
        f.push(check, result);
    }
    // Behind the proxy: it runs, sends traffic to the main project, and that answers.
    if let Some(p) = &cfg.proxy {
        let control = crate::proxy::Control::new(&loaded.state_dir());
        f.push(
            "proxy",
            match control.state() {
                Err(e) => Err(fail(
                    e,
                    "run `stablehand proxy run` in the app directory under a service manager (docs/zero-downtime.md)",
                )),
                Ok(s) if s.route.upstream != p.upstream || s.route.maintenance => Err(fail(
                    format!(
                        "traffic goes to {}{}, not to proxy.upstream {}",
                        s.route.upstream,
                        if s.route.maintenance { " (maintenance on)" } else { "" },
                        p.upstream
                    ),
                    "run `stablehand recover`, or `stablehand proxy switch` back to proxy.upstream",
                )),
                Ok(s) => match std::net::TcpStream::connect_timeout(
                    &p.upstream.parse().expect("validated"),
                    Duration::from_secs(2),
                ) {
                    Ok(_) => Ok(format!(
                        "pid {} on {}, traffic to {} (it answers)",
                        s.pid, s.listen, p.upstream
                    )),
                    Err(e) => Err(warn(
                        format!("pid {} on {}, but nothing answers on {}: {e}", s.pid, s.listen, p.upstream),
                        "start the app (`stablehand deploy`), or fix proxy.upstream",
                    )),
                },
            },
        );
    }
    // An unfinished deploy blocks the next one.
    if let Ok(Some(j)) = crate::journal::Journal::load(&loaded.state_dir()) {
        f.push(
            "journal",
            Err(fail(
                format!("an unfinished {} ({})", j.command, j.id),
                "run `stablehand recover`",
            )),
        );
    }
    let blocking = f.0.iter().filter(|x| x.status == "fail").count();
    Report {
        blocking,
        findings: f.0,
    }
}
