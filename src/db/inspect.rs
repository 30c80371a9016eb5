//! Reading a database's state without changing it: the schema fingerprint, the Prisma
//! migration ledger (and the difference of two), write counters, tables and row counts.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::Database;

/// pg_stat_user_tables is flushed about once a second: wait this long after writes
/// before reading counters that must include them.
pub const STATS_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(1100);

/// The catalog, as canonical text lines: everything that makes up the schema (tables,
/// columns, types, defaults, constraints, indexes, views, functions, enums, sequences,
/// triggers, schemas, extensions) and nothing that is data. Column positions are ranks,
/// so a restore (which packs dropped columns away) keeps the fingerprint.
const FINGERPRINT_SQL: &str = r#"
with ns as (
  select oid, nspname from pg_namespace
  where nspname not in ('pg_catalog', 'information_schema')
    and nspname not like 'pg_toast%' and nspname not like 'pg_temp%'
)
select coalesce(string_agg(line, E'\n' order by line), '') from (
  select format('schema %s', nspname) as line from ns
  union all
  select format('ext %s %s', extname, extversion) from pg_extension
  union all
  select format('rel %s.%s %s rls=%s force_rls=%s', ns.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity)
    from pg_class c join ns on ns.oid = c.relnamespace
   where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I', 'c')
  union all
  select format('col %s.%s #%s %s %s collate=%s notnull=%s default=%s identity=%s generated=%s',
                ns.nspname, c.relname,
                row_number() over (partition by c.oid order by a.attnum),
                a.attname, format_type(a.atttypid, a.atttypmod), coalesce(coll.collname, ''), a.attnotnull,
                coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity, a.attgenerated)
    from pg_attribute a
    join pg_class c on c.oid = a.attrelid
    join ns on ns.oid = c.relnamespace
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    left join pg_collation coll on coll.oid = a.attcollation
   where a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'p', 'v', 'm', 'f', 'c')
  union all
  select format('con %s.%s %s %s', ns.nspname, c.relname, co.conname, pg_get_constraintdef(co.oid))
    from pg_constraint co join pg_class c on c.oid = co.conrelid join ns on ns.oid = c.relnamespace
  union all
  select format('domaincon %s.%s %s', ns.nspname, co.conname, pg_get_constraintdef(co.oid))
    from pg_constraint co join pg_type t on t.oid = co.contypid join ns on ns.oid = t.typnamespace
  union all
  select format('idx %s', pg_get_indexdef(i.indexrelid))
    from pg_index i join pg_class c on c.oid = i.indexrelid join ns on ns.oid = c.relnamespace
  union all
  select format('view %s.%s %s', ns.nspname, c.relname, pg_get_viewdef(c.oid))
    from pg_class c join ns on ns.oid = c.relnamespace where c.relkind in ('v', 'm')
  union all
  select format('fn %s.%s(%s) %s', ns.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
                md5(pg_get_functiondef(p.oid)))
    from pg_proc p join ns on ns.oid = p.pronamespace where p.prokind in ('f', 'p')
  union all
  select format('agg %s.%s(%s)', ns.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
    from pg_proc p join ns on ns.oid = p.pronamespace where p.prokind = 'a'
  union all
  select format('type %s.%s %s', ns.nspname, t.typname, t.typtype)
    from pg_type t join ns on ns.oid = t.typnamespace
   where t.typtype in ('e', 'd', 'r', 'm') or (t.typtype = 'c' and exists (
         select 1 from pg_class c where c.oid = t.typrelid and c.relkind = 'c'))
  union all
  select format('enum %s.%s %s %s', ns.nspname, t.typname,
                row_number() over (partition by t.oid order by e.enumsortorder), e.enumlabel)
    from pg_enum e join pg_type t on t.oid = e.enumtypid join ns on ns.oid = t.typnamespace
  union all
  select format('seq %s.%s %s start=%s inc=%s min=%s max=%s cycle=%s', ns.nspname, c.relname,
                format_type(s.seqtypid, null), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcycle)
    from pg_sequence s join pg_class c on c.oid = s.seqrelid join ns on ns.oid = c.relnamespace
  union all
  select format('trg %s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
    from pg_trigger t join pg_class c on c.oid = t.tgrelid join ns on ns.oid = c.relnamespace
   where not t.tgisinternal
  union all
  select format('policy %s.%s %s cmd=%s permissive=%s roles=%s using=%s check=%s', ns.nspname, c.relname, p.polname,
                p.polcmd, p.polpermissive,
                array(select coalesce((select rolname from pg_roles where oid = r), 'public') from unnest(p.polroles) r order by 1),
                coalesce(pg_get_expr(p.polqual, p.polrelid), ''), coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''))
    from pg_policy p join pg_class c on c.oid = p.polrelid join ns on ns.oid = c.relnamespace
) lines
"#;

/// The fingerprint as one SQL expression (hex SHA-256 of the catalog text), so a script
/// can compare it inside its own transaction (the down migrations do).
pub fn fingerprint_expr() -> String {
    format!(
        "encode(sha256(convert_to(btrim(({}), E' \\t\\r\\n'), 'UTF8')), 'hex')",
        FINGERPRINT_SQL.trim()
    )
}

impl Database {
    /// A stable SHA-256 of the schema read from the catalog: unchanged by data, changed
    /// by any DDL. (Not a hash of pg_dump output, which carries a random key.)
    pub fn schema_fingerprint(&self) -> anyhow::Result<String> {
        self.query(&format!("select {}", fingerprint_expr()))
            .context("reading the schema from the catalog")
    }

    /// What a backup records before its dump, read in one psql session: the server's
    /// version, the ledger, the schema's fingerprint, the write counters and the oldest
    /// running transaction (each as its own function reads it).
    pub fn backup_facts(&self) -> anyhow::Result<BackupFacts> {
        let script = format!(
            "select json_build_object('server', current_setting('server_version'), \
             'fingerprint', {}, 'counters', (select {}), 'xid', txid_snapshot_xmin(txid_current_snapshot()));\n{}",
            fingerprint_expr(),
            COUNTERS_SQL,
            self.ledger_script()
        );
        let out = self
            .run_script(&script, self.query_timeout)
            .with_context(|| format!("cannot reach the database: {}", self.describe()))?;
        let (facts, _) = out.split_once(super::LEDGER_MARK).unwrap_or((&out, ""));
        #[derive(Deserialize)]
        struct Read {
            server: String,
            fingerprint: String,
            counters: BTreeMap<String, u64>,
            xid: u64,
        }
        let read: Read = serde_json::from_str(facts.trim())
            .with_context(|| format!("unexpected answer {:?}", facts.trim()))?;
        Ok(BackupFacts {
            server: super::Version::parse_tool_output(&read.server)
                .with_context(|| format!("unexpected server version text {:?}", read.server))?,
            prisma: super::parse_ledger(&out)?,
            fingerprint: read.fingerprint,
            counters: WriteCounters {
                total: read.counters.values().sum(),
                per_table: read.counters,
            },
            xid_horizon: read.xid,
        })
    }

    /// The oldest transaction still running: every row written by a transaction that
    /// was not finished at this moment has an xmin at or above it. A backup records it,
    /// so "rows written since the backup" can be found later (see `rows_written_since`).
    pub fn xid_horizon(&self) -> anyhow::Result<u64> {
        let out = self.query("select txid_snapshot_xmin(txid_current_snapshot())")?;
        out.parse()
            .with_context(|| format!("unexpected transaction id {out:?}"))
    }

    /// Rows of `table` (optionally only those with `column` not null) written by
    /// transactions at or after `horizon` (every row when the horizon is unknown).
    /// `age(xmin)` counts transactions back from now, so no 32-bit wraparound math.
    pub fn rows_written_since(
        &self,
        table: &str,
        column: Option<&str>,
        horizon: Option<u64>,
    ) -> anyhow::Result<u64> {
        let mut conds = Vec::new();
        if let Some(c) = column {
            conds.push(format!("{c} is not null"));
        }
        if let Some(h) = horizon {
            conds.push(format!("age(xmin)::bigint <= txid_current() - {h}"));
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" where {}", conds.join(" and "))
        };
        let out = self.query(&format!("select count(*) from {table}{filter}"))?;
        out.parse()
            .with_context(|| format!("unexpected row count {out:?}"))
    }

    /// The Prisma migration ledger; an absent table is an empty ledger.
    pub fn migration_ledger(&self) -> anyhow::Result<Ledger> {
        let rows = match self.prisma_migrations()? {
            Some(json) => {
                serde_json::from_value(json).context("reading _prisma_migrations rows")?
            }
            None => Vec::new(),
        };
        Ok(Ledger { rows })
    }

    /// Rows inserted, updated and deleted per user table (the ledger excluded), from
    /// pg_stat_user_tables. Counters lag writes by up to a second: see STATS_FLUSH_DELAY.
    pub fn write_counters(&self) -> anyhow::Result<WriteCounters> {
        let out = self.query(&format!("select {COUNTERS_SQL}"))?;
        let per_table: BTreeMap<String, u64> =
            serde_json::from_str(&out).context("reading pg_stat_user_tables")?;
        Ok(WriteCounters {
            total: per_table.values().sum(),
            per_table,
        })
    }

    /// The tables (ordinary, partitioned and partitions) and materialized views, as
    /// (schema, name, relkind): what a table of contents' `TABLE` and `MATERIALIZED
    /// VIEW` entries become.
    pub fn relations(&self) -> anyhow::Result<Vec<(String, String, char)>> {
        let out = self.query(
            "select coalesce(json_agg(json_build_array(n.nspname, c.relname, c.relkind::text)), '[]') \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'p', 'm') and n.nspname not in ('pg_catalog', 'information_schema') \
             and n.nspname not like 'pg_toast%' and n.nspname not like 'pg_temp%'",
        )?;
        let rows: Vec<(String, String, String)> =
            serde_json::from_str(&out).context("reading the database's tables")?;
        Ok(rows
            .into_iter()
            .map(|(schema, name, kind)| (schema, name, kind.chars().next().unwrap_or('r')))
            .collect())
    }

    /// The on-disk size of each table's data (ordinary tables, partitions and
    /// materialized views), keyed `schema.name`: how a restore balances its workers.
    pub fn table_sizes(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let out = self.query(
            "select coalesce(json_object_agg(n.nspname || '.' || c.relname, pg_relation_size(c.oid)), '{}') \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'm') and n.nspname not in ('pg_catalog', 'information_schema')",
        )?;
        serde_json::from_str(&out).context("reading the table sizes")
    }

    /// Rows per table that holds rows (ordinary tables and partitions, not the
    /// partitioned parents, whose rows are their partitions'), keyed `schema.name`.
    pub fn table_row_counts(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let tables: Vec<(String, String)> = self
            .relations()?
            .into_iter()
            .filter(|(_, _, kind)| *kind == 'r')
            .map(|(schema, name, _)| (schema, name))
            .collect();
        if tables.is_empty() {
            return Ok(BTreeMap::new());
        }
        let sql = tables
            .iter()
            .map(|(schema, name)| {
                format!(
                    "select {} as t, count(*) as n from {}.{}",
                    super::ops::literal(&format!("{schema}.{name}")),
                    super::ops::ident(schema),
                    super::ops::ident(name)
                )
            })
            .collect::<Vec<_>>()
            .join(" union all ");
        let out = self.query(&format!(
            "select coalesce(json_object_agg(t, n), '{{}}') from ({sql}) counts"
        ))?;
        serde_json::from_str(&out).context("reading the row counts")
    }
}

/// One row of `_prisma_migrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub id: String,
    pub migration_name: String,
    pub checksum: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub rolled_back_at: Option<String>,
    pub applied_steps_count: Option<i64>,
}

impl LedgerRow {
    /// Applied and in force (what Prisma counts as applied).
    pub fn is_applied(&self) -> bool {
        self.finished_at.is_some() && self.rolled_back_at.is_none()
    }

    /// Started, never finished, not rolled back: blocks `prisma migrate deploy` (P3009).
    pub fn is_failed(&self) -> bool {
        self.finished_at.is_none() && self.rolled_back_at.is_none()
    }
}

/// The rows of `_prisma_migrations` (empty when the table does not exist).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub rows: Vec<LedgerRow>,
}

/// What changed between two ledgers, by migration name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerDiff {
    /// Applied after, not applied before.
    pub applied: Vec<String>,
    /// Failed after (started, unfinished), not failed before.
    pub failed: Vec<String>,
    /// Rows in force before whose rolled_back_at was set between the two.
    pub rolled_back: Vec<String>,
}

impl LedgerDiff {
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.failed.is_empty() && self.rolled_back.is_empty()
    }
}

impl Ledger {
    fn applied_names(&self) -> std::collections::BTreeSet<&str> {
        self.rows
            .iter()
            .filter(|r| r.is_applied())
            .map(|r| r.migration_name.as_str())
            .collect()
    }

    /// What happened between `self` (before) and `after`.
    pub fn diff(&self, after: &Ledger) -> LedgerDiff {
        let before_applied = self.applied_names();
        let before_failed: std::collections::BTreeSet<&str> = self
            .rows
            .iter()
            .filter(|r| r.is_failed())
            .map(|r| r.migration_name.as_str())
            .collect();
        // Rows that were in force before: marking one of them rolled back changes the
        // database. A row both added and rolled back since (a down migration of this
        // deploy's own migration) nets to nothing; the fingerprint covers the schema.
        let before_in_force: std::collections::BTreeSet<&str> = self
            .rows
            .iter()
            .filter(|r| r.rolled_back_at.is_none())
            .map(|r| r.id.as_str())
            .collect();
        let mut diff = LedgerDiff::default();
        for name in after.applied_names() {
            if !before_applied.contains(name) {
                diff.applied.push(name.to_string());
            }
        }
        for r in after.rows.iter().filter(|r| r.is_failed()) {
            if !before_failed.contains(r.migration_name.as_str()) {
                diff.failed.push(r.migration_name.clone());
            }
        }
        for r in after.rows.iter().filter(|r| r.rolled_back_at.is_some()) {
            if before_in_force.contains(r.id.as_str()) {
                diff.rolled_back.push(r.migration_name.clone());
            }
        }
        diff
    }
}

/// What [`Database::backup_facts`] reads.
#[derive(Debug, Clone)]
pub struct BackupFacts {
    pub server: super::Version,
    pub prisma: Option<serde_json::Value>,
    pub fingerprint: String,
    pub counters: WriteCounters,
    pub xid_horizon: u64,
}

/// Rows inserted, updated and deleted per user table (the ledger excluded), as JSON.
const COUNTERS_SQL: &str = "coalesce(json_object_agg(schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del), '{}'::json) \
     from pg_stat_user_tables where relname <> '_prisma_migrations'";

/// Writes per table since the server's statistics were reset, and their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCounters {
    pub total: u64,
    pub per_table: BTreeMap<String, u64>,
}

impl WriteCounters {
    /// Writes made since `earlier` (counters only grow unless statistics were reset; a
    /// table whose counter went down counts as written, erring toward "something was").
    pub fn since(&self, earlier: &WriteCounters) -> u64 {
        self.per_table
            .iter()
            .map(|(t, now)| match earlier.per_table.get(t) {
                Some(before) if now >= before => now - before,
                Some(_) => now.max(&1).to_owned(),
                None => *now,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, finished: bool, rolled_back: bool) -> LedgerRow {
        LedgerRow {
            id: format!("id-{name}-{finished}-{rolled_back}"),
            migration_name: name.into(),
            checksum: "c".into(),
            started_at: Some("2026-01-01T00:00:00Z".into()),
            finished_at: finished.then(|| "2026-01-01T00:00:01Z".into()),
            rolled_back_at: rolled_back.then(|| "2026-01-01T00:00:02Z".into()),
            applied_steps_count: Some(1),
        }
    }

    #[test]
    fn ledger_diff_finds_applied_failed_and_rolled_back() {
        let before = Ledger {
            rows: vec![row("001_init", true, false), row("002_users", true, false)],
        };
        let mut after = before.clone();
        after.rows.push(row("003_posts", true, false));
        after.rows.push(row("004_broken", false, false));
        after.rows[1].rolled_back_at = Some("2026-02-02T00:00:00Z".into());
        let d = before.diff(&after);
        assert_eq!(d.applied, vec!["003_posts"]);
        assert_eq!(d.failed, vec!["004_broken"]);
        assert_eq!(d.rolled_back, vec!["002_users"]);
        assert!(before.diff(&before).is_empty());
        assert!(Ledger::default().diff(&Ledger::default()).is_empty());
    }

    #[test]
    fn reapplied_after_rollback_counts_as_applied() {
        let before = Ledger {
            rows: vec![row("001_init", true, true)],
        };
        let after = Ledger {
            rows: vec![row("001_init", true, true), row("001_init", true, false)],
        };
        assert_eq!(before.diff(&after).applied, vec!["001_init"]);
    }

    #[test]
    fn a_migration_applied_and_rolled_back_since_nets_to_nothing() {
        let before = Ledger {
            rows: vec![row("001_init", true, false)],
        };
        let mut after = before.clone();
        after.rows.push(row("002_posts", true, true));
        assert!(before.diff(&after).is_empty(), "{:?}", before.diff(&after));
    }

    #[test]
    fn writes_since_err_toward_written() {
        let a = WriteCounters {
            total: 10,
            per_table: [("public.a".to_string(), 10)].into(),
        };
        let b = WriteCounters {
            total: 15,
            per_table: [("public.a".to_string(), 12), ("public.b".to_string(), 3)].into(),
        };
        assert_eq!(b.since(&a), 5);
        let reset = WriteCounters {
            total: 0,
            per_table: [("public.a".to_string(), 0)].into(),
        };
        assert_eq!(reset.since(&a), 1);
    }
}
