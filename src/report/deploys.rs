//! What the deploy commands print: the gate's verdict, a detached or waited-for deploy, an outcome, status, history, an unlocked lock.

use super::*;

pub fn health_verdict(out: &mut Printer, v: &crate::health::Verdict) {
    if out.json() {
        out.document(v);
        return;
    }
    if v.passed {
        say!(
            out,
            "healthy: the gate passed after {:.1}s ({} rounds)",
            v.took_ms as f64 / 1000.0,
            v.rounds
        );
    } else {
        say!(
            out,
            "UNHEALTHY after {:.1}s: {}",
            v.took_ms as f64 / 1000.0,
            v.reason.as_deref().unwrap_or("")
        );
    }
    for p in &v.probes {
        say!(
            out,
            "  {} {}  {} ({} ms)",
            if p.ok { "ok  " } else { "FAIL" },
            p.url,
            p.detail,
            p.millis
        );
    }
    for c in &v.containers {
        say!(
            out,
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
        say!(out, "  last log lines of {service}:");
        for line in logs.lines() {
            say!(out, "    {line}");
        }
    }
}

/// A deploy, rollback or recover outcome.
/// `stablehand deploy --detach`.
pub fn detached(out: &mut Printer, d: &crate::deploy::background::Detached) {
    if out.json() {
        out.document(d);
        return;
    }
    if d.running {
        say!(out,
            "deploy running in the background as pid {} (output: {}); `stablehand wait` waits for its outcome",
            d.pid,
            d.log.display()
        );
    } else {
        say!(out,
            "the background deploy (pid {}) has already finished; `stablehand wait` shows its outcome (output: {})",
            d.pid,
            d.log.display()
        );
    }
}

/// `stablehand wait`: the outcome it waited for.
pub fn waited(out: &mut Printer, w: &crate::deploy::background::Waited) {
    if out.json() {
        out.document(w);
        return;
    }
    match (&w.unfinished, &w.release) {
        (Some(unfinished), _) => say!(
            out,
            "MANUAL INTERVENTION REQUIRED (exit {}): {unfinished}",
            w.exit_code
        ),
        (None, Some(r)) => say!(
            out,
            "{} {} (exit {}, recorded {}): {}",
            r.command,
            r.outcome,
            r.exit_code,
            r.at,
            r.message
        ),
        (None, None) => say!(out, "no deploy or rollback recorded yet"),
    }
}

pub fn outcome(out: &mut Printer, o: &crate::deploy::Outcome) {
    if out.json() {
        out.document(o);
        return;
    }
    let headline = match o.outcome {
        crate::journal::OutcomeKind::Deployed => "DEPLOYED",
        crate::journal::OutcomeKind::Planned => "PLAN",
        crate::journal::OutcomeKind::Refused => "REFUSED",
        crate::journal::OutcomeKind::RolledBack => "ROLLED BACK",
        crate::journal::OutcomeKind::RollbackFailed => "MANUAL INTERVENTION REQUIRED",
        crate::journal::OutcomeKind::NothingToDo => "NOTHING TO DO",
    };
    say!(out, "{headline} (exit {}): {}", o.exit_code, o.message);
    if let Some(plan) = &o.plan {
        say!(
            out,
            "  running {}  ->  target {}  (latest-stable: {})",
            crate::git::abbrev(&plan.running, 12),
            crate::git::abbrev(&plan.target, 12),
            plan.latest_stable
                .as_deref()
                .map_or("none yet", |s| crate::git::abbrev(s, 12))
        );
        say!(out, "  commits the deploy brings ({}):", plan.commits.len());
        for c in &plan.commits {
            say!(out, "    {} {}", crate::git::abbrev(&c.sha, 7), c.subject);
        }
        say!(out, "  backup first: {}", plan.database);
        say!(
            out,
            "  runtime: {}{}; snapshot: {}",
            plan.runtime,
            if plan.services.is_empty() {
                String::new()
            } else {
                format!(" (services {})", plan.services.join(", "))
            },
            plan.snapshot
        );
        if let Some(c) = &plan.compatibility {
            say!(out, "  old code beside it: {}", c.summary());
        }
        if let Some(note) = &plan.stable_sync {
            say!(out, "  {note}");
        }
    }
    if let Some(rb) = &o.rollback {
        if let Some(failed) = &rb.failed_commit {
            say!(out, "  failed commit: {}", crate::git::abbrev(failed, 12));
        }
        say!(
            out,
            "  rollback target: {} ({})",
            rb.target
                .as_deref()
                .map_or("none", |t| crate::git::abbrev(t, 12)),
            rb.target_reason
        );
        if !rb.reverted_commits.is_empty() {
            say!(out, "  reverted commits:");
            for c in &rb.reverted_commits {
                say!(out, "    {} {}", crate::git::abbrev(&c.sha, 7), c.subject);
            }
        }
        if let Some(db) = &rb.db {
            say!(out, "  database: {}: {}", db.name(), db.reason());
        }
        if let Some(w) = rb.writes_since_backup {
            say!(out, "  writes since the pre-deploy backup: {w}");
        }
        if let Some(snap) = &rb.kept_snapshot {
            say!(out, "  the pre-deploy snapshot is kept as {snap} for manual intervention (the next successful deploy drops it)");
        }
        if let Some(kept) = &rb.kept_database {
            say!(out, "  the failed database is kept as {kept} (drop it with `stablehand db drop-kept {kept} --yes`)");
        }
        for i in &rb.images {
            say!(out, "  {}: {} ({})", i.service, i.image, i.source);
        }
        say!(out, "  rollback took {:.1}s", rb.took_ms as f64 / 1000.0);
    }
    if !o.steps.is_empty() {
        say!(out, "  steps:");
        for s in &o.steps {
            say!(
                out,
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
    say!(out, "  total {:.1}s", o.total_ms as f64 / 1000.0);
}

/// `stablehand status`.
pub fn status(out: &mut Printer, s: &crate::deploy::status::Status) {
    if out.json() {
        out.document(s);
        return;
    }
    if let Some(j) = &s.unfinished {
        say!(out,
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
    say!(out, "running commit:  {}", c(&s.running_commit));
    say!(out, "latest-stable:   {}", c(&s.latest_stable));
    match &s.last_release {
        Some(r) => say!(
            out,
            "last {}:     {} {} ({}, exit {}): {}",
            r.command,
            r.outcome,
            age(r.at, Timestamp::now()),
            r.trigger,
            r.exit_code,
            r.message
        ),
        None => say!(out, "last deploy:     none recorded"),
    }
    match (&s.last_backup, s.last_backup_at) {
        (Some(id), Some(at)) => say!(
            out,
            "last backup:     {id} ({}), {} in all",
            age(at, Timestamp::now()),
            s.backups
        ),
        _ => say!(out, "last backup:     none"),
    }
    if s.kept_databases.is_empty() {
        say!(out, "kept databases:  none");
    } else {
        say!(out, "kept databases:");
        for d in &s.kept_databases {
            say!(
                out,
                "  {} ({}, {})",
                d.name,
                d.kind,
                HumanBytes(d.size_bytes)
            );
            if let Some(note) = &d.note {
                say!(out, "    {note}");
            }
        }
    }
    if let Some(h) = &s.lock_holder {
        say!(out, "deploy lock:     held by {h}");
    }
    for p in &s.problems {
        say!(out, "problem: {p}");
    }
}

/// `stablehand history`, newest first.
pub fn history(out: &mut Printer, h: &[crate::journal::Release]) {
    if out.json() {
        out.document(h);
        return;
    }
    if h.is_empty() {
        say!(out, "no deploys or rollbacks recorded yet");
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
                r.trigger.to_string(),
                c(&r.from),
                c(&r.to),
                r.outcome.to_string(),
                r.exit_code.to_string(),
                r.db_action.clone().unwrap_or_else(|| "-".into()),
                r.backup.clone().unwrap_or_else(|| "-".into()),
                format!("{:.1}s", r.total_ms as f64 / 1000.0),
            ]
        })
        .collect();
    say!(
        out,
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
pub fn unlocked(out: &mut Printer, holder: Option<&crate::lock::Holder>) {
    if out.json() {
        out.document(&serde_json::json!({ "ok": true, "removed_holder": holder }));
        return;
    }
    match holder {
        Some(h) => say!(out, "removed the deploy lock (it named {h})"),
        None => say!(out, "there was no deploy lock"),
    }
}

/// `stablehand proxy status|switch|maintenance`.
pub fn proxy_state(out: &mut Printer, s: &crate::proxy::State) {
    if out.json() {
        out.document(s);
        return;
    }
    let r = &s.route;
    say!(
        out,
        "proxy {} (pid {}) -> {} ({}){}",
        s.listen,
        s.pid,
        r.upstream,
        r.colour,
        if r.maintenance {
            ": MAINTENANCE (503)"
        } else {
            ""
        }
    );
    if let Some(at) = r.switched_at {
        say!(out, "  switched {}", age(at, Timestamp::now()));
    }
    let rows: Vec<Vec<String>> = s
        .upstreams
        .iter()
        .map(|(addr, c)| {
            vec![
                addr.clone(),
                c.requests.to_string(),
                c.server_errors.to_string(),
                c.connection_errors.to_string(),
                c.in_flight.to_string(),
                c.maintenance.to_string(),
            ]
        })
        .collect();
    say!(
        out,
        "{}",
        table(
            &[
                "UPSTREAM",
                "REQUESTS",
                "5XX",
                "UNREACHABLE",
                "IN FLIGHT",
                "503 (MAINTENANCE)"
            ],
            &rows
        )
    );
}
