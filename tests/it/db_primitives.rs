//! The database primitives of the library against a real PostgreSQL cluster: the schema
//! fingerprint, the Prisma migration ledger, write counters, snapshots and swaps, and
//! the side databases kept or left behind.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stablehand::config::{self, Loaded};
use stablehand::db::inspect::{Ledger, STATS_FLUSH_DELAY};
use stablehand::db::ops::{
    PRE_RESTORE_SUFFIX, PRE_SNAPSHOT_SUFFIX, RESTORE_SUFFIX, SNAPSHOT_SUFFIX, VERIFY_SUFFIX,
};
use stablehand::db::Database;

use crate::require_pg;
use crate::support::{Pg, Session, PG_BIN};

/// An environment variable that is surely unset, so the config's `url` is used.
const UNSET_URL_ENV: &str = "STABLEHAND_IT_DB_PRIMITIVES_UNSET_URL";

/// Direct-mode access to the database at `url`, through the config's `url` key.
fn database_at(url: &str) -> Database {
    assert!(std::env::var_os(UNSET_URL_ENV).is_none());
    let text = format!(
        "[database]\nmode = \"direct\"\nurl_env = \"{UNSET_URL_ENV}\"\nurl = {url:?}\nclient_bin_dir = {PG_BIN:?}\n"
    );
    let loaded = Loaded {
        config: config::parse(&text, Path::new("t.toml")).unwrap(),
        path: "t.toml".into(),
        app_dir: std::env::temp_dir(),
    };
    Database::from_config(&loaded).unwrap()
}

/// Direct-mode access to database `db` of the test cluster.
fn database(pg: &Pg, db: &str) -> Database {
    let d = database_at(&pg.url(db));
    assert_eq!(d.name, db);
    d
}

/// Names of the databases of the cluster that start with `prefix`.
fn databases_like(pg: &Pg, prefix: &str) -> Vec<String> {
    let out = pg.psql(
        "postgres",
        &format!(
            "select datname from pg_database where starts_with(datname, '{prefix}') order by datname"
        ),
    );
    out.lines().map(str::to_string).collect()
}

fn exists(pg: &Pg, name: &str) -> bool {
    pg.psql(
        "postgres",
        &format!("select count(*) from pg_database where datname = '{name}'"),
    ) == "1"
}

// ---------------------------------------------------------------------------------------
// Schema fingerprint
// ---------------------------------------------------------------------------------------

const SCHEMA: &str = "
create table accounts (id serial primary key, email text not null unique, obsolete text, balance int default 0);
create table items (id bigint generated always as identity primary key,
                    account_id int references accounts(id) on delete cascade,
                    qty int not null check (qty > 0),
                    price numeric(10,2),
                    total numeric generated always as (qty * price) stored);
create index items_account_idx on items (account_id);
create type mood as enum ('happy', 'sad');
create domain positive as int check (value > 0);
create table moods (id serial primary key, m mood, p positive);
create sequence invoice_no start 1000 increment 5;
create view rich as select id, email from accounts where balance > 100;
create materialized view item_counts as select account_id, count(*) from items group by account_id;
create function touch() returns trigger language plpgsql as $$ begin new.balance := coalesce(new.balance, 0); return new; end $$;
create trigger accounts_touch before insert on accounts for each row execute function touch();
create schema tenant;
create table tenant.notes (id serial primary key, body text);
alter table accounts enable row level security;
create policy own on accounts using (balance >= 0);
insert into accounts (email, obsolete) select 'a' || g || '@example.test', 'x' from generate_series(1, 200) g;
insert into items (account_id, qty, price) select 1 + g % 200, 1 + g % 7, 9.99 from generate_series(1, 1000) g;
insert into moods (m, p) values ('happy', 1), ('sad', 2);
insert into tenant.notes (body) values ('hello');
";

#[test]
fn db_primitives_fingerprint_ignores_data_and_maintenance() {
    let pg = require_pg!();
    let db = pg.create_db("fpdata");
    pg.psql(&db, SCHEMA);
    let d = database(pg, &db);
    let fp = d.schema_fingerprint().unwrap();
    assert_eq!(fp.len(), 64, "a hex SHA-256: {fp}");
    assert_eq!(d.schema_fingerprint().unwrap(), fp, "two runs differ");

    let data_changes = [
        "insert into accounts (email) select 'b' || g || '@example.test' from generate_series(1, 500) g",
        "update accounts set balance = balance + 150 where id % 3 = 0",
        "delete from items where id % 5 = 0",
        "insert into moods (m, p) values ('sad', 7)",
        "select nextval('invoice_no'), nextval('invoice_no')",
        "refresh materialized view item_counts",
        "vacuum",
        "analyze",
        "vacuum (full, analyze) items",
        "truncate tenant.notes",
        "create temp table scratch (x int); insert into scratch values (1)",
    ];
    for sql in data_changes {
        pg.psql(&db, sql);
        assert_eq!(
            d.schema_fingerprint().unwrap(),
            fp,
            "the fingerprint changed after data-only statement {sql:?}"
        );
    }
}

#[test]
fn db_primitives_fingerprint_changes_with_each_kind_of_ddl() {
    let pg = require_pg!();
    let db = pg.create_db("fpddl");
    pg.psql(&db, SCHEMA);
    let d = database(pg, &db);
    let ddl = [
        "alter table accounts add column nickname text default 'anon'",
        "alter table tenant.notes alter column body type varchar(200)",
        "alter table tenant.notes alter column body type varchar(300)",
        "alter table accounts alter column balance set default 5",
        "alter table accounts alter column nickname set not null",
        "alter table accounts rename column nickname to handle",
        "create index accounts_balance_idx on accounts (balance)",
        "alter table accounts add constraint balance_sane check (balance > -1000)",
        "create table tags (id serial primary key, item_id bigint)",
        "alter table tags add constraint tags_item_fk foreign key (item_id) references items(id)",
        "create view poor as select id from accounts where balance < 10",
        "create or replace view rich as select id, email, balance from accounts where balance > 100",
        "create function answer() returns int language sql as 'select 42'",
        "create or replace function answer() returns int language sql as 'select 43'",
        "create type color as enum ('red', 'green')",
        "alter type color add value 'blue'",
        "alter type mood add value 'meh' before 'sad'",
        "create sequence other_seq",
        "alter sequence invoice_no increment 10",
        "create trigger tags_touch before update on accounts for each row execute function touch()",
        "alter table tags rename to labels",
        "create schema reports",
        "create domain short_text as text check (length(value) < 10)",
        "create policy rich_only on accounts for select using (balance > 100)",
        "create materialized view labels_count as select count(*) from labels",
        "alter table accounts drop column obsolete",
    ];
    let mut seen = vec![d.schema_fingerprint().unwrap()];
    for sql in ddl {
        pg.psql(&db, sql);
        let fp = d.schema_fingerprint().unwrap();
        assert!(
            !seen.contains(&fp),
            "the fingerprint did not change after {sql:?}"
        );
        seen.push(fp);
    }
    assert_eq!(d.schema_fingerprint().unwrap(), *seen.last().unwrap());
}

#[test]
fn db_primitives_fingerprint_survives_dump_and_restore_with_dropped_columns() {
    let pg = require_pg!();
    let source = pg.create_db("fpsrc");
    pg.psql(&source, SCHEMA);
    // Dropped columns leave holes in attnum that a restore packs away.
    pg.psql(
        &source,
        "alter table accounts drop column obsolete;
         alter table accounts add column created_at timestamptz default now();
         alter table moods add column scratch int;
         alter table moods drop column scratch;
         alter table moods add column note text;",
    );
    let holes = pg.psql(
        &source,
        "select count(*) from pg_attribute where attrelid = 'accounts'::regclass and attisdropped",
    );
    assert_eq!(holes, "1", "the source has a dropped column");

    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("source.dump");
    let status = Command::new(format!("{PG_BIN}/pg_dump"))
        .args(["-Fc", "--no-owner", "-f"])
        .arg(&dump)
        .arg(format!("--dbname={}", pg.url(&source)))
        .status()
        .unwrap();
    assert!(status.success(), "pg_dump failed");
    let target = pg.create_db("fpdst");
    let status = Command::new(format!("{PG_BIN}/pg_restore"))
        .args(["--exit-on-error", "--no-owner"])
        .arg(format!("--dbname={}", pg.url(&target)))
        .arg(&dump)
        .status()
        .unwrap();
    assert!(status.success(), "pg_restore failed");
    assert_eq!(
        pg.psql(
            &target,
            "select count(*) from pg_attribute where attrelid = 'accounts'::regclass and attisdropped"
        ),
        "0",
        "the restore packed the columns"
    );

    let (s, t) = (database(pg, &source), database(pg, &target));
    let fs = s.schema_fingerprint().unwrap();
    assert_eq!(s.schema_fingerprint().unwrap(), fs, "not stable");
    assert_eq!(
        t.schema_fingerprint().unwrap(),
        fs,
        "a restored copy must have the source's fingerprint"
    );
    assert_eq!(s.table_row_counts().unwrap(), t.table_row_counts().unwrap());

    // And a change in the copy tells them apart.
    pg.psql(&target, "alter table moods add column extra int");
    assert_ne!(t.schema_fingerprint().unwrap(), fs);
}

// ---------------------------------------------------------------------------------------
// Migration ledger
// ---------------------------------------------------------------------------------------

const PRISMA_TABLE: &str = "(
    id varchar(36) primary key,
    checksum varchar(64) not null,
    finished_at timestamptz,
    migration_name varchar(255) not null,
    logs text,
    rolled_back_at timestamptz,
    started_at timestamptz not null default now(),
    applied_steps_count int not null default 0)";

#[test]
fn db_primitives_ledger_reads_rows_and_diffs() {
    let pg = require_pg!();
    let db = pg.create_db("ledger");
    let d = database(pg, &db);
    assert_eq!(
        d.migration_ledger().unwrap(),
        Ledger::default(),
        "no table is an empty ledger"
    );

    pg.psql(
        &db,
        &format!(
            "create table _prisma_migrations {PRISMA_TABLE};
             insert into _prisma_migrations (id, checksum, finished_at, migration_name, started_at, applied_steps_count) values
               ('a1', 'c1', '2026-01-01 00:00:01+00', '001_init', '2026-01-01 00:00:00+00', 1),
               ('a2', 'c2', '2026-01-02 00:00:01+00', '002_users', '2026-01-02 00:00:00+00', 2);"
        ),
    );
    let before = d.migration_ledger().unwrap();
    let names: Vec<&str> = before
        .rows
        .iter()
        .map(|r| r.migration_name.as_str())
        .collect();
    assert_eq!(names, ["001_init", "002_users"]);
    let first = &before.rows[0];
    assert_eq!(first.id, "a1");
    assert_eq!(first.checksum, "c1");
    assert_eq!(first.applied_steps_count, Some(1));
    assert!(first.started_at.is_some() && first.finished_at.is_some());
    assert!(first.rolled_back_at.is_none());
    assert!(before.rows.iter().all(|r| r.is_applied() && !r.is_failed()));
    assert!(before.diff(&before).is_empty());
    assert!(Ledger::default().diff(&Ledger::default()).is_empty());
    // From nothing, both count as applied.
    assert_eq!(
        Ledger::default().diff(&before).applied,
        ["001_init", "002_users"]
    );

    pg.psql(
        &db,
        "insert into _prisma_migrations (id, checksum, finished_at, migration_name, started_at, applied_steps_count) values
           ('a3', 'c3', '2026-01-03 00:00:01+00', '003_posts', '2026-01-03 00:00:00+00', 1),
           ('a4', 'c4', null, '004_broken', '2026-01-04 00:00:00+00', 0);
         update _prisma_migrations set rolled_back_at = '2026-01-05 00:00:00+00' where migration_name = '002_users';",
    );
    let after = d.migration_ledger().unwrap();
    assert_eq!(after.rows.len(), 4);
    let diff = before.diff(&after);
    assert_eq!(diff.applied, ["003_posts"]);
    assert_eq!(diff.failed, ["004_broken"]);
    assert_eq!(diff.rolled_back, ["002_users"]);
    assert!(!diff.is_empty());
    assert!(after.diff(&after).is_empty());
}

#[test]
fn db_primitives_ledger_follows_the_schema_parameter() {
    let pg = require_pg!();
    let db = pg.create_db("ledgerschema");
    pg.psql(
        &db,
        &format!(
            "create schema tenant;
             create table tenant._prisma_migrations {PRISMA_TABLE};
             insert into tenant._prisma_migrations (id, checksum, finished_at, migration_name) values
               ('t1', 'c', now(), '001_tenant');"
        ),
    );
    let d = database_at(&format!("{}?schema=tenant", pg.url(&db)));
    assert_eq!(d.schema.as_deref(), Some("tenant"));
    let ledger = d.migration_ledger().unwrap();
    assert_eq!(ledger.rows.len(), 1);
    assert_eq!(ledger.rows[0].migration_name, "001_tenant");
    // Without the parameter, public has no ledger.
    assert!(database(pg, &db)
        .migration_ledger()
        .unwrap()
        .rows
        .is_empty());
}

// ---------------------------------------------------------------------------------------
// Write counters
// ---------------------------------------------------------------------------------------

fn wait_for_stats() {
    std::thread::sleep(STATS_FLUSH_DELAY + Duration::from_millis(400));
}

#[test]
fn db_primitives_write_counters_count_writes_but_not_the_ledger_or_reads() {
    let pg = require_pg!();
    let db = pg.create_db("writes");
    pg.psql(
        &db,
        &format!(
            "create table t (id serial primary key, v int);
             create table _prisma_migrations {PRISMA_TABLE};"
        ),
    );
    let d = database(pg, &db);
    wait_for_stats();
    let before = d.write_counters().unwrap();
    assert!(
        !before
            .per_table
            .keys()
            .any(|k| k.contains("_prisma_migrations")),
        "the ledger is excluded: {before:?}"
    );

    // 100 inserts + 30 updates + 20 deletes.
    pg.psql(
        &db,
        "insert into t (v) select g from generate_series(1, 100) g;
         update t set v = v + 1 where id <= 30;
         delete from t where id > 80;",
    );
    wait_for_stats();
    let after = d.write_counters().unwrap();
    let written = after.since(&before);
    assert!(
        written >= 150,
        "expected >= 150 writes, got {written}: {after:?}"
    );
    assert!(after.per_table["public.t"] >= 150, "{after:?}");
    assert_eq!(after.total, after.per_table.values().sum::<u64>());

    // Ledger writes only: nothing counts.
    pg.psql(
        &db,
        "insert into _prisma_migrations (id, checksum, finished_at, migration_name)
           select 'm' || g, 'c', now(), 'm' || g from generate_series(1, 50) g;
         update _prisma_migrations set logs = 'x';
         delete from _prisma_migrations where id = 'm1';",
    );
    // Reads only: nothing counts either.
    pg.psql(&db, "select count(*), sum(v) from t");
    pg.psql(&db, "select * from t where id = 3");
    wait_for_stats();
    let later = d.write_counters().unwrap();
    assert_eq!(
        later.since(&after),
        0,
        "ledger writes and reads must not count: {after:?} -> {later:?}"
    );
    // The ledger writes were flushed (they show in the server's statistics).
    assert_eq!(
        pg.psql(
            &db,
            "select n_tup_ins from pg_stat_user_tables where relname = '_prisma_migrations'"
        ),
        "50"
    );
}

// ---------------------------------------------------------------------------------------
// Snapshots and swaps
// ---------------------------------------------------------------------------------------

#[test]
fn db_primitives_snapshot_copies_and_refuses_while_connected() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let d = database(pg, &db);
    let fp = d.schema_fingerprint().unwrap();
    let rows = d.table_row_counts().unwrap();
    assert_eq!(rows["public.users"], 5000);

    let snap = d.snapshot("s1").unwrap();
    assert_eq!(snap, format!("{db}{SNAPSHOT_SUFFIX}s1"));
    assert!(exists(pg, &snap));
    let s = d.on(&snap);
    assert_eq!(s.table_row_counts().unwrap(), rows);
    assert_eq!(s.schema_fingerprint().unwrap(), fp);
    let sides = d.side_databases().unwrap();
    assert!(
        sides.iter().any(|x| x.name == snap && x.kind == "snapshot"),
        "{sides:?}"
    );

    // Another client on the live database: refused, naming it, nothing created.
    {
        let holder = Session::sleeping(&pg.url(&db), "holder");
        let sessions = d.sessions_on(&db).unwrap();
        assert!(
            sessions.iter().any(|x| x.application == holder.app),
            "{sessions:?}"
        );
        let err = d.snapshot("s2").unwrap_err().to_string();
        assert!(err.contains(&holder.app), "{err}");
        assert!(err.contains("holder"), "{err}");
        assert!(err.contains("stop the app"), "{err}");
        assert!(!exists(pg, &format!("{db}{SNAPSHOT_SUFFIX}s2")));
    }
    // The holder's cleanup checks from a session of its own on this database, whose
    // backend exits a moment after its client: wait for it rather than race it.
    let left = crate::support::wait_for(Duration::from_secs(5), || {
        d.sessions_on(&db).unwrap().is_empty().then_some(())
    });
    assert!(left.is_some(), "{:?}", d.sessions_on(&db).unwrap());

    // A name PostgreSQL would truncate is refused before anything is done.
    let long_id = "x".repeat(64);
    assert!(d.snapshot(&long_id).is_err());
}

#[test]
fn db_primitives_swap_to_snapshot_restores_it_and_keeps_the_replaced() {
    let pg = require_pg!();
    let db = pg.create_db("swap");
    pg.psql(
        &db,
        "create table t (id serial primary key, v text);
         insert into t (v) select 'before' from generate_series(1, 100);",
    );
    let d = database(pg, &db);
    let snap = d.snapshot("s1").unwrap();

    // Writes after the snapshot.
    pg.psql(
        &db,
        "insert into t (v) select 'after' from generate_series(1, 50)",
    );
    assert_eq!(pg.psql(&db, "select count(*) from t"), "150");

    let (kept, took) = d.swap_to_snapshot(&snap).unwrap();
    assert!(
        kept.starts_with(&format!("{db}{PRE_SNAPSHOT_SUFFIX}")),
        "{kept}"
    );
    assert!(took < Duration::from_secs(1), "the swap took {took:?}");
    assert_eq!(pg.psql(&db, "select count(*) from t"), "100");
    assert_eq!(
        pg.psql(&db, "select count(*) from t where v = 'after'"),
        "0"
    );
    assert_eq!(pg.psql(&kept, "select count(*) from t"), "150");
    assert!(!exists(pg, &snap), "the snapshot became the live database");

    let sides = d.side_databases().unwrap();
    assert!(
        sides.iter().any(|x| x.name == kept && x.kind == "replaced"),
        "{sides:?}"
    );
    assert!(
        sides.iter().all(|x| x.name != snap && x.name != db),
        "{sides:?}"
    );

    // drop_snapshot refuses what is not a snapshot of this database.
    let other = pg.create_db("swapother");
    let other_snap = database(pg, &other).snapshot("o1").unwrap();
    for name in [
        kept.as_str(),
        db.as_str(),
        other.as_str(),
        other_snap.as_str(),
    ] {
        let err = d.drop_snapshot(name).unwrap_err().to_string();
        assert!(err.contains("is not a snapshot of"), "{name}: {err}");
        assert!(exists(pg, name), "{name} was dropped");
    }
    // And drops a real one.
    let snap2 = d.snapshot("s2").unwrap();
    assert!(exists(pg, &snap2));
    d.drop_snapshot(&snap2).unwrap();
    assert!(!exists(pg, &snap2));
    assert!(exists(pg, &db) && exists(pg, &kept));

    for name in [kept, other_snap] {
        pg.psql("postgres", &format!("drop database {name}"));
    }
}

// ---------------------------------------------------------------------------------------
// Kept and leftover databases
// ---------------------------------------------------------------------------------------

#[test]
fn db_primitives_prune_replaced_keeps_the_newest_and_leftovers_go() {
    let pg = require_pg!();
    let db = pg.create_db("prune");
    let d = database(pg, &db);
    // The newer of the two kept databases sorts first by stamp but last by name.
    let older = format!("{db}{PRE_SNAPSHOT_SUFFIX}20240101000000");
    let newer = format!("{db}{PRE_RESTORE_SUFFIX}20250101000000");
    let snap = format!("{db}{SNAPSHOT_SUFFIX}keepme");
    let restore_left = format!("{db}{RESTORE_SUFFIX}20250102030405");
    let verify_left = format!("{db}{VERIFY_SUFFIX}20250102030406");
    for name in [&older, &newer, &snap, &restore_left, &verify_left] {
        pg.psql("postgres", &format!("create database {name}"));
    }

    let sides = d.side_databases().unwrap();
    let kinds: Vec<(&str, &str)> = sides
        .iter()
        .map(|s| (s.name.as_str(), s.kind.as_str()))
        .collect();
    for (name, kind) in [
        (&older, "replaced"),
        (&newer, "replaced"),
        (&snap, "snapshot"),
        (&restore_left, "leftover"),
        (&verify_left, "leftover"),
    ] {
        assert!(kinds.contains(&(name.as_str(), kind)), "{name}: {kinds:?}");
    }
    assert_eq!(sides.len(), 5, "{kinds:?}");
    assert!(sides.iter().all(|s| s.size_bytes > 0), "{sides:?}");

    // Without a backup known to hold a kept database's data, nothing is dropped.
    assert!(d
        .prune_replaced_against(1, |_, _| None)
        .unwrap()
        .dropped
        .is_empty());
    assert!(exists(pg, &older));
    // With one (and no row written since), the older one goes.
    let covered = |_: &str, _: jiff::Timestamp| {
        Some(stablehand::db::ops::Covering {
            id: "b1".into(),
            xid_horizon: 1,
        })
    };
    let dropped = d.prune_replaced_against(1, covered).unwrap().dropped;
    assert_eq!(dropped, vec![older.clone()]);
    assert!(!exists(pg, &older));
    assert!(exists(pg, &newer), "the newest replaced database is kept");
    assert!(exists(pg, &snap) && exists(pg, &restore_left) && exists(pg, &verify_left));
    assert!(d
        .prune_replaced_against(1, covered)
        .unwrap()
        .dropped
        .is_empty());

    // A leftover someone is connected to stays; the other goes.
    {
        let _holder = Session::sleeping(&pg.url(&verify_left), "holder");
        let dropped = d.drop_leftovers().unwrap();
        assert_eq!(dropped, vec![restore_left.clone()]);
        assert!(!exists(pg, &restore_left));
        assert!(exists(pg, &verify_left), "a leftover in use was dropped");
    }
    assert_eq!(d.drop_leftovers().unwrap(), vec![verify_left.clone()]);
    assert!(!exists(pg, &verify_left));
    assert!(exists(pg, &db) && exists(pg, &snap) && exists(pg, &newer));
    assert_eq!(databases_like(pg, &format!("{db}__")), {
        let mut v = vec![newer.clone(), snap.clone()];
        v.sort();
        v
    });

    assert_eq!(
        d.prune_replaced_against(0, covered).unwrap().dropped,
        vec![newer.clone()]
    );
    pg.psql("postgres", &format!("drop database {snap}"));
}

/// BUG (src/db/ops.rs, `swap_to_snapshot` and `stamp`): the kept name is
/// `<db>__pre_snapshot_<stamp>` with a one-second stamp, so a second swap within the same
/// second collides with the first kept database and fails.
#[test]
fn db_primitives_two_swaps_within_one_second_keep_both() {
    let pg = require_pg!();
    let db = pg.create_db("dswap");
    pg.psql(&db, "create table t (id int); insert into t values (1)");
    let d = database(pg, &db);
    let s1 = d.snapshot("a").unwrap();
    pg.psql(&db, "insert into t values (2)");
    let s2 = d.snapshot("b").unwrap();
    // Start right after a second boundary, so that both swaps fall in the same second.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1005 - u64::from(now.subsec_millis())));
    let (k1, _) = d.swap_to_snapshot(&s1).unwrap();
    let second = d.swap_to_snapshot(&s2);
    // Whatever happened, nothing was lost: the transaction renamed both or neither.
    assert!(exists(pg, &db) && exists(pg, &k1));
    let (k2, _) = second.unwrap_or_else(|e| {
        panic!(
            "BUG in src/db/ops.rs swap_to_snapshot: a second swap within the same second \
             reuses the kept name {k1} (stamp() has one-second resolution) and fails: {e:#}"
        )
    });
    assert_ne!(k1, k2);
    assert_eq!(pg.psql(&db, "select count(*) from t"), "2");
}

/// BUG (src/db/inspect.rs, FINGERPRINT_SQL): DDL that changes behaviour but is not in
/// the catalog text the fingerprint reads leaves it unchanged: a column's collation
/// (format_type omits it), a trigger's enabled state (pg_get_triggerdef omits
/// tgenabled), row level security being enabled or forced (relrowsecurity,
/// relforcerowsecurity), and a policy's command, roles and permissiveness (polcmd,
/// polroles, polpermissive). All of these survive pg_dump/pg_restore, so including them
/// would keep restored copies equal.
#[test]
fn db_primitives_fingerprint_sees_behaviour_changing_ddl() {
    let pg = require_pg!();
    let db = pg.create_db("fpgap");
    pg.psql(
        &db,
        "create table t (id int primary key, s text, owner text);
         create function f() returns trigger language plpgsql as $$ begin return new; end $$;
         create trigger tr before insert on t for each row execute function f();
         create policy p on t for select using (owner = current_user);",
    );
    let d = database(pg, &db);
    let ddl = [
        "alter table t alter column s type text collate \"C\"",
        "alter table t disable trigger tr",
        "alter table t enable row level security",
        "alter table t force row level security",
        "drop policy p on t; create policy p on t for delete using (owner = current_user)",
        "alter policy p on t to pg_monitor",
        "drop policy p on t; create policy p on t as restrictive for delete to pg_monitor using (owner = current_user)",
    ];
    let mut previous = d.schema_fingerprint().unwrap();
    let mut missed = Vec::new();
    for sql in ddl {
        pg.psql(&db, sql);
        let fp = d.schema_fingerprint().unwrap();
        if fp == previous {
            missed.push(sql);
        }
        previous = fp;
    }
    assert!(
        missed.is_empty(),
        "BUG in src/db/inspect.rs FINGERPRINT_SQL: the schema fingerprint did not change after {missed:#?}"
    );
}
