//! Loading a backup into a new database: created like the live one, restored (checked while it loads), checked, and given the live database's properties; dropped on any failure.

use super::*;

/// Creates `name`, restores into it (object owners and grants included), checks it and
/// gives it the live database's owner, ACL and settings; on any failure drops it again.
/// Refused before anything is created when stablehand's role could not reproduce them.
pub(super) fn restore_into_new(
    loaded: &Loaded,
    live: &Database,
    name: &str,
    prepared: &Prepared,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let properties = reproducible(live, prepared)?;
    live.create_database_like_live(name)?;
    let target = live.on(name);
    let result = load_into_new(loaded, live, &target, prepared)
        .and_then(|rows| check_tables(&target, &prepared.check, rows))
        .and_then(|counts| {
            if let Some(p) = &properties {
                live.apply_properties(name, p)?;
            }
            Ok(counts)
        });
    if let Err(e) = result {
        let _ = live.end_sessions_on(&[name]);
        let dropped = live.drop_side_database(name);
        let note = match dropped {
            Ok(()) => format!("the half-restored database {name} was dropped"),
            Err(d) => format!(
                "the half-restored database {name} could not be dropped ({d:#}); drop it by hand"
            ),
        };
        return Err(e.context(note));
    }
    Ok(result.expect("checked above"))
}

/// The live database's owner, ACL and settings (None when it does not exist: a restore
/// into a new database after the live one was lost), once it is known that
/// stablehand's role can reproduce them and the backup's object owners.
pub(super) fn reproducible(
    live: &Database,
    prepared: &Prepared,
) -> anyhow::Result<Option<crate::db::properties::Properties>> {
    let properties = live.properties_if_exists(&live.name)?;
    let problems = live.reproduction_problems(
        properties.as_ref().unwrap_or(&Default::default()),
        &prepared.check.toc.owners(),
    )?;
    if !problems.is_empty() {
        bail!(
            "stablehand's role cannot make a faithful copy of {}: {}; nothing was created or changed",
            live.name,
            problems.join("; ")
        );
    }
    Ok(properties)
}

/// Every table and materialized view of the backup's table of contents exists in the
/// restored database (partitions and partitioned tables included, each compared by
/// schema and name); returns rows per table (`counted` in the archive, or else the
/// check's, or else counted in the database).
pub(super) fn check_tables(
    db: &Database,
    check: &FileCheck,
    counted: Option<BTreeMap<String, u64>>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let relations = db
        .relations()
        .context("reading the restored database's tables")?;
    let present: std::collections::BTreeSet<(&str, &str, bool)> = relations
        .iter()
        .map(|(schema, name, kind)| (schema.as_str(), name.as_str(), *kind == 'm'))
        .collect();
    let missing = missing_relations(&check.toc, &present);
    if !missing.is_empty() {
        bail!(
            "the restored database lacks {} table(s) or materialized view(s) of the backup: {}",
            missing.len(),
            missing.join(", ")
        );
    }
    // pg_restore --exit-on-error loaded every table's data whole (COPY is all or
    // nothing), so the rows are the archive's, counted in the pass that decompressed and
    // hashed it; only when that count is missing are they counted again in the database.
    match counted.or_else(|| check.rows.clone()) {
        Some(rows) => Ok(rows),
        None => db.table_row_counts().context("counting the restored rows"),
    }
}

/// The `TABLE` and `MATERIALIZED VIEW` entries of `toc` with no (schema, name,
/// is-matview) in `present`, as `schema.name`.
pub(super) fn missing_relations(
    toc: &crate::backup::toc::Toc,
    present: &std::collections::BTreeSet<(&str, &str, bool)>,
) -> Vec<String> {
    toc.entries
        .iter()
        .filter_map(|e| {
            let matview = match e.desc.as_str() {
                "TABLE" => false,
                "MATERIALIZED VIEW" => true,
                _ => return None,
            };
            let schema = e.namespace.as_deref().unwrap_or("");
            (!present.contains(&(schema, e.tag.as_str(), matview)))
                .then(|| format!("{schema}.{}", e.tag))
        })
        .collect()
}

/// pg_restore into `target` with the restore's session settings, stopping at the first
/// error; `in_place` cleans the existing objects first, in one transaction.
pub(super) fn pg_restore_cmd(loaded: &Loaded, target: &Database, in_place: bool) -> Cmd {
    let target = target
        .clone()
        .with_session_env("PGOPTIONS", RESTORE_PGOPTIONS);
    let cmd = target
        .tool(Tool::PgRestore, true)
        // Owners and grants are restored as they were (reproduction_problems checked
        // that stablehand's role may): an app connecting as its own role keeps working.
        .args(["--exit-on-error"])
        .timeout(loaded.config.backup.timeout);
    match in_place {
        true => cmd.args(["--clean", "--if-exists", "--single-transaction"]),
        false => cmd,
    }
}

/// Loads the backup into the new database `target`: streamed, or (`Source::Checking`)
/// checked while it loads, with the data loaded by parallel loaders (each building the
/// indexes on its own tables as soon as their data is in; one stream with one job), and
/// the other post-data entries (constraints across tables, triggers, grants) restored
/// with parallel jobs after all the data. Returns the rows per table when counted.
pub(super) fn load_into_new(
    loaded: &Loaded,
    live: &Database,
    target: &Database,
    prepared: &Prepared,
) -> anyhow::Result<Option<BTreeMap<String, u64>>> {
    let (path, id, size_bytes, sha256, front) = match &prepared.source {
        Source::Stream(path) => {
            stream_into(pg_restore_cmd(loaded, target, false), path)?;
            return Ok(None);
        }
        Source::Checking {
            path,
            id,
            size_bytes,
            sha256,
            front,
        } => (path, id, *size_bytes, sha256, front),
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = match loaded.config.backup.restore_jobs {
        0 => workers,
        n => n as usize,
    };
    let expected = (size_bytes, sha256.as_str());
    let dir = front.0.parent().unwrap_or(Path::new("."));
    let pid = std::process::id();
    // Each loader finds its own blocks by reading the archive's block headers (which it
    // cannot do in data pg_dump compressed itself: stablehand's backups never are).
    let parallel = jobs > 1 && !prepared.check.toc.compressed;
    let lists = match parallel {
        true => {
            let sizes = live.table_sizes().unwrap_or_default();
            stream::split_data(&prepared.check.toc, jobs, &sizes)
        }
        false => Vec::new(),
    };
    let mut list_files = Vec::new();
    let mut post_data_list = None;
    let result = if lists.len() > 1 {
        let has_data: std::collections::HashSet<i64> = prepared
            .check
            .toc
            .entries
            .iter()
            .filter(|e| e.has_data)
            .map(|e| e.dump_id)
            .collect();
        let (early, rest) = stream::split_post_data(&prepared.check.toc, &lists);
        let mut list_file = |name: String, ids: &[i64]| -> anyhow::Result<PathBuf> {
            let file = TempDump(dir.join(format!(".restore-{pid}.{name}.dump.tmp")));
            let text: String = ids.iter().map(|id| format!("{id};\n")).collect();
            crate::files::create_private(&file.0)?.write_all(text.as_bytes())?;
            let path = file.0.clone();
            list_files.push(file);
            Ok(path)
        };
        let mut loaders = Vec::new();
        for (i, (list, indexes)) in lists.iter().zip(&early).enumerate() {
            let file = list_file(format!("list{i}"), list)?;
            let then = match indexes.is_empty() {
                true => None,
                false => Some(
                    post_data_cmd(loaded, target, jobs.min(indexes.len()), &front.0)
                        .arg("-L")
                        .arg(list_file(format!("indexes{i}"), indexes)?),
                ),
            };
            loaders.push(stream::Loader {
                cmd: pg_restore_cmd(loaded, target, false).arg("-L").arg(file),
                blocks: list
                    .iter()
                    .filter(|id| has_data.contains(*id))
                    .copied()
                    .collect(),
                then,
            });
        }
        post_data_list = Some(list_file("rest".into(), &rest)?);
        let pre_data = pg_restore_cmd(loaded, target, false)
            .arg("--section=pre-data")
            .arg(&front.0);
        stream::load_parallel(pre_data, loaders, &prepared.check.toc, path, expected)
    } else {
        let schema_and_data =
            pg_restore_cmd(loaded, target, false).args(["--section=pre-data", "--section=data"]);
        stream::load(schema_and_data, path, expected, workers)
    };
    let loaded_data = result.map_err(|e| match e {
        stream::LoadError::Damaged(e) => e.context(format!(
            "backup {id} is damaged and was refused; nothing was changed"
        )),
        stream::LoadError::Unreadable(e) => e.context(format!(
            "backup {id} could not be checked, so it was not restored; nothing was changed"
        )),
        stream::LoadError::Restore(e) => e,
    })?;
    // Indexes and constraints: those the loaders did not build already.
    let post_data = post_data_cmd(loaded, target, jobs, &front.0);
    match &post_data_list {
        Some(list) => post_data.arg("-L").arg(list),
        None => post_data,
    }
    .output()
    .context("pg_restore failed (indexes and constraints)")?;
    drop(list_files);
    Ok(Some(loaded_data.rows))
}

/// pg_restore of the post-data entries (indexes, constraints) from the archive's front
/// at `front`, with `jobs` parallel jobs.
pub(super) fn post_data_cmd(loaded: &Loaded, target: &Database, jobs: usize, front: &Path) -> Cmd {
    pg_restore_cmd(loaded, target, false)
        .arg("--section=post-data")
        .arg(format!("--jobs={jobs}"))
        .arg(front)
}

/// Decompresses the backup into pg_restore's stdin.
pub(super) fn stream_into(cmd: Cmd, path: &Path) -> anyhow::Result<()> {
    stream::run_fed(cmd, "", |stdin| {
        let mut decoder = zstd::stream::read::Decoder::new(fs_err::File::open(path)?)?;
        io::copy(&mut decoder, stdin).map(drop)
    })
}
