//! What commands print: a human view on stdout (tables, summaries) or, with `--json`,
//! one JSON document on stdout. Errors go to stderr (and as JSON to stdout with `--json`).

use indicatif::HumanBytes;
use jiff::Timestamp;
use serde::Serialize;

use crate::backup::catalog::{Catalog, Listing};
use crate::backup::manifest::Manifest;
use crate::backup::{Created, PruneOutcome, Verified};

fn print_json<T: Serialize + ?Sized>(value: &T) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("reports serialise")
    );
}

/// Prints an error with its whole chain, and a JSON error document with `--json`.
pub fn error(err: &anyhow::Error, exit_code: i32, json: bool) {
    // After an interrupt, what it cut short is not the cause: say "interrupted".
    let text = match crate::process::interruption_in(err) {
        Some(cause) => format!("interrupted: {cause}"),
        None => format!("{err:#}"),
    };
    let text = crate::redact::redact_text(&text);
    if json {
        print_json(&serde_json::json!({
            "ok": false,
            "exit_code": exit_code,
            "error": text,
        }));
    }
    errln!("error: {text}");
}

/// "3h ago", "2d ago".
pub fn age(at: Timestamp, now: Timestamp) -> String {
    let secs = now.as_second() - at.as_second();
    match secs {
        s if s < 0 => "in the future".into(),
        s if s < 90 => format!("{s}s ago"),
        s if s < 90 * 60 => format!("{}m ago", s / 60),
        s if s < 36 * 3600 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

fn short_time(at: Timestamp) -> String {
    at.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn commit7(m: &Manifest) -> String {
    m.git_commit
        .as_deref()
        .map(|c| crate::git::abbrev(c, 7).to_string())
        .unwrap_or_else(|| "-".into())
}

fn verified_cell(m: &Manifest) -> String {
    match &m.verification {
        Some(v) => format!("{} {}", v.method, age(v.at, Timestamp::now())),
        None => "no".into(),
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

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

pub fn target(
    current: &str,
    target: &crate::git::Target,
    reverted: &[crate::git::CommitLine],
    json: bool,
) {
    if json {
        print_json(&serde_json::json!({
            "current": current,
            "target": target,
            "reverted": reverted,
        }));
        return;
    }
    match target {
        crate::git::Target::Commit { commit, reason } => {
            outln!(
                "a rollback from {} would go to {} ({reason})",
                crate::git::abbrev(current, 12),
                crate::git::abbrev(commit, 12)
            );
            if !reverted.is_empty() {
                outln!("commits it would revert ({}):", reverted.len());
                for c in reverted {
                    outln!("  {} {}", crate::git::abbrev(&c.sha, 12), c.subject);
                }
            }
        }
        crate::git::Target::None { reason } => {
            errln!(
                "no rollback target from {} (if it failed now): {reason}",
                crate::git::abbrev(current, 12)
            );
        }
    }
}

pub fn restored(r: &crate::restore::Restored, json: bool) {
    if json {
        print_json(r);
        return;
    }
    let rows: u64 = r.tables.values().sum();
    match r.method.as_str() {
        "target" => outln!("restored backup {} into the new database {}", r.backup, r.restored_into),
        "in_place" => outln!("restored backup {} in place into {}", r.backup, r.database),
        _ => outln!(
            "restored backup {} into {}: swapped in within {} ms; the previous database is kept as {}",
            r.backup,
            r.database,
            r.swap_ms.unwrap_or(0),
            r.kept_as.as_deref().unwrap_or("-")
        ),
    }
    outln!(
        "  {} table(s), {rows} row(s) in all; restore took {:.1}s, {:.1}s in all",
        r.tables.len(),
        r.restore_ms as f64 / 1000.0,
        r.total_ms as f64 / 1000.0
    );
    for (t, n) in &r.tables {
        outln!("    {t}: {n}");
    }
    if r.app_stopped {
        outln!("  the app was stopped for the swap and started again");
    }
    if let Some(n) = r.writes_since_backup {
        outln!("  writes since the backup (table statistics): {n}");
    }
    if let Some(g) = &r.gate {
        if g.passed {
            outln!(
                "  the app passed the health gate after the restore ({:.1}s)",
                g.took_ms as f64 / 1000.0
            );
        }
    }
    if !r.replaced_kept.is_empty() {
        for k in &r.replaced_kept {
            errln!(
                "warning: kept {} beyond database.keep_replaced_databases: {}",
                k.name,
                k.reason
            );
        }
    }
    if !r.leftovers_dropped.is_empty() {
        outln!(
            "  dropped leftovers of interrupted restores: {}",
            r.leftovers_dropped.join(", ")
        );
    }
    if !r.replaced_dropped.is_empty() {
        outln!(
            "  dropped older replaced databases (database.keep_replaced_databases): {}",
            r.replaced_dropped.join(", ")
        );
    }
    if let Some(w) = &r.warning {
        errln!("warning: {w}");
    }
    if let Some(h) = &r.health {
        match r.app_healthy {
            Some(false) => errln!("error: {h}"),
            _ => errln!("note: {h}"),
        }
    }
}

pub fn restore_tests(results: &[crate::restore::RestoreTest], json: bool) {
    if json {
        print_json(results);
        return;
    }
    for r in results {
        match &r.problem {
            None => outln!(
                "ok      {}  restored into a scratch database: {} tables, {} rows ({:.1}s)",
                r.id,
                r.tables,
                r.rows,
                r.took_ms as f64 / 1000.0
            ),
            Some(p) => outln!("FAILED  {}  {p}", r.id),
        }
    }
}

pub fn dropped(name: &str, json: bool) {
    if json {
        print_json(&serde_json::json!({ "dropped": name }));
    } else {
        outln!("dropped database {name}");
    }
}

pub fn health_verdict(v: &crate::health::Verdict, json: bool) {
    if json {
        print_json(v);
        return;
    }
    if v.passed {
        outln!(
            "healthy: the gate passed after {:.1}s ({} rounds)",
            v.took_ms as f64 / 1000.0,
            v.rounds
        );
    } else {
        outln!(
            "UNHEALTHY after {:.1}s: {}",
            v.took_ms as f64 / 1000.0,
            v.reason.as_deref().unwrap_or("")
        );
    }
    for p in &v.probes {
        outln!(
            "  {} {}  {} ({} ms)",
            if p.ok { "ok  " } else { "FAIL" },
            p.url,
            p.detail,
            p.millis
        );
    }
    for c in &v.containers {
        outln!(
            "  {} service {} [{}]: {}{}, restarts {}",
            if c.is_ok() { "ok  " } else { "FAIL" },
            c.service,
            c.id,
            c.status,
            c.health
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default(),
            c.restarts
        );
    }
    for (service, logs) in &v.logs {
        outln!("  last log lines of {service}:");
        for line in logs.lines() {
            outln!("    {line}");
        }
    }
}

/// A deploy, rollback or recover outcome.
/// `stablehand deploy --detach`.
pub fn detached(d: &crate::deploy::background::Detached, json: bool) {
    if json {
        print_json(d);
        return;
    }
    if d.running {
        outln!(
            "deploy running in the background as pid {} (output: {}); `stablehand wait` waits for its outcome",
            d.pid,
            d.log.display()
        );
    } else {
        outln!(
            "the background deploy (pid {}) has already finished; `stablehand wait` shows its outcome (output: {})",
            d.pid,
            d.log.display()
        );
    }
}

/// `stablehand wait`: the outcome it waited for.
pub fn waited(w: &crate::deploy::background::Waited, json: bool) {
    if json {
        print_json(w);
        return;
    }
    match (&w.unfinished, &w.release) {
        (Some(unfinished), _) => outln!(
            "MANUAL INTERVENTION REQUIRED (exit {}): {unfinished}",
            w.exit_code
        ),
        (None, Some(r)) => outln!(
            "{} {} (exit {}, recorded {}): {}",
            r.command,
            r.outcome,
            r.exit_code,
            r.at,
            r.message
        ),
        (None, None) => outln!("no deploy or rollback recorded yet"),
    }
}

pub fn outcome(o: &crate::deploy::Outcome, json: bool) {
    if json {
        print_json(o);
        return;
    }
    let headline = match o.outcome.as_str() {
        "deployed" => "DEPLOYED",
        "planned" => "PLAN",
        "refused" => "REFUSED",
        "rolled_back" => "ROLLED BACK",
        "rollback_failed" => "MANUAL INTERVENTION REQUIRED",
        "nothing_to_do" => "NOTHING TO DO",
        other => other,
    };
    outln!("{headline} (exit {}): {}", o.exit_code, o.message);
    if let Some(plan) = &o.plan {
        outln!(
            "  running {}  ->  target {}  (latest-stable: {})",
            crate::git::abbrev(&plan.running, 12),
            crate::git::abbrev(&plan.target, 12),
            plan.latest_stable
                .as_deref()
                .map_or("none yet", |s| crate::git::abbrev(s, 12))
        );
        outln!("  commits the deploy brings ({}):", plan.commits.len());
        for c in &plan.commits {
            outln!("    {} {}", crate::git::abbrev(&c.sha, 7), c.subject);
        }
        outln!("  backup first: {}", plan.database);
        outln!(
            "  runtime: {}{}; snapshot: {}",
            plan.runtime,
            if plan.services.is_empty() {
                String::new()
            } else {
                format!(" (services {})", plan.services.join(", "))
            },
            plan.snapshot
        );
        if let Some(note) = &plan.stable_sync {
            outln!("  {note}");
        }
    }
    if let Some(rb) = &o.rollback {
        if let Some(failed) = &rb.failed_commit {
            outln!("  failed commit: {}", crate::git::abbrev(failed, 12));
        }
        outln!(
            "  rollback target: {} ({})",
            rb.target
                .as_deref()
                .map_or("none", |t| crate::git::abbrev(t, 12)),
            rb.target_reason
        );
        if !rb.reverted_commits.is_empty() {
            outln!("  reverted commits:");
            for c in &rb.reverted_commits {
                outln!("    {} {}", crate::git::abbrev(&c.sha, 7), c.subject);
            }
        }
        if let Some(db) = &rb.db {
            outln!("  database: {}: {}", db.name(), db.reason());
        }
        if let Some(w) = rb.writes_since_backup {
            outln!("  writes since the pre-deploy backup: {w}");
        }
        if let Some(snap) = &rb.kept_snapshot {
            outln!("  the pre-deploy snapshot is kept as {snap} for manual intervention (the next successful deploy drops it)");
        }
        if let Some(kept) = &rb.kept_database {
            outln!("  the failed database is kept as {kept} (drop it with `stablehand db drop-kept {kept} --yes`)");
        }
        for i in &rb.images {
            outln!("  {}: {} ({})", i.service, i.image, i.source);
        }
        outln!("  rollback took {:.1}s", rb.took_ms as f64 / 1000.0);
    }
    if !o.steps.is_empty() {
        outln!("  steps:");
        for s in &o.steps {
            outln!(
                "    {:<16} {:<8} {:>8}{}",
                s.name,
                s.status,
                s.took_ms
                    .map(|t| format!("{:.1}s", t as f64 / 1000.0))
                    .unwrap_or_default(),
                s.detail
                    .as_deref()
                    .map(|d| format!("  {d}"))
                    .unwrap_or_default()
            );
        }
    }
    outln!("  total {:.1}s", o.total_ms as f64 / 1000.0);
}

/// `stablehand status`.
pub fn status(s: &crate::deploy::status::Status, json: bool) {
    if json {
        print_json(s);
        return;
    }
    if let Some(j) = &s.unfinished {
        outln!(
            "UNFINISHED {} {} (started {} by pid {}, phase {:?}, last step {}): run `stablehand recover`",
            j.command,
            j.id,
            j.started_at,
            j.pid,
            j.phase,
            j.steps
                .last()
                .map(|st| format!("{} {}", st.name, st.status))
                .unwrap_or_else(|| "none".into())
        );
    }
    let c = |x: &Option<String>| {
        x.as_deref()
            .map_or("-".to_string(), |v| crate::git::abbrev(v, 12).to_string())
    };
    outln!("running commit:  {}", c(&s.running_commit));
    outln!("latest-stable:   {}", c(&s.latest_stable));
    match &s.last_release {
        Some(r) => outln!(
            "last {}:     {} {} ({}, exit {}): {}",
            r.command,
            r.outcome,
            age(r.at, Timestamp::now()),
            r.trigger,
            r.exit_code,
            r.message
        ),
        None => outln!("last deploy:     none recorded"),
    }
    match (&s.last_backup, s.last_backup_at) {
        (Some(id), Some(at)) => outln!(
            "last backup:     {id} ({}), {} in all",
            age(at, Timestamp::now()),
            s.backups
        ),
        _ => outln!("last backup:     none"),
    }
    if s.kept_databases.is_empty() {
        outln!("kept databases:  none");
    } else {
        outln!("kept databases:");
        for d in &s.kept_databases {
            outln!("  {} ({}, {})", d.name, d.kind, HumanBytes(d.size_bytes));
            if let Some(note) = &d.note {
                outln!("    {note}");
            }
        }
    }
    if let Some(h) = &s.lock_holder {
        outln!("deploy lock:     held by {h}");
    }
    for p in &s.problems {
        outln!("problem: {p}");
    }
}

/// `stablehand history`, newest first.
pub fn history(h: &[crate::journal::Release], json: bool) {
    if json {
        print_json(h);
        return;
    }
    if h.is_empty() {
        outln!("no deploys or rollbacks recorded yet");
        return;
    }
    let c = |x: &Option<String>| {
        x.as_deref()
            .map_or("-".to_string(), |v| crate::git::abbrev(v, 7).to_string())
    };
    let rows: Vec<Vec<String>> = h
        .iter()
        .map(|r| {
            vec![
                short_time(r.at),
                r.command.clone(),
                r.trigger.clone(),
                c(&r.from),
                c(&r.to),
                r.outcome.clone(),
                r.exit_code.to_string(),
                r.db_action.clone().unwrap_or_else(|| "-".into()),
                r.backup.clone().unwrap_or_else(|| "-".into()),
                format!("{:.1}s", r.total_ms as f64 / 1000.0),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &[
                "TIME", "COMMAND", "TRIGGER", "FROM", "TO", "OUTCOME", "EXIT", "DATABASE",
                "BACKUP", "TOOK"
            ],
            &rows
        )
    );
}

/// `stablehand unlock --force`.
pub fn unlocked(holder: Option<&crate::lock::Holder>, json: bool) {
    if json {
        print_json(&serde_json::json!({ "ok": true, "removed_holder": holder }));
        return;
    }
    match holder {
        Some(h) => outln!("removed the deploy lock (it named {h})"),
        None => outln!("there was no deploy lock"),
    }
}

/// `stablehand check`.
pub fn check(r: &crate::check::Report, json: bool) {
    if json {
        print_json(r);
        return;
    }
    if r.ok {
        outln!("ok: backups fresh and verified, no unfinished deploy, the release is healthy");
        return;
    }
    outln!("ALERT: {} condition(s) hold", r.problems.len());
    for p in &r.problems {
        outln!("  {}: {}\n    fix: {}", p.condition, p.detail, p.fix);
    }
}

/// `stablehand init`.
pub fn initialized(path: &std::path::Path, d: &crate::init::Detected, json: bool) {
    if json {
        print_json(&serde_json::json!({ "written": path, "detected": d }));
        return;
    }
    outln!("wrote {}", path.display());
    if let Some(reason) = &d.compose_reason {
        outln!("  compose files: {} ({reason})", d.compose_files.join(", "));
        if !d.other_compose_files.is_empty() {
            outln!(
                "  also here, not used: {} (choose with `stablehand init --force --file F`)",
                d.other_compose_files.join(", ")
            );
        }
    }
    if let Some(how) = &d.resolved_with {
        outln!("  services read from {how}");
    }
    match (&d.db_service, &d.db_user, &d.db_name) {
        (Some(s), Some(u), Some(n)) => outln!(
            "  database: service {s}, user {u} ({}), name {n} ({})",
            d.db_user_from.as_deref().unwrap_or(""),
            d.db_name_from.as_deref().unwrap_or("")
        ),
        _ if !d.compose_files.is_empty() => outln!("  database: no PostgreSQL service found"),
        _ => {}
    }
    if !d.compose_files.is_empty() {
        outln!(
            "  app services: {}",
            if d.app_services.is_empty() {
                "none".into()
            } else {
                d.app_services.join(", ")
            }
        );
    }
    for line in &d.health_lines {
        outln!("  health: {line}");
    }
    outln!(
        "  migrations: {}",
        match (&d.migrations_dir, d.prisma) {
            (Some(dir), _) => format!(
                "prisma, {dir} ({})",
                d.migrations_from.as_deref().unwrap_or("")
            ),
            (None, true) => "prisma".into(),
            (None, false) => "none found".into(),
        }
    );
    outln!(
        "  git remote {}, branch {}",
        d.git_remote.as_deref().unwrap_or("none"),
        d.git_branch.as_deref().unwrap_or("the remote's default"),
    );
    for n in &d.notes {
        outln!("  CHECK: {n}");
    }
    outln!("next: `stablehand doctor`, then `stablehand deploy --dry-run`");
}

/// `stablehand doctor`.
pub fn doctor(r: &crate::doctor::Report, json: bool) {
    if json {
        print_json(r);
        return;
    }
    let rows: Vec<Vec<String>> = r
        .findings
        .iter()
        .map(|f| {
            vec![
                f.status.to_uppercase(),
                f.check.clone(),
                f.detail.clone(),
                f.fix.clone(),
            ]
        })
        .collect();
    outln!("{}", table(&["", "CHECK", "FOUND", "FIX"], &rows));
    if r.blocking == 0 {
        outln!("nothing blocks a deploy");
    } else {
        outln!("{} problem(s) block a deploy", r.blocking);
    }
}

/// `stablehand migrate down`.
pub fn migrate_down(r: &crate::migrations::DownReport, json: bool) {
    if json {
        print_json(r);
        return;
    }
    if r.migrations.is_empty() {
        outln!("nothing to undo: no migration is applied (after the one named with --to, if any)");
        return;
    }
    let verb = if r.applied.is_some() {
        "undid"
    } else {
        "would undo"
    };
    outln!(
        "{verb} {} migration(s) in database {}, newest first: {}",
        r.migrations.len(),
        r.database,
        r.migrations.join(", ")
    );
    outln!(
        "  {} statement(s), {}",
        r.statements,
        if r.transactional {
            "in one transaction"
        } else {
            "statement by statement (a statement cannot run in a transaction)"
        }
    );
    if !r.destroys.is_empty() {
        outln!(
            "  drops {} (no data written since the reference backup in them)",
            r.destroys.join(", ")
        );
    }
    match (&r.reference_backup, &r.applied) {
        (Some(b), Some(a)) if a.fingerprint_checked => {
            outln!("  the schema now matches backup {b}'s fingerprint")
        }
        (Some(b), _) => outln!("  the result is checked against backup {b}'s fingerprint"),
        (None, _) => outln!(
            "  WARNING: no backup records the schema these migrations leave, so the result cannot be checked against a fingerprint"
        ),
    }
    match &r.applied {
        Some(a) => {
            outln!(
                "  done in {} ms; the ledger rows are marked rolled back, so a deploy applies them again",
                a.took_ms
            );
            outln!("next: the running code may expect the newer schema: roll the code back too (`stablehand rollback --to <commit> --db none`)");
        }
        None => outln!("dry run: nothing was changed"),
    }
}

/// `backup list --remote NAME`.
pub fn remote_list(l: &crate::remote::commands::RemoteListing, json: bool) {
    if json {
        print_json(l);
        return;
    }
    outln!("remote {} ({})", l.remote, l.url);
    if l.backups.is_empty() {
        outln!("no backups on this remote");
    } else {
        let now = Timestamp::now();
        let rows: Vec<Vec<String>> = l
            .backups
            .iter()
            .map(|m| {
                vec![
                    m.id.clone(),
                    format!("{} ({})", short_time(m.created_at), age(m.created_at, now)),
                    HumanBytes(m.size_bytes).to_string(),
                    commit7(m),
                    if m.encryption.is_some() { "age" } else { "no" }.to_string(),
                    verified_cell(m),
                    match (l.others.contains(&m.id), &m.origin) {
                        (false, _) => "this one".to_string(),
                        (true, Some(o)) => o.describe(),
                        (true, None) => "not recorded".to_string(),
                    },
                ]
            })
            .collect();
        outln!(
            "{}",
            table(
                &[
                    "ID",
                    "CREATED",
                    "SIZE",
                    "COMMIT",
                    "ENCRYPTED",
                    "VERIFIED",
                    "SERVER"
                ],
                &rows
            )
        );
        if !l.others.is_empty() {
            outln!(
                "({} cop(ies) of other servers or databases: this server never prunes them and never takes them for `latest`)",
                l.others.len()
            );
        }
    }
    for i in &l.incomplete {
        outln!("incomplete: {i}");
    }
}

/// `backup sync`.
pub fn synced(s: &[crate::remote::commands::Synced], json: bool) {
    if json {
        print_json(s);
        return;
    }
    if s.is_empty() {
        outln!("every remote already holds every local backup");
    }
    for r in s {
        match &r.error {
            None => outln!(
                "uploaded {} to {} ({})",
                r.id,
                r.remote,
                HumanBytes(r.size_bytes)
            ),
            Some(e) => outln!("FAILED {} to {}: {e}", r.id, r.remote),
        }
    }
}
