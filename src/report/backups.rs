//! What backup commands print: a new backup, the list, one backup, verify and prune results, pins and stable tags.

use super::*;

pub fn created(c: &Created, json: bool, quiet: bool) {
    if json {
        print_json(c);
        return;
    }
    if let Some(e) = &c.prune.error {
        errln!("warning: the backup stands, but pruning old backups failed: {e}");
    }
    if quiet {
        outln!("{}", c.backup.id);
        return;
    }
    let m = &c.backup;
    let ratio = if m.size_bytes > 0 {
        m.dump_bytes as f64 / m.size_bytes as f64
    } else {
        0.0
    };
    outln!("backup {} created", m.id);
    outln!("  file      {}", c.path);
    outln!(
        "  size      {} (pg_dump wrote {}, {:.1}x smaller)",
        HumanBytes(m.size_bytes),
        HumanBytes(m.dump_bytes),
        ratio
    );
    outln!("  sha256    {}", m.sha256);
    outln!(
        "  database  {} (PostgreSQL {}, {} mode)",
        m.database.name,
        m.database.server_version,
        serde_json::to_value(m.database.mode)
            .unwrap()
            .as_str()
            .unwrap_or("")
    );
    outln!("  took      {:.1}s", m.duration_ms as f64 / 1000.0);
    if let Some(v) = &m.verification {
        outln!(
            "  checked   {} ({} entries in the table of contents)",
            v.method,
            v.toc_entries
        );
    }
    if let Some(rows) = m.prisma_migrations.as_ref().and_then(|p| p.as_array()) {
        outln!("  prisma    {} migration rows recorded", rows.len());
    }
    if let Some(e) = &m.encryption {
        outln!("  encrypted age, to {}", e.recipients.join(", "));
    }
    for u in &m.uploads {
        outln!(
            "  offsite   {}: {} ({}, sha256 {})",
            u.remote,
            u.file,
            HumanBytes(u.size_bytes),
            crate::git::abbrev(&u.sha256, 12)
        );
    }
    for f in &c.upload_failures {
        outln!("  offsite   {}: FAILED: {}", f.remote, f.error);
    }
    for p in &c.remote_prune {
        if !p.deleted.is_empty() {
            outln!(
                "retention on {}: deleted {}",
                p.remote,
                p.deleted.join(", ")
            );
        }
        if let Some(e) = &p.error {
            errln!("warning: retention on remote {} failed: {e}", p.remote);
        }
    }
    let deleted: Vec<&str> = c.prune.deleted().map(|r| r.id.as_str()).collect();
    if !deleted.is_empty() {
        outln!(
            "retention: deleted {} old backup(s): {}",
            deleted.len(),
            deleted.join(", ")
        );
    }
}

pub fn backup_list(
    listing: &Listing,
    databases: Option<&[crate::db::ops::SideDatabase]>,
    json: bool,
) {
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            backups: &'a [Manifest],
            strays: &'a [crate::backup::catalog::Stray],
            #[serde(skip_serializing_if = "Option::is_none")]
            databases: Option<&'a [crate::db::ops::SideDatabase]>,
        }
        print_json(&Out {
            backups: &listing.backups,
            strays: &listing.strays,
            databases,
        });
        return;
    }
    if let Some(side) = databases {
        if side.is_empty() {
            outln!("no databases kept beside the live one");
        } else {
            let rows: Vec<Vec<String>> = side
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.kind.clone(),
                        HumanBytes(d.size_bytes).to_string(),
                        d.note.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            outln!("{}", table(&["DATABASE", "KIND", "SIZE", "RULE"], &rows));
            outln!("(drop one with `stablehand db drop-kept NAME --yes`)");
        }
        outln!();
    }
    let now = Timestamp::now();
    if listing.backups.is_empty() {
        outln!("no backups yet (create one with `stablehand backup`)");
    } else {
        let rows: Vec<Vec<String>> = listing
            .backups
            .iter()
            .map(|m| {
                vec![
                    m.id.clone(),
                    short_time(m.created_at),
                    age(m.created_at, now),
                    HumanBytes(m.size_bytes).to_string(),
                    m.label.clone(),
                    commit7(m),
                    verified_cell(m),
                    if m.pinned {
                        "pinned".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        outln!(
            "{}",
            table(
                &[
                    "ID",
                    "CREATED (UTC)",
                    "AGE",
                    "SIZE",
                    "LABEL",
                    "COMMIT",
                    "VERIFIED",
                    ""
                ],
                &rows
            )
        );
    }
    for s in &listing.strays {
        errln!("note: {}: {}", s.file, s.problem);
    }
}

pub fn backup_show(m: &Manifest, catalog: &Catalog, json: bool) {
    if json {
        print_json(m);
        return;
    }
    let now = Timestamp::now();
    outln!("backup    {}", m.id);
    outln!("file      {}", m.data_path(&catalog.dir).display());
    outln!(
        "created   {} UTC ({})",
        short_time(m.created_at),
        age(m.created_at, now)
    );
    outln!("label     {}", m.label);
    outln!(
        "commit    {}",
        m.git_commit
            .as_deref()
            .unwrap_or("- (not a git repository)")
    );
    outln!(
        "database  {} (PostgreSQL {})",
        m.database.name,
        m.database.server_version
    );
    outln!(
        "size      {} ({} dumped)",
        HumanBytes(m.size_bytes),
        HumanBytes(m.dump_bytes)
    );
    outln!("sha256    {}", m.sha256);
    outln!(
        "format    {}, zstd level {} ({} threads)",
        m.format,
        m.compression.level,
        m.compression.threads
    );
    outln!(
        "tools     pg_dump {}, stablehand {}, zstd {}",
        m.tools.pg_dump,
        m.tools.stablehand,
        m.tools.zstd
    );
    outln!("took      {:.1}s", m.duration_ms as f64 / 1000.0);
    outln!("verified  {}", verified_cell(m));
    outln!("pinned    {}", if m.pinned { "yes" } else { "no" });
    match m.prisma_migrations.as_ref().and_then(|p| p.as_array()) {
        Some(rows) => outln!("prisma    {} rows in _prisma_migrations", rows.len()),
        None => outln!("prisma    no _prisma_migrations table"),
    }
}

pub fn verify(results: &[Verified], json: bool) {
    if json {
        print_json(results);
        return;
    }
    for r in results {
        match &r.problem {
            None => match r.toc_entries {
                Some(n) => outln!(
                    "ok      {}  ({}, {n} entries in the table of contents)",
                    r.id,
                    HumanBytes(r.size_bytes),
                ),
                None => outln!(
                    "ok      {}  ({}, size and SHA-256 match the manifest)",
                    r.id,
                    HumanBytes(r.size_bytes),
                ),
            },
            Some(p) => outln!("FAILED  {}  {}", r.id, p),
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        errln!(
            "{failed} of {} backup(s) failed verification; they no longer count as verified. Do not restore from them.",
            results.len()
        );
    }
}

pub fn prune(p: &PruneOutcome, json: bool) {
    if json {
        print_json(p);
        return;
    }
    if p.rows.is_empty() {
        outln!("no backups to prune");
        return;
    }
    let rows: Vec<Vec<String>> = p
        .rows
        .iter()
        .map(|r| {
            let action = match (r.delete, p.dry_run) {
                _ if r.failed.is_some() => {
                    format!("DELETE FAILED: {}", r.failed.as_deref().unwrap_or(""))
                }
                (true, true) => "delete".to_string(),
                (true, false) => "deleted".to_string(),
                (false, _) => format!(
                    "keep: {}",
                    r.keep
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            vec![
                r.id.clone(),
                short_time(r.created_at),
                HumanBytes(r.size_bytes).to_string(),
                action,
            ]
        })
        .collect();
    outln!(
        "{}",
        table(&["ID", "CREATED (UTC)", "SIZE", "DECISION"], &rows)
    );
    let n = p.deleted().count();
    let verb = if p.dry_run { "would delete" } else { "deleted" };
    outln!("{verb} {n} of {} backup(s)", p.rows.len());
    if let Some(e) = &p.error {
        errln!("error: some backups could not be deleted: {e}");
    }
}

pub fn pinned(m: &Manifest, json: bool) {
    if json {
        print_json(m);
    } else if m.pinned {
        outln!("pinned {}: retention will never delete it", m.id);
    } else {
        outln!("unpinned {}: retention rules apply to it again", m.id);
    }
}

pub fn marked(m: &crate::git::Marked, json: bool) {
    if json {
        print_json(m);
        return;
    }
    outln!(
        "marked {} stable: tag {}, {} moved to it",
        crate::git::abbrev(&m.commit, 12),
        m.tag,
        m.stable_tag
    );
    if m.pushed {
        outln!("pushed both tags to the remote");
    }
    if let Some(e) = &m.push_error {
        errln!("{}: {e}", if m.pushed { "note" } else { "error" });
    }
}

pub fn stable_list(tags: &[crate::git::StableTag], names: &crate::git::TagNames, json: bool) {
    if json {
        print_json(tags);
        return;
    }
    if tags.is_empty() {
        outln!(
            "no stable releases yet (no tags {}*); mark one with `stablehand stable mark`",
            names.prefix
        );
        return;
    }
    let rows: Vec<Vec<String>> = tags
        .iter()
        .map(|t| {
            vec![
                t.tag.clone(),
                crate::git::abbrev(&t.commit, 12).to_string(),
                t.tagged_at.clone(),
                t.subject.clone(),
                if t.latest {
                    format!("<- {}", names.stable_tag)
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    outln!(
        "{}",
        table(&["TAG", "COMMIT", "TAGGED", "SUBJECT", ""], &rows)
    );
}
