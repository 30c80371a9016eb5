//! What the deploy commands print: the gate's verdict, a detached or waited-for deploy, an outcome, status, history, an unlocked lock.

use super::*;

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
    let headline = match o.outcome {
        crate::journal::OutcomeKind::Deployed => "DEPLOYED",
        crate::journal::OutcomeKind::Planned => "PLAN",
        crate::journal::OutcomeKind::Refused => "REFUSED",
        crate::journal::OutcomeKind::RolledBack => "ROLLED BACK",
        crate::journal::OutcomeKind::RollbackFailed => "MANUAL INTERVENTION REQUIRED",
        crate::journal::OutcomeKind::NothingToDo => "NOTHING TO DO",
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
