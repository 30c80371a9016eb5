//! What backup commands print: a new backup, the list, one backup, verify and prune results, pins and stable tags.

use super::*;

pub fn created(out: &mut Printer, c: &Created) {
    if out.json() {
        out.document(c);
        return;
    }
    if let Some(e) = &c.prune.error {
        tell!(
            out,
            "warning: the backup stands, but pruning old backups failed: {e}"
        );
    }
    if out.quiet() {
        say!(out, "{}", c.backup.id);
        return;
    }
    let m = &c.backup;
    let ratio = if m.size_bytes > 0 {
        m.dump_bytes as f64 / m.size_bytes as f64
    } else {
        0.0
    };
    say!(out, "backup {} created", m.id);
    say!(out, "  file      {}", c.path);
    say!(
        out,
        "  size      {} (pg_dump wrote {}, {:.1}x smaller)",
        HumanBytes(m.size_bytes),
        HumanBytes(m.dump_bytes),
        ratio
    );
    say!(out, "  sha256    {}", m.sha256);
    say!(
        out,
        "  database  {} (PostgreSQL {}, {} mode)",
        m.database.name,
        m.database.server_version,
        serde_json::to_value(m.database.mode)
            .unwrap()
            .as_str()
            .unwrap_or("")
    );
    say!(out, "  took      {:.1}s", m.duration_ms as f64 / 1000.0);
    if let Some(v) = &m.verification {
        say!(
            out,
            "  checked   {} ({} entries in the table of contents)",
            v.method,
            v.toc_entries
        );
    }
    if let Some(rows) = m.prisma_migrations.as_ref().and_then(|p| p.as_array()) {
        say!(out, "  prisma    {} migration rows recorded", rows.len());
    }
    if let Some(e) = &m.encryption {
        say!(out, "  encrypted age, to {}", e.recipients.join(", "));
    }
    for u in &m.uploads {
        say!(
            out,
            "  offsite   {}: {} ({}, sha256 {})",
            u.remote,
            u.file,
            HumanBytes(u.size_bytes),
            crate::git::abbrev(&u.sha256, 12)
        );
    }
    for f in &c.upload_failures {
        say!(out, "  offsite   {}: FAILED: {}", f.remote, f.error);
    }
    for p in &c.remote_prune {
        if !p.deleted.is_empty() {
            say!(
                out,
                "retention on {}: deleted {}",
                p.remote,
                p.deleted.join(", ")
            );
        }
        if let Some(e) = &p.error {
            tell!(out, "warning: retention on remote {} failed: {e}", p.remote);
        }
    }
    let deleted: Vec<&str> = c.prune.deleted().map(|r| r.id.as_str()).collect();
    if !deleted.is_empty() {
        say!(
            out,
            "retention: deleted {} old backup(s): {}",
            deleted.len(),
            deleted.join(", ")
        );
    }
}

pub fn backup_list(
    out: &mut Printer,
    listing: &Listing,
    databases: Option<&[crate::db::ops::SideDatabase]>,
) {
    if out.json() {
        #[derive(Serialize)]
        struct Out<'a> {
            backups: &'a [Manifest],
            strays: &'a [crate::backup::catalog::Stray],
            #[serde(skip_serializing_if = "Option::is_none")]
            databases: Option<&'a [crate::db::ops::SideDatabase]>,
        }
        out.document(&Out {
            backups: &listing.backups,
            strays: &listing.strays,
            databases,
        });
        return;
    }
    if let Some(side) = databases {
        if side.is_empty() {
            say!(out, "no databases kept beside the live one");
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
            say!(
                out,
                "{}",
                table(&["DATABASE", "KIND", "SIZE", "RULE"], &rows)
            );
            say!(out, "(drop one with `stablehand db drop-kept NAME --yes`)");
        }
        say!(out,);
    }
    let now = Timestamp::now();
    if listing.backups.is_empty() {
        say!(out, "no backups yet (create one with `stablehand backup`)");
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
        say!(
            out,
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
        tell!(out, "note: {}: {}", s.file, s.problem);
    }
}

pub fn backup_show(out: &mut Printer, m: &Manifest, catalog: &Catalog) {
    if out.json() {
        out.document(m);
        return;
    }
    let now = Timestamp::now();
    say!(out, "backup    {}", m.id);
    say!(out, "file      {}", m.data_path(&catalog.dir).display());
    say!(
        out,
        "created   {} UTC ({})",
        short_time(m.created_at),
        age(m.created_at, now)
    );
    say!(out, "label     {}", m.label);
    say!(
        out,
        "commit    {}",
        m.git_commit
            .as_deref()
            .unwrap_or("- (not a git repository)")
    );
    say!(
        out,
        "database  {} (PostgreSQL {})",
        m.database.name,
        m.database.server_version
    );
    say!(
        out,
        "size      {} ({} dumped)",
        HumanBytes(m.size_bytes),
        HumanBytes(m.dump_bytes)
    );
    say!(out, "sha256    {}", m.sha256);
    say!(
        out,
        "format    {}, zstd level {} ({} threads)",
        m.format,
        m.compression.level,
        m.compression.threads
    );
    say!(
        out,
        "tools     pg_dump {}, stablehand {}, zstd {}",
        m.tools.pg_dump,
        m.tools.stablehand,
        m.tools.zstd
    );
    say!(out, "took      {:.1}s", m.duration_ms as f64 / 1000.0);
    say!(out, "verified  {}", verified_cell(m));
    say!(out, "pinned    {}", if m.pinned { "yes" } else { "no" });
    match m.prisma_migrations.as_ref().and_then(|p| p.as_array()) {
        Some(rows) => say!(out, "prisma    {} rows in _prisma_migrations", rows.len()),
        None => say!(out, "prisma    no _prisma_migrations table"),
    }
}

pub fn verify(out: &mut Printer, results: &[Verified]) {
    if out.json() {
        out.document(results);
        return;
    }
    for r in results {
        match &r.problem {
            None => match r.toc_entries {
                Some(n) => say!(
                    out,
                    "ok      {}  ({}, {n} entries in the table of contents)",
                    r.id,
                    HumanBytes(r.size_bytes),
                ),
                None => say!(
                    out,
                    "ok      {}  ({}, size and SHA-256 match the manifest)",
                    r.id,
                    HumanBytes(r.size_bytes),
                ),
            },
            Some(p) => say!(out, "FAILED  {}  {}", r.id, p),
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        tell!(out,
            "{failed} of {} backup(s) failed verification; they no longer count as verified. Do not restore from them.",
            results.len()
        );
    }
}

pub fn prune(out: &mut Printer, p: &PruneOutcome) {
    if out.json() {
        out.document(p);
        return;
    }
    if p.rows.is_empty() {
        say!(out, "no backups to prune");
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
    say!(
        out,
        "{}",
        table(&["ID", "CREATED (UTC)", "SIZE", "DECISION"], &rows)
    );
    let n = p.deleted().count();
    let verb = if p.dry_run { "would delete" } else { "deleted" };
    say!(out, "{verb} {n} of {} backup(s)", p.rows.len());
    if let Some(e) = &p.error {
        tell!(out, "error: some backups could not be deleted: {e}");
    }
}

pub fn pinned(out: &mut Printer, m: &Manifest) {
    if out.json() {
        out.document(m);
    } else if m.pinned {
        say!(out, "pinned {}: retention will never delete it", m.id);
    } else {
        say!(out, "unpinned {}: retention rules apply to it again", m.id);
    }
}

pub fn marked(out: &mut Printer, m: &crate::git::Marked) {
    if out.json() {
        out.document(m);
        return;
    }
    say!(
        out,
        "marked {} stable: tag {}, {} moved to it",
        crate::git::abbrev(&m.commit, 12),
        m.tag,
        m.stable_tag
    );
    if m.pushed {
        say!(out, "pushed both tags to the remote");
    }
    if let Some(e) = &m.push_error {
        tell!(out, "{}: {e}", if m.pushed { "note" } else { "error" });
    }
}

pub fn stable_list(
    out: &mut Printer,
    tags: &[crate::git::StableTag],
    names: &crate::git::TagNames,
) {
    if out.json() {
        out.document(tags);
        return;
    }
    if tags.is_empty() {
        say!(
            out,
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
    say!(
        out,
        "{}",
        table(&["TAG", "COMMIT", "TAGGED", "SUBJECT", ""], &rows)
    );
}
