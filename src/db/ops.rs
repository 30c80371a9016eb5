//! Whole-database operations, run from the maintenance database: create, drop, swap by
//! rename (one transaction: both renames or neither), snapshots by template copy, and
//! the databases stablehand keeps or leaves behind.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use super::Database;

/// PostgreSQL truncates identifiers longer than this (bytes).
const MAX_IDENT: usize = 63;
/// How long a swap may keep retrying to end other sessions.
const SWAP_RETRY_FOR: Duration = Duration::from_secs(10);

/// Suffixes of the databases stablehand creates beside the live one.
pub const RESTORE_SUFFIX: &str = "__restore_";
pub const VERIFY_SUFFIX: &str = "__verify_";
pub const SNAPSHOT_SUFFIX: &str = "__snap_";
pub const PRE_RESTORE_SUFFIX: &str = "__pre_restore_";
pub const PRE_SNAPSHOT_SUFFIX: &str = "__pre_snapshot_";
/// The database a rollback replaced (the failed deploy's), kept like a replaced one.
pub const FAILED_SUFFIX: &str = "__failed_";

/// Quotes an identifier for SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `<db><suffix><stamp>`, refused when PostgreSQL would truncate it.
pub fn derived_name(db: &str, suffix: &str, stamp: &str) -> anyhow::Result<String> {
    let name = format!("{db}{suffix}{stamp}");
    if name.len() > MAX_IDENT {
        bail!(
            "the database name {name:?} would be longer than PostgreSQL's {MAX_IDENT}-byte limit; the live database name is too long for stablehand's side databases"
        );
    }
    Ok(name)
}

/// The UTC stamp used in side database names.
pub fn stamp() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y%m%d%H%M%S")
        .to_string()
}

/// A session connected to a database.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Session {
    pub pid: i64,
    pub user: String,
    pub application: String,
    pub client: String,
}

/// A database stablehand made beside the live one.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SideDatabase {
    pub name: String,
    /// "replaced" (kept after a swap), "snapshot", or "leftover" (an unfinished restore
    /// or restore test, safe to drop).
    pub kind: String,
    pub size_bytes: u64,
    /// The rule it is kept under (or why it was not dropped), when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A replaced database beyond `database.keep_replaced_databases` that was not dropped,
/// and why (someone is connected, or it holds writes no backup has).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KeptBack {
    pub name: String,
    pub reason: String,
}

/// What pruning the replaced databases did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplacedPrune {
    pub dropped: Vec<String>,
    pub kept: Vec<KeptBack>,
}

/// The backup a kept database is judged against: the newest verified backup of the
/// live database made before the kept one was replaced, with its transaction horizon.
#[derive(Debug, Clone)]
pub struct Covering {
    pub id: String,
    pub xid_horizon: u64,
}

/// How long a drop of a kept database waits for stablehand's own sessions on it (the
/// one that counted its rows) to go.
const OWN_SESSION_GRACE: Duration = Duration::from_secs(5);

impl Database {
    fn maintenance_query(&self, sql: &str) -> anyhow::Result<String> {
        self.maintenance().query(sql)
    }

    /// True when a database with this name exists.
    pub fn database_exists(&self, name: &str) -> anyhow::Result<bool> {
        Ok(self.maintenance_query(&format!(
            "select count(*) from pg_database where datname = {}",
            literal(name)
        ))? == "1")
    }

    /// Other sessions connected to database `name`.
    pub fn sessions_on(&self, name: &str) -> anyhow::Result<Vec<Session>> {
        let out = self.maintenance_query(&format!(
            "select coalesce(json_agg(json_build_object('pid', pid, 'user', coalesce(usename, ''), \
             'application', application_name, 'client', coalesce(client_addr::text, 'local'))), '[]') \
             from pg_stat_activity where datname = {} and pid <> pg_backend_pid() and coalesce(backend_type, 'client backend') = 'client backend'",
            literal(name)
        ))?;
        serde_json::from_str(&out).context("reading pg_stat_activity")
    }

    /// Creates an empty database with the live database's encoding and locale (one psql
    /// round trip: the locale is read into psql variables and used by the CREATE).
    pub fn create_database_like_live(&self, name: &str) -> anyhow::Result<()> {
        let live = literal(&self.name);
        let db = ident(name);
        let script = format!(
            "select count(*) = 1 as sh_found, \
               coalesce(max(pg_encoding_to_char(encoding)), '') as sh_enc, \
               coalesce(max(datcollate), '') as sh_collate, coalesce(max(datctype), '') as sh_ctype \
             from pg_database where datname = {live} \\gset\n\
             \\if :sh_found\n\
             create database {db} template template0 encoding :'sh_enc' lc_collate :'sh_collate' lc_ctype :'sh_ctype';\n\
             \\else\n\
             create database {db} template template0;\n\
             \\endif\n"
        );
        self.maintenance()
            .run_script(&script, Duration::from_secs(120))
            .with_context(|| format!("creating database {name} (the database user needs CREATEDB; or restore with --in-place)"))?;
        Ok(())
    }

    /// Drops a side database (never the live one), ending its sessions first.
    pub fn drop_side_database(&self, name: &str) -> anyhow::Result<()> {
        if name == self.name {
            bail!("refusing to drop the live database {name}");
        }
        self.maintenance()
            .psql(&format!(
                "drop database if exists {} with (force)",
                ident(name)
            ))
            .timeout(Duration::from_secs(120))
            .cleanup()
            .output()
            .with_context(|| format!("dropping database {name}"))?;
        Ok(())
    }

    /// Ends every other session on the given databases that this user may end (a
    /// superuser's session, for instance, may be beyond it: a later rename then fails
    /// and names it).
    pub fn end_sessions_on(&self, names: &[&str]) -> anyhow::Result<()> {
        let list = names
            .iter()
            .map(|n| literal(n))
            .collect::<Vec<_>>()
            .join(", ");
        self.maintenance_query(&format!(
            "do $$ declare r record; begin \
               for r in select pid from pg_stat_activity where datname in ({list}) and pid <> pg_backend_pid() loop \
                 begin perform pg_terminate_backend(r.pid); exception when others then null; end; \
               end loop; end $$"
        ))?;
        Ok(())
    }

    /// Puts `replacement` in the live database's place, in one server-side step: end the
    /// sessions on both, wait for them to go, then in the same transaction rename live to
    /// `keep_as` and `replacement` to live. Retries while sessions linger; if it cannot,
    /// nothing was renamed. Returns how long the live database was unavailable (measured
    /// by the server, from ending its sessions to the commit).
    pub fn swap_in(&self, replacement: &str, keep_as: &str) -> anyhow::Result<Duration> {
        let live = self.name.clone();
        let dbs = format!("{}, {}", literal(&live), literal(replacement));
        let sql = format!(
            "do $$ declare t0 timestamptz := clock_timestamp(); r record; n int; begin \
               for r in select pid from pg_stat_activity where datname in ({dbs}) and pid <> pg_backend_pid() loop \
                 begin perform pg_terminate_backend(r.pid); exception when others then null; end; \
               end loop; \
               loop \
                 perform pg_stat_clear_snapshot(); \
                 select count(*) into n from pg_stat_activity where datname in ({dbs}) and pid <> pg_backend_pid() and coalesce(backend_type, 'client backend') = 'client backend'; \
                 exit when n = 0 or clock_timestamp() - t0 > interval '2 seconds'; \
                 perform pg_sleep(0.01); \
               end loop; \
               execute format('alter database %I rename to %I', {live_l}, {keep_l}); \
               execute format('alter database %I rename to %I', {repl_l}, {live_l}); \
               perform set_config('stablehand.swap_us', (extract(epoch from clock_timestamp() - t0) * 1000000)::bigint::text, false); \
             end $$; select current_setting('stablehand.swap_us')",
            live_l = literal(&live),
            keep_l = literal(keep_as),
            repl_l = literal(replacement),
        );
        let started = Instant::now();
        let mut last_error = None;
        while started.elapsed() < SWAP_RETRY_FOR {
            let result = self
                .maintenance()
                .psql(&sql)
                .timeout(Duration::from_secs(30))
                .output();
            match result {
                Ok(out) => {
                    let micros: u64 = out.trim().parse().unwrap_or(0);
                    return Ok(Duration::from_micros(micros));
                }
                Err(e) => {
                    let text = e.to_string();
                    last_error = Some(e);
                    if !text.contains("is being accessed by other users") {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let sessions = self.sessions_on(&live).unwrap_or_default();
        let who = describe_sessions(&sessions);
        Err(anyhow::anyhow!(
            "could not swap {replacement} in for {live}: {}{}",
            last_error.map(|e| e.to_string()).unwrap_or_default(),
            if who.is_empty() {
                String::new()
            } else {
                format!("; still connected to {live}: {who}")
            }
        ))
    }

    /// A snapshot of the live database: `CREATE DATABASE <db>__snap_<id> TEMPLATE <db>
    /// STRATEGY FILE_COPY`, a file-level copy. Needs no one connected to the live database (stop the app
    /// first); fails naming who is.
    pub fn snapshot(&self, id: &str) -> anyhow::Result<String> {
        let name = derived_name(&self.name, SNAPSHOT_SUFFIX, id)?;
        let sessions = self.sessions_on(&self.name)?;
        if !sessions.is_empty() {
            bail!(
                "cannot snapshot {}: {} session(s) are connected ({}); stop the app first",
                self.name,
                sessions.len(),
                sessions
                    .iter()
                    .map(|s| format!(
                        "{} as {} from {}",
                        if s.application.is_empty() {
                            "unnamed client"
                        } else {
                            &s.application
                        },
                        s.user,
                        s.client
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        // PostgreSQL 15 made WAL_LOG the default strategy, which writes the whole
        // database to the WAL (measured: 2.4x a file copy). FILE_COPY copies the files
        // (after a checkpoint) and writes almost no WAL: within a file copy's time.
        let server_major: u32 = self
            .maintenance_query("show server_version_num")?
            .parse::<u32>()
            .unwrap_or(0)
            / 10000;
        let strategy = if server_major >= 15 {
            " strategy file_copy"
        } else {
            ""
        };
        // The copy's owner, ACL and settings are the live database's (a template copy
        // carries only the contents), so a swap back to it changes nothing for the app.
        let properties = self.properties_of(&self.name)?;
        self.maintenance_query(&format!(
            "create database {} template {}{strategy}",
            ident(&name),
            ident(&self.name)
        ))
        .with_context(|| format!("creating snapshot {name}"))?;
        if let Err(e) = self.apply_properties(&name, &properties) {
            let _ = self.drop_side_database(&name);
            return Err(e.context(format!("the snapshot {name} was dropped")));
        }
        Ok(name)
    }

    /// A side database name `<db><suffix><stamp>` that no database has yet (`_2`, `_3`...
    /// when two are made within one second).
    pub fn fresh_side_name(&self, suffix: &str) -> anyhow::Result<String> {
        let base = stamp();
        let mut candidate = derived_name(&self.name, suffix, &base)?;
        let mut n = 2;
        while self.database_exists(&candidate)? {
            candidate = derived_name(&self.name, suffix, &format!("{base}_{n}"))?;
            n += 1;
        }
        Ok(candidate)
    }

    /// Makes the snapshot live again; the replaced database is kept under
    /// `<db>__pre_snapshot_<stamp>`, whose name is returned.
    pub fn swap_to_snapshot(&self, snapshot: &str) -> anyhow::Result<(String, Duration)> {
        self.swap_to_snapshot_keeping(snapshot, PRE_SNAPSHOT_SUFFIX)
    }

    /// `swap_to_snapshot`, keeping the replaced database under `<db><suffix><stamp>`.
    pub fn swap_to_snapshot_keeping(
        &self,
        snapshot: &str,
        suffix: &str,
    ) -> anyhow::Result<(String, Duration)> {
        // One round trip in the common case: a name with this second's stamp is almost
        // always free; when it is not, the rename fails before changing anything and a
        // checked name is used.
        let keep_as = derived_name(&self.name, suffix, &stamp())?;
        match self.swap_in(snapshot, &keep_as) {
            Ok(took) => Ok((keep_as, took)),
            Err(e) if e.to_string().contains("already exists") => {
                let keep_as = self.fresh_side_name(suffix)?;
                let took = self.swap_in(snapshot, &keep_as)?;
                Ok((keep_as, took))
            }
            Err(e) => Err(e),
        }
    }

    /// Drops a snapshot.
    pub fn drop_snapshot(&self, snapshot: &str) -> anyhow::Result<()> {
        if !snapshot.starts_with(&format!("{}{SNAPSHOT_SUFFIX}", self.name)) {
            bail!("{snapshot} is not a snapshot of {}", self.name);
        }
        self.drop_side_database(snapshot)
    }

    /// The databases stablehand made beside the live one, newest first.
    pub fn side_databases(&self) -> anyhow::Result<Vec<SideDatabase>> {
        let prefix = format!("{}__", self.name)
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let out = self.maintenance_query(&format!(
            "select coalesce(string_agg(datname || E'\\t' || pg_database_size(oid), E'\\n' order by datname desc), '') \
             from pg_database where datname like {}",
            literal(&format!("{prefix}%"))
        ))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter_map(|(name, size)| {
                let rest = name.strip_prefix(&self.name)?;
                let kind = if rest.starts_with(PRE_RESTORE_SUFFIX)
                    || rest.starts_with(PRE_SNAPSHOT_SUFFIX)
                    || rest.starts_with(FAILED_SUFFIX)
                {
                    "replaced"
                } else if rest.starts_with(SNAPSHOT_SUFFIX) {
                    "snapshot"
                } else if rest.starts_with(RESTORE_SUFFIX) || rest.starts_with(VERIFY_SUFFIX) {
                    "leftover"
                } else {
                    return None;
                };
                Some(SideDatabase {
                    name: name.to_string(),
                    kind: kind.into(),
                    size_bytes: size.parse().unwrap_or(0),
                    note: None,
                })
            })
            .collect())
    }

    /// Drops leftovers of restores and restore tests that never finished (a killed
    /// stablehand), when nobody is connected to them. Returns their names.
    pub fn drop_leftovers(&self) -> anyhow::Result<Vec<String>> {
        let mut dropped = Vec::new();
        for side in self.side_databases()? {
            if side.kind == "leftover" && self.sessions_on(&side.name)?.is_empty() {
                self.drop_side_database(&side.name)?;
                dropped.push(side.name);
            }
        }
        Ok(dropped)
    }

    /// Drops kept (replaced) databases beyond the newest `keep`, except (kept back, and
    /// said so) one that someone is connected to, and one that holds rows written after
    /// the backup `covering` gives for its replacement time (or for which no backup
    /// with a transaction horizon is known): its writes exist nowhere else. Never a
    /// forced drop.
    pub fn prune_replaced_against(
        &self,
        keep: u32,
        covering: impl Fn(&str, jiff::Timestamp) -> Option<Covering>,
    ) -> anyhow::Result<ReplacedPrune> {
        let mut replaced: Vec<SideDatabase> = self
            .side_databases()?
            .into_iter()
            .filter(|s| s.kind == "replaced")
            .collect();
        // Names end in the UTC stamp (and a same-second counter): newest first.
        replaced.sort_by_key(|d| std::cmp::Reverse(stamp_of(&self.name, &d.name)));
        let mut done = ReplacedPrune::default();
        for side in replaced.into_iter().skip(keep as usize) {
            match self.why_keep(&side.name, &covering)? {
                Some(reason) => {
                    tracing::warn!(
                        "kept {} although it is beyond database.keep_replaced_databases: {reason}",
                        side.name
                    );
                    done.kept.push(KeptBack {
                        name: side.name,
                        reason,
                    });
                }
                None => match self.drop_kept_database(&side.name) {
                    Ok(()) => done.dropped.push(side.name),
                    Err(e) => done.kept.push(KeptBack {
                        name: side.name,
                        reason: format!("{e:#}"),
                    }),
                },
            }
        }
        Ok(done)
    }

    /// Why kept database `name` must not be dropped now, or None when it may be.
    fn why_keep(
        &self,
        name: &str,
        covering: &impl Fn(&str, jiff::Timestamp) -> Option<Covering>,
    ) -> anyhow::Result<Option<String>> {
        if let Some(reason) = self.foreign_sessions(name)? {
            return Ok(Some(reason));
        }
        let Some(replaced_at) = replaced_at(&self.name, name) else {
            return Ok(Some(
                "its name carries no time of replacement, so no backup can be shown to hold its data".into(),
            ));
        };
        let Some(backup) = covering(name, replaced_at) else {
            return Ok(Some(format!(
                "no verified backup of {} made before it was replaced (at {replaced_at}) records a transaction horizon, so its writes may be in no backup; back it up by hand (pg_dump) and drop it with `stablehand db drop-kept {name} --yes`",
                self.name
            )));
        };
        let written = self.rows_written_after(name, backup.xid_horizon)?;
        if written > 0 {
            return Ok(Some(format!(
                "it holds {written} row(s) written after backup {} (the last one before it was replaced), which no backup has; back it up by hand (pg_dump) or copy what you need, then drop it with `stablehand db drop-kept {name} --yes`",
                backup.id
            )));
        }
        Ok(None)
    }

    /// "n session(s) are connected (...)" when sessions other than stablehand's own are
    /// connected to `name`.
    fn foreign_sessions(&self, name: &str) -> anyhow::Result<Option<String>> {
        let others: Vec<Session> = self
            .sessions_on(name)?
            .into_iter()
            .filter(|s| s.application != self.application_name)
            .collect();
        if others.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!(
            "{} session(s) are connected to it ({}); it is never dropped from under them",
            others.len(),
            describe_sessions(&others)
        )))
    }

    /// Drops a kept database with a plain `DROP DATABASE`, which PostgreSQL refuses while
    /// anyone is connected (never `WITH (FORCE)`): refused when a session other than
    /// stablehand's own is connected; waits briefly for stablehand's own to go.
    pub fn drop_kept_database(&self, name: &str) -> anyhow::Result<()> {
        if name == self.name {
            bail!("refusing to drop the live database {name}");
        }
        let started = Instant::now();
        loop {
            if let Some(reason) = self.foreign_sessions(name)? {
                bail!("{name} was not dropped: {reason}; end them (or wait for them to finish) and drop it with `stablehand db drop-kept {name} --yes`");
            }
            let dropped = self
                .maintenance()
                .psql(&format!("drop database if exists {}", ident(name)))
                .timeout(Duration::from_secs(120))
                .output();
            match dropped {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.to_string().contains("is being accessed by other users")
                        && started.elapsed() < OWN_SESSION_GRACE =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(anyhow::Error::from(e).context(format!("dropping database {name}")))
                }
            }
        }
    }

    /// Rows of database `name`'s tables (the Prisma ledger excluded) written by
    /// transactions at or after `horizon` (transaction ids are the cluster's, so a
    /// backup's horizon holds for a database that was live when it was taken). A table
    /// rewrite counts its rows as written: the count errs towards keeping.
    pub fn rows_written_after(&self, name: &str, horizon: u64) -> anyhow::Result<u64> {
        let db = self.on(name);
        let tables = db.query(
            "select coalesce(string_agg(format('%I.%I', n.nspname, c.relname), E'\\n'), '') from pg_class c \
             join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema') \
             and n.nspname not like 'pg_toast%' and c.relname <> '_prisma_migrations'",
        )?;
        let tables: Vec<&str> = tables.lines().filter(|l| !l.is_empty()).collect();
        if tables.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "select coalesce(sum(n), 0) from ({}) counts",
            tables
                .iter()
                .map(|t| format!(
                    "select count(*) as n from only {t} where age(xmin)::bigint <= txid_current() - {horizon}"
                ))
                .collect::<Vec<_>>()
                .join(" union all ")
        );
        let out = db
            .psql(&sql)
            .timeout(Duration::from_secs(1800))
            .output()
            .with_context(|| format!("counting the rows written in {name} since the backup"))?;
        out.trim()
            .parse()
            .with_context(|| format!("unexpected row count {out:?}"))
    }
}

/// When kept database `name` was replaced: the UTC stamp in its name.
pub fn replaced_at(db: &str, name: &str) -> Option<jiff::Timestamp> {
    let (stamp, _) = stamp_of(db, name);
    let civil = jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", &stamp).ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// "pid 42 app (its application name), ..." for messages.
fn describe_sessions(sessions: &[Session]) -> String {
    sessions
        .iter()
        .map(|s| {
            format!(
                "pid {} {} ({})",
                s.pid,
                s.user,
                if s.application.is_empty() {
                    "no application name"
                } else {
                    &s.application
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The (stamp, counter) at the end of a side database name.
fn stamp_of(db: &str, name: &str) -> (String, u32) {
    let rest = name.strip_prefix(db).unwrap_or(name);
    let rest = [
        PRE_RESTORE_SUFFIX,
        PRE_SNAPSHOT_SUFFIX,
        FAILED_SUFFIX,
        RESTORE_SUFFIX,
        VERIFY_SUFFIX,
        SNAPSHOT_SUFFIX,
    ]
    .iter()
    .find_map(|s| rest.strip_prefix(s))
    .unwrap_or(rest);
    match rest.split_once('_') {
        Some((stamp, n)) => (stamp.to_string(), n.parse().unwrap_or(1)),
        None => (rest.to_string(), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_respect_the_identifier_limit() {
        assert_eq!(
            derived_name("app", RESTORE_SUFFIX, "20261129101010").unwrap(),
            "app__restore_20261129101010"
        );
        let long = "a".repeat(40);
        assert!(derived_name(&long, PRE_RESTORE_SUFFIX, "20261129101010").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
