//! What commands print: a human view on stdout (tables, summaries) or, with `--json`,
//! one JSON document on stdout. Errors go to stderr (and as JSON to stdout with `--json`).

use indicatif::HumanBytes;
use jiff::Timestamp;
use serde::Serialize;

use crate::backup::catalog::{Catalog, Listing};
use crate::backup::manifest::Manifest;
use crate::backup::{Created, PruneOutcome, Verified};

fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("reports serialise")
    );
}

/// Prints an error with its whole chain, and a JSON error document with `--json`.
pub fn error(err: &anyhow::Error, exit_code: i32, json: bool) {
    let text = crate::redact::redact_text(&format!("{err:#}"));
    if json {
        print_json(&serde_json::json!({
            "ok": false,
            "exit_code": exit_code,
            "error": text,
        }));
    }
    eprintln!("error: {text}");
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
        eprintln!("warning: the backup stands, but pruning old backups failed: {e}");
    }
    if quiet {
        println!("{}", c.backup.id);
        return;
    }
    let m = &c.backup;
    let ratio = if m.size_bytes > 0 {
        m.dump_bytes as f64 / m.size_bytes as f64
    } else {
        0.0
    };
    println!("backup {} created", m.id);
    println!("  file      {}", c.path);
    println!(
        "  size      {} (pg_dump wrote {}, {:.1}x smaller)",
        HumanBytes(m.size_bytes),
        HumanBytes(m.dump_bytes),
        ratio
    );
    println!("  sha256    {}", m.sha256);
    println!(
        "  database  {} (PostgreSQL {}, {} mode)",
        m.database.name,
        m.database.server_version,
        serde_json::to_value(m.database.mode)
            .unwrap()
            .as_str()
            .unwrap_or("")
    );
    println!("  took      {:.1}s", m.duration_ms as f64 / 1000.0);
    if let Some(v) = &m.verification {
        println!(
            "  checked   {} ({} entries in the table of contents)",
            v.method, v.toc_entries
        );
    }
    if let Some(rows) = m.prisma_migrations.as_ref().and_then(|p| p.as_array()) {
        println!("  prisma    {} migration rows recorded", rows.len());
    }
    if let Some(e) = &m.encryption {
        println!("  encrypted age, to {}", e.recipients.join(", "));
    }
    for u in &m.uploads {
        println!(
            "  offsite   {}: {} ({}, sha256 {})",
            u.remote,
            u.file,
            HumanBytes(u.size_bytes),
            crate::git::abbrev(&u.sha256, 12)
        );
    }
    for f in &c.upload_failures {
        println!("  offsite   {}: FAILED: {}", f.remote, f.error);
    }
    for p in &c.remote_prune {
        if !p.deleted.is_empty() {
            println!(
                "retention on {}: deleted {}",
                p.remote,
                p.deleted.join(", ")
            );
        }
        if let Some(e) = &p.error {
            eprintln!("warning: retention on remote {} failed: {e}", p.remote);
        }
    }
    let deleted: Vec<&str> = c.prune.deleted().map(|r| r.id.as_str()).collect();
    if !deleted.is_empty() {
        println!(
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
            println!("no databases kept beside the live one");
        } else {
            let rows: Vec<Vec<String>> = side
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.kind.clone(),
                        HumanBytes(d.size_bytes).to_string(),
                    ]
                })
                .collect();
            println!("{}", table(&["DATABASE", "KIND", "SIZE"], &rows));
            println!("(drop one with `stablehand db drop-kept NAME --yes`)");
        }
        println!();
    }
    let now = Timestamp::now();
    if listing.backups.is_empty() {
        println!("no backups yet (create one with `stablehand backup`)");
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
        println!(
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
        eprintln!("note: {}: {}", s.file, s.problem);
    }
}

pub fn backup_show(m: &Manifest, catalog: &Catalog, json: bool) {
    if json {
        print_json(m);
        return;
    }
    let now = Timestamp::now();
    println!("backup    {}", m.id);
    println!("file      {}", m.data_path(&catalog.dir).display());
    println!(
        "created   {} UTC ({})",
        short_time(m.created_at),
        age(m.created_at, now)
    );
    println!("label     {}", m.label);
    println!(
        "commit    {}",
        m.git_commit
            .as_deref()
            .unwrap_or("- (not a git repository)")
    );
    println!(
        "database  {} (PostgreSQL {})",
        m.database.name, m.database.server_version
    );
    println!(
        "size      {} ({} dumped)",
        HumanBytes(m.size_bytes),
        HumanBytes(m.dump_bytes)
    );
    println!("sha256    {}", m.sha256);
    println!(
        "format    {}, zstd level {} ({} threads)",
        m.format, m.compression.level, m.compression.threads
    );
    println!(
        "tools     pg_dump {}, stablehand {}, zstd {}",
        m.tools.pg_dump, m.tools.stablehand, m.tools.zstd
    );
    println!("took      {:.1}s", m.duration_ms as f64 / 1000.0);
    println!("verified  {}", verified_cell(m));
    println!("pinned    {}", if m.pinned { "yes" } else { "no" });
    match m.prisma_migrations.as_ref().and_then(|p| p.as_array()) {
        Some(rows) => println!("prisma    {} rows in _prisma_migrations", rows.len()),
        None => println!("prisma    no _prisma_migrations table"),
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
                Some(n) => println!(
                    "ok      {}  ({}, {n} entries in the table of contents)",
                    r.id,
                    HumanBytes(r.size_bytes),
                ),
                None => println!(
                    "ok      {}  ({}, size and SHA-256 match the manifest)",
                    r.id,
                    HumanBytes(r.size_bytes),
                ),
            },
            Some(p) => println!("FAILED  {}  {}", r.id, p),
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        eprintln!(
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
        println!("no backups to prune");
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
    println!(
        "{}",
        table(&["ID", "CREATED (UTC)", "SIZE", "DECISION"], &rows)
    );
    let n = p.deleted().count();
    let verb = if p.dry_run { "would delete" } else { "deleted" };
    println!("{verb} {n} of {} backup(s)", p.rows.len());
    if let Some(e) = &p.error {
        eprintln!("error: some backups could not be deleted: {e}");
    }
}

pub fn pinned(m: &Manifest, json: bool) {
    if json {
        print_json(m);
    } else if m.pinned {
        println!("pinned {}: retention will never delete it", m.id);
    } else {
        println!("unpinned {}: retention rules apply to it again", m.id);
    }
}

pub fn marked(m: &crate::git::Marked, json: bool) {
    if json {
        print_json(m);
        return;
    }
    println!(
        "marked {} stable: tag {}, {} moved to it",
        crate::git::abbrev(&m.commit, 12),
        m.tag,
        m.stable_tag
    );
    if m.pushed {
        println!("pushed both tags to the remote");
    }
    if let Some(e) = &m.push_error {
        eprintln!("{}: {e}", if m.pushed { "note" } else { "error" });
    }
}

pub fn stable_list(tags: &[crate::git::StableTag], names: &crate::git::TagNames, json: bool) {
    if json {
        print_json(tags);
        return;
    }
    if tags.is_empty() {
        println!(
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
    println!(
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
            println!(
                "a rollback from {} would go to {} ({reason})",
                crate::git::abbrev(current, 12),
                crate::git::abbrev(commit, 12)
            );
            if !reverted.is_empty() {
                println!("commits it would revert ({}):", reverted.len());
                for c in reverted {
                    println!("  {} {}", crate::git::abbrev(&c.sha, 12), c.subject);
                }
            }
        }
        crate::git::Target::None { reason } => {
            eprintln!(
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
        "target" => println!("restored backup {} into the new database {}", r.backup, r.restored_into),
        "in_place" => println!("restored backup {} in place into {}", r.backup, r.database),
        _ => println!(
            "restored backup {} into {}: swapped in within {} ms; the previous database is kept as {}",
            r.backup,
            r.database,
            r.swap_ms.unwrap_or(0),
            r.kept_as.as_deref().unwrap_or("-")
        ),
    }
    println!(
        "  {} table(s), {rows} row(s) in all; restore took {:.1}s, {:.1}s in all",
        r.tables.len(),
        r.restore_ms as f64 / 1000.0,
        r.total_ms as f64 / 1000.0
    );
    for (t, n) in &r.tables {
        println!("    {t}: {n}");
    }
    if r.app_stopped {
        println!("  the app was stopped for the swap and started again");
    }
    if !r.leftovers_dropped.is_empty() {
        println!(
            "  dropped leftovers of interrupted restores: {}",
            r.leftovers_dropped.join(", ")
        );
    }
    if !r.replaced_dropped.is_empty() {
        println!(
            "  dropped older replaced databases (database.keep_replaced_databases): {}",
            r.replaced_dropped.join(", ")
        );
    }
    if let Some(w) = &r.warning {
        eprintln!("warning: {w}");
    }
}

pub fn restore_tests(results: &[crate::restore::RestoreTest], json: bool) {
    if json {
        print_json(results);
        return;
    }
    for r in results {
        match &r.problem {
            None => println!(
                "ok      {}  restored into a scratch database: {} tables, {} rows ({:.1}s)",
                r.id,
                r.tables,
                r.rows,
                r.took_ms as f64 / 1000.0
            ),
            Some(p) => println!("FAILED  {}  {p}", r.id),
        }
    }
}

pub fn dropped(name: &str, json: bool) {
    if json {
        print_json(&serde_json::json!({ "dropped": name }));
    } else {
        println!("dropped database {name}");
    }
}

pub fn health_round(round: &crate::health::Round, decision: &crate::health::Decision) {
    let at = round.at.as_secs_f64();
    match decision {
        crate::health::Decision::Pending {
            consecutive_ok,
            window_started,
        } => {
            let phase = match window_started {
                Some(_) => "holding steady".to_string(),
                None => format!("{consecutive_ok} ok in a row"),
            };
            if round.all_ok {
                eprintln!("[{at:5.1}s] ok ({phase})");
            } else {
                eprintln!("[{at:5.1}s] not yet: {}", round.problems.join("; "));
            }
        }
        crate::health::Decision::Pass => eprintln!("[{at:5.1}s] healthy"),
        crate::health::Decision::Fail { .. } => eprintln!("[{at:5.1}s] unhealthy"),
    }
}

pub fn health_verdict(v: &crate::health::Verdict, json: bool) {
    if json {
        print_json(v);
        return;
    }
    if v.passed {
        println!(
            "healthy: the gate passed after {:.1}s ({} rounds)",
            v.took_ms as f64 / 1000.0,
            v.rounds
        );
    } else {
        println!(
            "UNHEALTHY after {:.1}s: {}",
            v.took_ms as f64 / 1000.0,
            v.reason.as_deref().unwrap_or("")
        );
    }
    for p in &v.probes {
        println!(
            "  {} {}  {} ({} ms)",
            if p.ok { "ok  " } else { "FAIL" },
            p.url,
            p.detail,
            p.millis
        );
    }
    for c in &v.containers {
        println!(
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
        println!("  last log lines of {service}:");
        for line in logs.lines() {
            println!("    {line}");
        }
    }
}

/// A deploy, rollback or recover outcome.
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
    println!("{headline} (exit {}): {}", o.exit_code, o.message);
    if let Some(plan) = &o.plan {
        println!(
            "  running {}  ->  target {}  (latest-stable: {})",
            crate::git::abbrev(&plan.running, 12),
            crate::git::abbrev(&plan.target, 12),
            plan.latest_stable
                .as_deref()
                .map_or("none yet", |s| crate::git::abbrev(s, 12))
        );
        println!("  commits the deploy brings ({}):", plan.commits.len());
        for c in &plan.commits {
            println!("    {} {}", crate::git::abbrev(&c.sha, 7), c.subject);
        }
        println!("  backup first: {}", plan.database);
        println!(
            "  runtime: {}{}; snapshot: {}",
            plan.runtime,
            if plan.services.is_empty() {
                String::new()
            } else {
                format!(" (services {})", plan.services.join(", "))
            },
            plan.snapshot
        );
    }
    if let Some(rb) = &o.rollback {
        if let Some(failed) = &rb.failed_commit {
            println!("  failed commit: {}", crate::git::abbrev(failed, 12));
        }
        println!(
            "  rollback target: {} ({})",
            rb.target
                .as_deref()
                .map_or("none", |t| crate::git::abbrev(t, 12)),
            rb.target_reason
        );
        if !rb.reverted_commits.is_empty() {
            println!("  reverted commits:");
            for c in &rb.reverted_commits {
                println!("    {} {}", crate::git::abbrev(&c.sha, 7), c.subject);
            }
        }
        if let Some(db) = &rb.db {
            println!("  database: {}: {}", db.name(), db.reason());
        }
        if let Some(w) = rb.writes_since_backup {
            println!("  writes since the pre-deploy backup: {w}");
        }
        if let Some(kept) = &rb.kept_database {
            println!("  the failed database is kept as {kept} (drop it with `stablehand db drop-kept {kept} --yes`)");
        }
        for i in &rb.images {
            println!("  {}: {} ({})", i.service, i.image, i.source);
        }
        println!("  rollback took {:.1}s", rb.took_ms as f64 / 1000.0);
    }
    if !o.steps.is_empty() {
        println!("  steps:");
        for s in &o.steps {
            println!(
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
    println!("  total {:.1}s", o.total_ms as f64 / 1000.0);
}

/// `stablehand status`.
pub fn status(s: &crate::deploy::status::Status, json: bool) {
    if json {
        print_json(s);
        return;
    }
    if let Some(j) = &s.unfinished {
        println!(
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
    println!("running commit:  {}", c(&s.running_commit));
    println!("latest-stable:   {}", c(&s.latest_stable));
    match &s.last_release {
        Some(r) => println!(
            "last {}:     {} {} ({}, exit {}): {}",
            r.command,
            r.outcome,
            age(r.at, Timestamp::now()),
            r.trigger,
            r.exit_code,
            r.message
        ),
        None => println!("last deploy:     none recorded"),
    }
    match (&s.last_backup, s.last_backup_at) {
        (Some(id), Some(at)) => println!(
            "last backup:     {id} ({}), {} in all",
            age(at, Timestamp::now()),
            s.backups
        ),
        _ => println!("last backup:     none"),
    }
    if s.kept_databases.is_empty() {
        println!("kept databases:  none");
    } else {
        println!("kept databases:");
        for d in &s.kept_databases {
            println!("  {} ({}, {})", d.name, d.kind, HumanBytes(d.size_bytes));
        }
    }
    if let Some(h) = &s.lock_holder {
        println!("deploy lock:     held by {h}");
    }
    for p in &s.problems {
        println!("problem: {p}");
    }
}

/// `stablehand history`, newest first.
pub fn history(h: &[crate::deploy::journal::Release], json: bool) {
    if json {
        print_json(h);
        return;
    }
    if h.is_empty() {
        println!("no deploys or rollbacks recorded yet");
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
    println!(
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
        Some(h) => println!("removed the deploy lock (it named {h})"),
        None => println!("there was no deploy lock"),
    }
}

/// `stablehand check`.
pub fn check(r: &crate::check::Report, json: bool) {
    if json {
        print_json(r);
        return;
    }
    if r.ok {
        println!("ok: backups fresh and verified, no unfinished deploy, the release is healthy");
        return;
    }
    println!("ALERT: {} condition(s) hold", r.problems.len());
    for p in &r.problems {
        println!("  {}: {}\n    fix: {}", p.condition, p.detail, p.fix);
    }
}

/// `stablehand init`.
pub fn initialized(path: &std::path::Path, d: &crate::init::Detected, json: bool) {
    if json {
        print_json(&serde_json::json!({ "written": path, "detected": d }));
        return;
    }
    println!("wrote {}", path.display());
    if let Some(f) = &d.compose_file {
        println!(
            "  compose file {f}: database service {}, app services {}",
            d.db_service.as_deref().unwrap_or("none found"),
            if d.app_services.is_empty() {
                "none".into()
            } else {
                d.app_services.join(", ")
            }
        );
    }
    println!(
        "  git remote {}, branch {}; migrations: {}",
        d.git_remote.as_deref().unwrap_or("none"),
        d.git_branch.as_deref().unwrap_or("the remote's default"),
        if d.prisma { "prisma" } else { "none found" }
    );
    for n in &d.notes {
        println!("  CHECK: {n}");
    }
    println!("next: `stablehand doctor`, then `stablehand deploy --dry-run`");
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
    println!("{}", table(&["", "CHECK", "FOUND", "FIX"], &rows));
    if r.blocking == 0 {
        println!("nothing blocks a deploy");
    } else {
        println!("{} problem(s) block a deploy", r.blocking);
    }
}

/// `stablehand migrate down`.
pub fn migrate_down(r: &crate::migrations::DownReport, json: bool) {
    if json {
        print_json(r);
        return;
    }
    if r.migrations.is_empty() {
        println!(
            "nothing to undo: no migration is applied (after the one named with --to, if any)"
        );
        return;
    }
    let verb = if r.applied.is_some() {
        "undid"
    } else {
        "would undo"
    };
    println!(
        "{verb} {} migration(s) in database {}, newest first: {}",
        r.migrations.len(),
        r.database,
        r.migrations.join(", ")
    );
    println!(
        "  {} statement(s), {}",
        r.statements,
        if r.transactional {
            "in one transaction"
        } else {
            "statement by statement (a statement cannot run in a transaction)"
        }
    );
    if !r.destroys.is_empty() {
        println!(
            "  drops {} (no data written since the reference backup in them)",
            r.destroys.join(", ")
        );
    }
    match (&r.reference_backup, &r.applied) {
        (Some(b), Some(a)) if a.fingerprint_checked => {
            println!("  the schema now matches backup {b}'s fingerprint")
        }
        (Some(b), _) => println!("  the result is checked against backup {b}'s fingerprint"),
        (None, _) => println!(
            "  WARNING: no backup records the schema these migrations leave, so the result cannot be checked against a fingerprint"
        ),
    }
    match &r.applied {
        Some(a) => {
            println!(
                "  done in {} ms; the ledger rows are marked rolled back, so a deploy applies them again",
                a.took_ms
            );
            println!("next: the running code may expect the newer schema: roll the code back too (`stablehand rollback --to <commit> --db none`)");
        }
        None => println!("dry run: nothing was changed"),
    }
}

/// `backup list --remote NAME`.
pub fn remote_list(l: &crate::remote::commands::RemoteListing, json: bool) {
    if json {
        print_json(l);
        return;
    }
    println!("remote {} ({})", l.remote, l.url);
    if l.backups.is_empty() {
        println!("no backups on this remote");
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
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                &["ID", "CREATED", "SIZE", "COMMIT", "ENCRYPTED", "VERIFIED"],
                &rows
            )
        );
    }
    for i in &l.incomplete {
        println!("incomplete: {i}");
    }
}

/// `backup sync`.
pub fn synced(s: &[crate::remote::commands::Synced], json: bool) {
    if json {
        print_json(s);
        return;
    }
    if s.is_empty() {
        println!("every remote already holds every local backup");
    }
    for r in s {
        match &r.error {
            None => println!(
                "uploaded {} to {} ({})",
                r.id,
                r.remote,
                HumanBytes(r.size_bytes)
            ),
            Some(e) => println!("FAILED {} to {}: {e}", r.id, r.remote),
        }
    }
}
