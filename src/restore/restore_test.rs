//! Restore tests: a backup restored into a scratch database, checked, dropped and recorded.

use super::*;

/// The outcome of a restore test of one backup.
#[derive(Debug, Serialize)]
pub struct RestoreTest {
    pub id: String,
    pub ok: bool,
    pub problem: Option<String>,
    pub tables: usize,
    pub rows: u64,
    pub took_ms: u64,
}

/// Restores each backup into a scratch database, checks it, drops it, and records
/// the result in the manifest (a failure clears the verified mark).
pub fn restore_test(
    loaded: &Loaded,
    id: Option<&str>,
    all: bool,
) -> anyhow::Result<Vec<RestoreTest>> {
    let catalog = Catalog::new(loaded.backup_dir());
    let _lock = catalog.lock()?;
    let targets = catalog.select(id, all)?;
    restore_test_in(loaded, &catalog, targets)
}

/// `restore_test` of `targets` in `catalog` (the caller holds the backup directory's
/// lock); the outcome is written into each manifest there.
pub fn restore_test_in(
    loaded: &Loaded,
    catalog: &Catalog,
    targets: Vec<Manifest>,
) -> anyhow::Result<Vec<RestoreTest>> {
    let live = Database::from_config(loaded)?
        .with_application_name(&format!("stablehand-verify-{}", std::process::id()));
    let _ = live.drop_leftovers();
    let mut results = Vec::new();
    for mut m in targets {
        let started = Instant::now();
        let outcome = prepare(loaded, &live, catalog, &m, true).and_then(|prepared| {
            let scratch = live.fresh_side_name(ops::VERIFY_SUFFIX)?;
            let tables = restore_into_new(loaded, &live, &scratch, &prepared)?;
            if let Err(e) = live.drop_side_database(&scratch) {
                tracing::warn!("the restore test passed, but its scratch database {scratch} could not be dropped ({e:#}); drop it with `stablehand db drop-kept {scratch} --yes`");
            }
            Ok((prepared.check.toc_entries, tables))
        });
        let result = match outcome {
            Ok((toc_entries, tables)) => {
                let rows = tables.values().sum();
                m.verification = Some(Verification {
                    at: Timestamp::now(),
                    method: "restore-test".into(),
                    toc_entries,
                    tables: Some(tables.len() as u64),
                    rows: Some(rows),
                });
                m.verification_failure = None;
                m.write_atomic(&catalog.dir)?;
                RestoreTest {
                    id: m.id.clone(),
                    ok: true,
                    problem: None,
                    tables: tables.len(),
                    rows,
                    took_ms: started.elapsed().as_millis() as u64,
                }
            }
            Err(e) => {
                if crate::process::interrupted() {
                    return Err(e);
                }
                // Only a damaged file loses its verified mark; a server that refused the
                // scratch database says nothing about the backup.
                if format!("{e:#}").contains("is damaged and was refused") {
                    m.verification = None;
                    m.verification_failure = Some(crate::backup::manifest::VerificationFailure {
                        at: Timestamp::now(),
                        problem: format!("{e:#}"),
                    });
                    m.write_atomic(&catalog.dir)?;
                }
                RestoreTest {
                    id: m.id.clone(),
                    ok: false,
                    problem: Some(format!("{e:#}")),
                    tables: 0,
                    rows: 0,
                    took_ms: started.elapsed().as_millis() as u64,
                }
            }
        };
        results.push(result);
    }
    Ok(results)
}
