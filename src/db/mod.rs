//! PostgreSQL access in two modes: `direct` (a URL and the local client tools) and
//! `compose` (the tools inside the compose service, as the proposal does). Passwords
//! travel in `PGPASSWORD`, never in argv.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::{ConfigError, DbMode, Loaded};
use crate::process::Cmd;
use crate::redact::SafeUrl;
use crate::runtime::compose::Compose;

pub mod inspect;
pub mod ops;
pub mod properties;

/// Query parameters that Prisma (and other ORMs) put in DATABASE_URL but libpq rejects.
const NON_LIBPQ_PARAMS: &[&str] = &[
    "schema",
    "connection_limit",
    "pool_timeout",
    "socket_timeout",
    "pgbouncer",
    "statement_cache_size",
    "sslaccept",
];

/// How quickly an unreachable database is reported.
const CONNECT_TIMEOUT_SECS: &str = "10";
/// Limit for short catalog queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

/// A PostgreSQL client tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    PgDump,
    PgRestore,
    Psql,
}

impl Tool {
    pub fn program(self) -> &'static str {
        match self {
            Tool::PgDump => "pg_dump",
            Tool::PgRestore => "pg_restore",
            Tool::Psql => "psql",
        }
    }
}

#[derive(Debug, Clone)]
enum Access {
    Direct {
        /// The URL without its password; None for tools that need no connection.
        url: Option<SafeUrl>,
        password: Option<String>,
        bin_dir: Option<PathBuf>,
    },
    Compose {
        /// How docker is reached: `docker exec` into the service's container costs a
        /// tenth of `docker-compose exec` (v1 starts Python every time).
        docker: crate::runtime::access::Docker,
        /// `runtime.project`: when set, the container is found by its Compose labels
        /// with `docker ps`, and Compose itself is only asked for when that finds none.
        project: Option<String>,
        /// Compose, detected when first needed (at once when no project is set).
        compose: std::sync::Arc<std::sync::OnceLock<Result<Compose, String>>>,
        app_dir: PathBuf,
        runtime: std::sync::Arc<crate::config::RuntimeConfig>,
        service: String,
        user: String,
    },
}

/// The app's database and the way to reach it.
#[derive(Debug, Clone)]
pub struct Database {
    access: Access,
    pub name: String,
    pub mode: DbMode,
    /// The schema named by the URL's `schema` parameter (Prisma), if any.
    pub schema: Option<String>,
    /// `application_name` of our sessions, so they can be found and ended.
    application_name: String,
    /// Extra libpq environment for our sessions (PGOPTIONS), never secrets.
    session_env: Vec<(String, String)>,
    /// The database to connect to for CREATE/DROP/RENAME DATABASE.
    pub maintenance_db: String,
    /// Limit for one query (catalog reads can wait on locks held by others).
    query_timeout: Duration,
}

/// A PostgreSQL version as `major.minor` text plus the major number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub text: String,
    pub major: u32,
}

impl Version {
    /// Parses "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" or "15.18".
    pub fn parse_tool_output(s: &str) -> Option<Version> {
        let token = s
            .split_whitespace()
            .find(|t| t.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
        let text: String = token
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let major = text.split('.').next()?.parse().ok()?;
        Some(Version { text, major })
    }
}

/// `/<name>` percent-encoded for a URL path (a space, `/`, `?`, `#` or `%` in a database
/// name must not change what the URL means).
fn url_path(name: &str) -> String {
    format!(
        "/{}",
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// The database to run CREATE/DROP/RENAME DATABASE from: `database.maintenance_db`, or
/// `postgres`, or `template1` when the app's own database is `postgres` (a database
/// cannot be renamed or dropped from a session connected to it).
fn maintenance_db(loaded: &Loaded, live: &str) -> anyhow::Result<String> {
    match loaded.config.database.maintenance_db.as_deref() {
        Some(m) if m == live => Err(ConfigError::Invalid {
            path: loaded.path.clone(),
            location: String::new(),
            key: "database.maintenance_db".into(),
            message: format!(
                "the maintenance database {m:?} is the app's own database, which cannot be renamed or dropped from a session connected to it; name another database (template1 always exists) or remove the key"
            ),
        }
        .into()),
        Some(m) => Ok(m.to_string()),
        None => Ok(default_maintenance_db(live).to_string()),
    }
}

/// The maintenance database when none is configured.
pub fn default_maintenance_db(live: &str) -> &'static str {
    if live == "postgres" {
        "template1"
    } else {
        "postgres"
    }
}

impl Database {
    /// Builds database access from the config; the URL comes from the environment.
    pub fn from_config(loaded: &Loaded) -> anyhow::Result<Database> {
        let db = &loaded.config.database;
        match db.mode {
            DbMode::Direct => {
                let raw = match std::env::var(&db.url_env) {
                    Ok(v) if !v.trim().is_empty() => v,
                    _ => match &db.url {
                        Some(u) => u.clone(),
                        None => {
                            return Err(ConfigError::Invalid {
                                path: loaded.path.clone(),
                                location: String::new(),
                                key: "database.url_env".into(),
                                message: format!(
                                    "direct mode needs a connection URL, but the environment variable {} is not set (and database.url is not given); export it, e.g. {}=postgresql://user@host:5432/db",
                                    db.url_env, db.url_env
                                ),
                            }
                            .into())
                        }
                    },
                };
                let url = SafeUrl::parse(raw.trim()).map_err(|e| ConfigError::Invalid {
                    path: loaded.path.clone(),
                    location: String::new(),
                    key: "database.url_env".into(),
                    message: format!("the value of {} is not a valid URL: {e}", db.url_env),
                })?;
                let invalid = |message: String| ConfigError::Invalid {
                    path: loaded.path.clone(),
                    location: String::new(),
                    key: "database.url_env".into(),
                    message,
                };
                let mut password = url.password();
                let mut schema = None;
                let mut clean = url.without_password().inner().clone();
                let mut kept: Vec<(String, String)> = Vec::new();
                for (k, v) in clean.query_pairs() {
                    match k.as_ref() {
                        "password" => password = Some(v.into_owned()),
                        "sslpassword" => {
                            return Err(invalid(format!(
                                "the URL in {} carries sslpassword, which would be visible in the process list; use a key file without a passphrase readable only by this user",
                                db.url_env
                            ))
                            .into())
                        }
                        "schema" => schema = Some(v.into_owned()),
                        k if NON_LIBPQ_PARAMS.contains(&k) => {}
                        _ => kept.push((k.into_owned(), v.into_owned())),
                    }
                }
                clean.set_query(None);
                if !kept.is_empty() {
                    clean.query_pairs_mut().extend_pairs(kept);
                }
                if let Some(name) = &db.name {
                    clean.set_path(&url_path(name));
                }
                // The path is percent-encoded (`my%20app`); SQL needs the name itself.
                let name =
                    percent_encoding::percent_decode_str(clean.path().trim_start_matches('/'))
                        .decode_utf8()
                        .map_err(|e| {
                            invalid(format!(
                                "the database name in the URL of {} is not UTF-8 once decoded: {e}",
                                db.url_env
                            ))
                        })?
                        .into_owned();
                if name.is_empty() {
                    bail!(ConfigError::Invalid {
                        path: loaded.path.clone(),
                        location: String::new(),
                        key: "database.name".into(),
                        message: "the connection URL names no database; add it to the URL or set database.name".into(),
                    });
                }
                let url = SafeUrl::parse(clean.as_str()).expect("a URL we built parses");
                let maintenance_db = maintenance_db(loaded, &name)?;
                Ok(Database {
                    access: Access::Direct {
                        url: Some(url),
                        password,
                        bin_dir: db.client_bin_dir.clone(),
                    },
                    name,
                    mode: DbMode::Direct,
                    schema,
                    application_name: "stablehand".into(),
                    session_env: Vec::new(),
                    maintenance_db,
                    query_timeout: QUERY_TIMEOUT,
                })
            }
            DbMode::Compose => {
                let runtime = &loaded.config.runtime;
                let docker = crate::runtime::access::Docker::from_config(&loaded.app_dir, runtime);
                let compose = std::sync::Arc::new(std::sync::OnceLock::new());
                let found = runtime.project.as_deref().and_then(|p| {
                    crate::runtime::compose::container_by_labels(&docker, p, &db.service)
                });
                if found.is_none() {
                    // Compose finds the container (or names the project): asked now, so
                    // a missing Compose says so here.
                    let _ = compose.set(Ok(Compose::detect(&loaded.app_dir, runtime)?));
                }
                let name = db.name.clone().unwrap_or_default();
                let maintenance_db = maintenance_db(loaded, &name)?;
                Ok(Database {
                    access: Access::Compose {
                        docker,
                        project: runtime.project.clone(),
                        compose,
                        app_dir: loaded.app_dir.clone(),
                        runtime: std::sync::Arc::new(runtime.clone()),
                        service: db.service.clone(),
                        user: db.user.clone(),
                    },
                    name,
                    mode: DbMode::Compose,
                    schema: None,
                    application_name: "stablehand".into(),
                    session_env: Vec::new(),
                    maintenance_db,
                    query_timeout: QUERY_TIMEOUT,
                })
            }
        }
    }

    /// Access for tools that need no connection (`pg_restore --list`): in direct mode
    /// no URL is needed; compose mode still runs them inside the service.
    pub fn for_offline_tools(loaded: &Loaded) -> anyhow::Result<Database> {
        let db = &loaded.config.database;
        match db.mode {
            DbMode::Direct => {
                let name = db.name.clone().unwrap_or_default();
                Ok(Database {
                    access: Access::Direct {
                        url: None,
                        password: None,
                        bin_dir: db.client_bin_dir.clone(),
                    },
                    maintenance_db: maintenance_db(loaded, &name)?,
                    name,
                    mode: DbMode::Direct,
                    schema: None,
                    application_name: "stablehand".into(),
                    session_env: Vec::new(),
                    query_timeout: QUERY_TIMEOUT,
                })
            }
            DbMode::Compose => Database::from_config(loaded),
        }
    }

    /// The same server and credentials, connected to database `name` instead.
    pub fn on(&self, name: &str) -> Database {
        let mut other = self.clone();
        if let Access::Direct { url: Some(url), .. } = &mut other.access {
            let mut u = url.inner().clone();
            u.set_path(&url_path(name));
            *url = SafeUrl::parse(u.as_str()).expect("a URL we built parses");
        }
        other.name = name.to_string();
        other
    }

    /// The maintenance database (for CREATE, DROP and RENAME DATABASE).
    pub fn maintenance(&self) -> Database {
        self.on(&self.maintenance_db.clone())
    }

    /// Bounds each query to at most `limit` (never more than the default).
    pub fn with_query_timeout(mut self, limit: Duration) -> Database {
        self.query_timeout = limit.min(QUERY_TIMEOUT);
        self
    }

    /// Adds a libpq environment variable (e.g. PGOPTIONS) to our sessions.
    pub fn with_session_env(mut self, key: &str, value: &str) -> Database {
        self.session_env.push((key.to_string(), value.to_string()));
        self
    }

    /// Tags our sessions with `name` (letters, digits, `_`, `-` only), so that
    /// `end_sessions` can find them.
    pub fn with_application_name(mut self, name: &str) -> Database {
        debug_assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        self.application_name = name.to_string();
        self
    }

    /// Ends server sessions left by one of our programs that was killed (a killed
    /// client leaves its backend waiting, holding locks, until it next writes; and in
    /// compose mode a killed `exec` client does not kill pg_dump in the container).
    pub fn end_sessions(&self) -> anyhow::Result<u64> {
        let cleaner = self.clone().with_application_name("stablehand-cleanup");
        let sql = format!(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity \
             where application_name = '{}' and pid <> pg_backend_pid()",
            self.application_name
        );
        let out = cleaner
            .psql(&sql)
            .timeout(Duration::from_secs(20))
            .cleanup()
            .output()?;
        Ok(out.trim().parse().unwrap_or(0))
    }

    /// Where the database is, for messages (never with a password).
    pub fn describe(&self) -> String {
        match &self.access {
            Access::Direct { url: Some(url), .. } => format!("database at {url} (direct)"),
            Access::Direct { url: None, .. } => {
                format!(
                    "database {} through the local client tools (direct)",
                    self.name
                )
            }
            Access::Compose { service, user, .. } => format!(
                "database {} as {} in compose service {:?}",
                self.name, user, service
            ),
        }
    }

    /// A command running `tool`; `connect` adds the connection arguments.
    pub fn tool(&self, tool: Tool, connect: bool) -> Cmd {
        match &self.access {
            Access::Direct {
                url,
                password,
                bin_dir,
            } => {
                let program = match bin_dir {
                    Some(dir) => dir.join(tool.program()),
                    None => PathBuf::from(tool.program()),
                };
                let mut cmd = Cmd::new(program)
                    .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECS)
                    .env("PGAPPNAME", &self.application_name)
                    .not_found_hint(format!(
                        "install the PostgreSQL client tools (apt-get install postgresql-client-15 or newer), set database.client_bin_dir, or use database.mode = \"compose\" to run {} inside the database container",
                        tool.program()
                    ));
                if let Some(pw) = password {
                    cmd = cmd.env("PGPASSWORD", pw);
                }
                for (k, v) in &self.session_env {
                    cmd = cmd.env(k, v);
                }
                if let (true, Some(url)) = (connect, url) {
                    cmd = cmd.arg(format!("--dbname={}", url.as_argument()));
                }
                cmd
            }
            Access::Compose {
                docker,
                project,
                compose,
                app_dir,
                runtime,
                service,
                user,
            } => {
                let compose = || {
                    compose
                        .get_or_init(|| {
                            Compose::detect(app_dir, runtime).map_err(|e| format!("{e:#}"))
                        })
                        .as_ref()
                };
                let container = project
                    .as_deref()
                    .and_then(|p| crate::runtime::compose::container_by_labels(docker, p, service))
                    .or_else(|| compose().ok()?.service_container(service));
                let mut env = vec![
                    "-e".to_string(),
                    format!("PGAPPNAME={}", self.application_name),
                ];
                for (k, v) in &self.session_env {
                    env.extend(["-e".to_string(), format!("{k}={v}")]);
                }
                let mut cmd = match container {
                    // -i: stdin is attached (pg_restore reads the dump from it).
                    Some(id) => docker
                        .docker(["exec", "-i"])
                        .args(env)
                        .arg(id)
                        .arg(tool.program()),
                    // No container: `compose exec` runs and reports the problem.
                    None => match compose() {
                        Ok(compose) => compose.cmd(["exec", "-T"]),
                        Err(why) => {
                            tracing::warn!("{why}");
                            docker.docker(["compose", "exec", "-T"])
                        }
                    }
                    .args(env)
                    .args([service.as_str(), tool.program()]),
                }
                .not_found_hint("install Docker Compose, or use database.mode = \"direct\"");
                if connect {
                    cmd = cmd.args(["-U", user.as_str(), "-d", self.name.as_str()]);
                }
                cmd
            }
        }
    }

    /// psql running `sql` on this database: no psqlrc, unaligned tuples only, stopping
    /// at the first error. The caller sets the timeout.
    pub fn psql(&self, sql: &str) -> Cmd {
        self.tool(Tool::Psql, true).args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
    }

    /// Runs a whole psql script fed on stdin (meta-commands such as `\\if` allowed),
    /// stopping at the first error, whose statement psql echoes to stderr (`-b`).
    pub fn run_script(&self, script: &str, limit: Duration) -> anyhow::Result<String> {
        Ok(self
            .tool(Tool::Psql, true)
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-b",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                "-",
            ])
            .timeout(limit)
            .output_with_input(script.as_bytes())?)
    }

    /// Runs one SQL statement with psql and returns its unaligned, tuples-only output.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        let out = self.psql(sql).timeout(self.query_timeout).output()?;
        Ok(out.trim().to_string())
    }

    /// The server's version; the first contact, so failures say the database is unreachable.
    pub fn server_version(&self) -> anyhow::Result<Version> {
        let out = self
            .query("show server_version")
            .with_context(|| format!("cannot reach the database: {}", self.describe()))?;
        Version::parse_tool_output(&out)
            .with_context(|| format!("unexpected server version text {out:?}"))
    }

    /// The version of the pg_dump that will run.
    pub fn pg_dump_version(&self) -> anyhow::Result<Version> {
        let out = self
            .tool(Tool::PgDump, false)
            .arg("--version")
            .timeout(QUERY_TIMEOUT)
            .output()?;
        Version::parse_tool_output(&out)
            .with_context(|| format!("unexpected `pg_dump --version` output {:?}", out.trim()))
    }

    /// Refuses a pg_dump older than the server (direct mode); compose mode runs the
    /// server's own pg_dump, so they always match.
    pub fn check_pg_dump(&self, server: &Version, pg_dump: &Version) -> anyhow::Result<()> {
        if pg_dump.major < server.major {
            bail!(
                "pg_dump {} is older than the PostgreSQL {} server, and pg_dump cannot dump a newer server; \
                 install postgresql-client-{} and point database.client_bin_dir at it (e.g. /usr/lib/postgresql/{}/bin), \
                 or use database.mode = \"compose\" to run the server's own pg_dump",
                pg_dump.text, server.text, server.major, server.major
            );
        }
        Ok(())
    }

    /// `pg_dump` of the whole database in custom format, uncompressed (we compress),
    /// with object owners (always in a custom-format table of contents) and grants
    /// (`GRANT`, `REVOKE`, default privileges), so a restore gives the app's own role
    /// back what it had.
    pub fn dump_cmd(&self) -> Cmd {
        self.tool(Tool::PgDump, true)
            .args(["--format=custom", "--compress=0"])
    }

    /// `pg_restore --list` reading a dump on stdin (no connection needed).
    pub fn list_toc_cmd(&self) -> Cmd {
        self.tool(Tool::PgRestore, false).arg("--list")
    }

    /// `_prisma_migrations`, qualified by the URL's schema when it names one.
    pub fn ledger_table(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}._prisma_migrations", quote_ident(schema)),
            None => "_prisma_migrations".to_string(),
        }
    }

    /// The rows of `_prisma_migrations`, when that table exists (one psql session).
    pub fn prisma_migrations(&self) -> anyhow::Result<Option<serde_json::Value>> {
        let out = self.run_script(&self.ledger_script(), self.query_timeout)?;
        parse_ledger(&out)
    }

    /// A psql script that prints [`LEDGER_MARK`] and the ledger's rows as JSON when
    /// `_prisma_migrations` exists, and nothing otherwise.
    pub fn ledger_script(&self) -> String {
        let table = self.ledger_table();
        format!(
            "select to_regclass('{}') is not null as stablehand_has_ledger \\gset\n\
             \\if :stablehand_has_ledger\n\
             select '{LEDGER_MARK}';\n\
             select coalesce(json_agg(m order by m.started_at, m.migration_name), '[]'::json) from \
             (select id, migration_name, checksum, started_at, finished_at, rolled_back_at, applied_steps_count \
              from {table}) m;\n\
             \\endif\n",
            table.replace('\'', "''")
        )
    }
}

/// The line that starts the ledger in the output of [`Database::ledger_script`].
pub const LEDGER_MARK: &str = "stablehand:ledger";

/// The ledger in what follows [`LEDGER_MARK`] in `out` (None when the mark is absent:
/// the table does not exist).
pub fn parse_ledger(out: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let Some((_, json)) = out.split_once(LEDGER_MARK) else {
        return Ok(None);
    };
    Ok(Some(
        serde_json::from_str(json.trim()).context("reading _prisma_migrations")?,
    ))
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn direct(url: &str) -> Database {
        let text = "[database]\nmode = \"direct\"\nurl_env = \"STABLEHAND_TEST_UNSET_VAR\"\n"
            .to_string()
            + &format!("url = {url:?}\n");
        let config = config::parse(&text, Path::new("t.toml")).unwrap();
        Database::from_config(&Loaded {
            config,
            path: "t.toml".into(),
            app_dir: ".".into(),
        })
        .unwrap()
    }

    #[test]
    fn versions_parse() {
        let v = Version::parse_tool_output("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)")
            .unwrap();
        assert_eq!((v.text.as_str(), v.major), ("15.18", 15));
        assert_eq!(Version::parse_tool_output("16.2").unwrap().major, 16);
    }

    #[test]
    fn prisma_params_are_dropped_and_libpq_ones_kept() {
        let db = direct("postgresql://app@127.0.0.1:5432/app?schema=public&sslmode=disable");
        let cmd = db.tool(Tool::Psql, true);
        let args: Vec<_> = cmd
            .get_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            vec!["--dbname=postgresql://app@127.0.0.1:5432/app?sslmode=disable"]
        );
        assert_eq!(db.name, "app");
    }

    #[test]
    fn password_in_query_goes_to_the_environment_not_argv() {
        std::env::set_var(
            "STABLEHAND_TEST_URL_Q",
            "postgresql://app@127.0.0.1/app?password=hunter2&schema=tenant",
        );
        let config = config::parse(
            "[database]\nmode = \"direct\"\nurl_env = \"STABLEHAND_TEST_URL_Q\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let db = Database::from_config(&Loaded {
            config,
            path: "t.toml".into(),
            app_dir: ".".into(),
        })
        .unwrap();
        let cmd = db.dump_cmd();
        assert!(!format!("{:?}", cmd.get_args()).contains("hunter2"));
        assert!(!cmd.display().contains("hunter2"));
        assert_eq!(db.schema.as_deref(), Some("tenant"));
    }

    #[test]
    fn older_pg_dump_is_refused_with_advice() {
        let db = direct("postgresql://app@127.0.0.1/app");
        let server = Version {
            text: "16.4".into(),
            major: 16,
        };
        let old = Version {
            text: "15.18".into(),
            major: 15,
        };
        let msg = db.check_pg_dump(&server, &old).unwrap_err().to_string();
        assert!(
            msg.contains("pg_dump 15.18 is older than the PostgreSQL 16.4 server"),
            "{msg}"
        );
        assert!(db.check_pg_dump(&old, &server).is_ok());
    }
}
