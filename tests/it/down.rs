//! Down migrations end to end, through the real binary, on the demo app's stack (git with
//! a bare remote, PostgreSQL in compose, an app whose entrypoint applies
//! `prisma/migrations/*/migration.sql` and writes `_prisma_migrations` the way Prisma
//! does: uuid id, sha256 checksum, the row first, finished_at after).

use std::fs;

use crate::deploy::{steps, Stack};
use crate::support::git;

fn column_exists(s: &Stack, table: &str, column: &str) -> bool {
    s.psql(
        "appdb",
        &format!(
            "select count(*) > 0 from information_schema.columns where table_name = '{table}' and column_name = '{column}'"
        ),
    ) == "t"
}

fn ledger(s: &Stack, name: &str) -> (u64, u64) {
    let applied = s.count(&format!(
        "select count(*) from _prisma_migrations where migration_name = '{name}' and finished_at is not null and rolled_back_at is null"
    ));
    let rolled_back = s.count(&format!(
        "select count(*) from _prisma_migrations where migration_name = '{name}' and rolled_back_at is not null"
    ));
    (applied, rolled_back)
}

const POSTS_UP: &str =
    "create table posts (id serial primary key, title text not null);\nalter table messages add column bio text;\n";
const POSTS_DOWN: &str =
    "-- AlterTable\nALTER TABLE \"messages\" DROP COLUMN \"bio\";\n\n-- DropTable\nDROP TABLE \"posts\";\n";

#[test]
fn a_failed_deploy_rolls_back_by_down_migrations_keeping_rows_written_during_it() {
    let Some(s) = Stack::new("") else { return };
    let v1 = git(&s.dev(), &["rev-parse", "HEAD"]);
    assert_eq!(s.deploy(&[]).0, 0);

    // v2 adds a table and a column, with its down.sql, and breaks /health.
    s.add_migration("002_posts", POSTS_UP);
    s.add_down("002_posts", POSTS_DOWN);
    s.set_healthy(false);
    s.commit("v2: posts, broken health");
    let (code, v) = s.deploy_writing_during_gate(
        "insert into messages (body) select 'during the deploy ' || g from generate_series(1, 5) g",
    );
    assert_eq!(code, 11, "{v:#}");
    let db = &v["rollback"]["db"];
    assert_eq!(db["action"], "down", "{v:#}");
    assert!(
        db["reason"]
            .as_str()
            .unwrap()
            .contains("preserve the writes"),
        "{db}"
    );
    assert!(
        steps(&v).contains(&"database_down:done".to_string()),
        "{:?}",
        steps(&v)
    );
    // The schema is back, the rows written during the deploy are there, nothing restored.
    assert!(!s.table_exists("appdb", "posts"));
    assert!(!column_exists(&s, "messages", "bio"));
    assert_eq!(
        s.count("select count(*) from messages where body like 'during the deploy%'"),
        5,
        "rows written during the deploy survive a down migration"
    );
    assert_eq!(s.count("select count(*) from messages"), 105);
    assert!(
        s.databases_like("appdb__failed_").is_empty(),
        "no restore, nothing kept aside"
    );
    assert_eq!(
        ledger(&s, "002_posts"),
        (0, 1),
        "the ledger row is marked rolled back"
    );
    assert_eq!(s.head(), v1);
    assert_eq!(s.health_status(), Some(200));
    let history = fs::read_to_string(s.app().join(".stablehand/history.jsonl")).unwrap();
    assert!(history.contains("\"down\""), "{history}");

    // A later release with the same migration sees it as unapplied and applies it again.
    s.set_healthy(true);
    let v3 = s.commit("v3: posts again, health fixed");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(s.head(), v3);
    assert!(
        s.table_exists("appdb", "posts"),
        "002_posts was applied again"
    );
    assert!(column_exists(&s, "messages", "bio"));
    assert_eq!(ledger(&s, "002_posts"), (1, 1));

    // By hand: a dry run changes nothing; without --yes and no terminal, exit 2.
    let (code, out, err) = s.stablehand(&["--json", "migrate", "down", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["migrations"], serde_json::json!(["002_posts"]));
    assert_eq!(plan["transactional"], true);
    assert!(plan["reference_backup"].is_string(), "{plan:#}");
    assert!(
        s.table_exists("appdb", "posts"),
        "a dry run changes nothing"
    );
    let (code, _, err) = s.stablehand(&["migrate", "down"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
    // A name that is not applied is a usage error listing the applied ones.
    let (code, _, err) = s.stablehand(&["migrate", "down", "--to", "999_nope", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("002_posts, 001_init"), "{err}");
    // With --yes: undone, checked against the pre-deploy backup's fingerprint.
    let (code, out, err) = s.stablehand(&["--json", "migrate", "down", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    let done: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["applied"]["fingerprint_checked"], true, "{done:#}");
    assert!(!s.table_exists("appdb", "posts"));
    assert_eq!(ledger(&s, "002_posts"), (0, 2));
    assert_eq!(s.count("select count(*) from messages"), 105);
}

#[test]
fn down_paths_that_cannot_be_trusted_fall_back_to_restore() {
    let Some(s) = Stack::new("on_rollback = \"down\"\n") else {
        return;
    };
    assert_eq!(s.deploy(&[]).0, 0);
    s.set_healthy(false);
    let migrations = s.dev().join("prisma/migrations");

    // A migration without down.sql: restored, saying which script is missing.
    s.add_migration("002_a", "create table a (id int);");
    s.commit("v2: table a without down.sql");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 11, "{v:#}");
    let db = &v["rollback"]["db"];
    assert_eq!(db["action"], "restore", "{v:#}");
    let reason = db["reason"].as_str().unwrap();
    assert!(
        reason.contains("002_a has no down script") && reason.contains("002_a/down.sql"),
        "{reason}"
    );
    assert!(!s.table_exists("appdb", "a"));
    fs::remove_dir_all(migrations.join("002_a")).unwrap();

    // A down.sql that does not undo the migration: the fingerprint check inside the
    // transaction rolls it back, and the backup is restored instead.
    s.add_migration("003_b", "create table b (id int);");
    s.add_down("003_b", "select 1;");
    s.commit("v3: table b with a wrong down.sql");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["rollback"]["db"]["action"], "restore", "{v:#}");
    let done = steps(&v);
    assert!(
        done.contains(&"database_down:failed".to_string()),
        "{done:?}"
    );
    assert!(
        done.contains(&"database_restore:done".to_string()),
        "{done:?}"
    );
    let reason = v["rollback"]["db"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("schema fingerprint") && reason.contains("nothing was changed"),
        "{reason}"
    );
    assert!(!s.table_exists("appdb", "b"));
    fs::remove_dir_all(migrations.join("003_b")).unwrap();

    // A down path that would drop data written during the deploy: refused before it
    // runs; the restore keeps that data in the failed database, set aside.
    s.add_migration(
        "004_c",
        "create table c (id serial primary key, body text);\nalter table messages add column tag text;",
    );
    s.add_down(
        "004_c",
        "ALTER TABLE \"messages\" DROP COLUMN \"tag\";\nDROP TABLE \"c\";",
    );
    s.commit("v4: table c and messages.tag, with down.sql");
    let (code, v) = s.deploy_writing_during_gate_once(
        "select to_regclass('c') is not null and exists (select 1 from information_schema.columns where table_name = 'messages' and column_name = 'tag')",
        "insert into c (body) select 'new ' || g from generate_series(1, 3) g; \
         update messages set tag = 'x' where id <= 2",
    );
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["rollback"]["db"]["action"], "restore", "{v:#}");
    let reason = v["rollback"]["db"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("would destroy data")
            && reason.contains("column messages.tag (2 values")
            && reason.contains("table c (3 rows"),
        "{reason}"
    );
    assert!(
        !steps(&v).iter().any(|s| s.starts_with("database_down")),
        "the down scripts never ran"
    );
    assert!(!s.table_exists("appdb", "c"));
    let kept = s.databases_like("appdb__failed_");
    let newest = kept.iter().max().expect("the failed database is kept");
    assert_eq!(
        s.psql(newest, "select count(*) from c"),
        "3",
        "the rows written during the deploy are in the kept database"
    );
}
