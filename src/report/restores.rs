//! What restore commands print: the backup a restore targets, the restore, restore tests, a dropped kept database.

use super::*;

pub fn target(
    out: &mut Printer,
    current: &str,
    target: &crate::git::Target,
    reverted: &[crate::git::CommitLine],
) {
    if out.json() {
        out.document(&serde_json::json!({
            "current": current,
            "target": target,
            "reverted": reverted,
        }));
        return;
    }
    match target {
        crate::git::Target::Commit { commit, reason } => {
            say!(
                out,
                "a rollback from {} would go to {} ({reason})",
                crate::git::abbrev(current, 12),
                crate::git::abbrev(commit, 12)
            );
            if !reverted.is_empty() {
                say!(out, "commits it would revert ({}):", reverted.len());
                for c in reverted {
                    say!(out, "  {} {}", crate::git::abbrev(&c.sha, 12), c.subject);
                }
            }
        }
        crate::git::Target::None { reason } => {
            tell!(
                out,
                "no rollback target from {} (if it failed now): {reason}",
                crate::git::abbrev(current, 12)
            );
        }
    }
}

pub fn restored(out: &mut Printer, r: &crate::restore::Restored) {
    if out.json() {
        out.document(r);
        return;
    }
    let rows: u64 = r.tables.values().sum();
    match r.method.as_str() {
        "target" => say!(out, "restored backup {} into the new database {}", r.backup, r.restored_into),
        "in_place" => say!(out, "restored backup {} in place into {}", r.backup, r.database),
        _ => say!(out,
            "restored backup {} into {}: swapped in within {} ms; the previous database is kept as {}",
            r.backup,
            r.database,
            r.swap_ms.unwrap_or(0),
            r.kept_as.as_deref().unwrap_or("-")
        ),
    }
    say!(
        out,
        "  {} table(s), {rows} row(s) in all; restore took {:.1}s, {:.1}s in all",
        r.tables.len(),
        r.restore_ms as f64 / 1000.0,
        r.total_ms as f64 / 1000.0
    );
    for (t, n) in &r.tables {
        say!(out, "    {t}: {n}");
    }
    if r.app_stopped {
        say!(out, "  the app was stopped for the swap and started again");
    }
    if let Some(n) = r.writes_since_backup {
        say!(out, "  writes since the backup (table statistics): {n}");
    }
    if let Some(g) = &r.gate {
        if g.passed {
            say!(
                out,
                "  the app passed the health gate after the restore ({:.1}s)",
                g.took_ms as f64 / 1000.0
            );
        }
    }
    if !r.replaced_kept.is_empty() {
        for k in &r.replaced_kept {
            tell!(
                out,
                "warning: kept {} beyond database.keep_replaced_databases: {}",
                k.name,
                k.reason
            );
        }
    }
    if !r.leftovers_dropped.is_empty() {
        say!(
            out,
            "  dropped leftovers of interrupted restores: {}",
            r.leftovers_dropped.join(", ")
        );
    }
    if !r.replaced_dropped.is_empty() {
        say!(
            out,
            "  dropped older replaced databases (database.keep_replaced_databases): {}",
            r.replaced_dropped.join(", ")
        );
    }
    if let Some(w) = &r.warning {
        tell!(out, "warning: {w}");
    }
    if let Some(h) = &r.health {
        match r.app_healthy {
            Some(false) => tell!(out, "error: {h}"),
            _ => tell!(out, "note: {h}"),
        }
    }
}

pub fn restore_tests(out: &mut Printer, results: &[crate::restore::RestoreTest]) {
    if out.json() {
        out.document(results);
        return;
    }
    for r in results {
        match &r.problem {
            None => say!(
                out,
                "ok      {}  restored into a scratch database: {} tables, {} rows ({:.1}s)",
                r.id,
                r.tables,
                r.rows,
                r.took_ms as f64 / 1000.0
            ),
            Some(p) => say!(out, "FAILED  {}  {p}", r.id),
        }
    }
}

pub fn dropped(out: &mut Printer, name: &str) {
    if out.json() {
        out.document(&serde_json::json!({ "dropped": name }));
    } else {
        say!(out, "dropped database {name}");
    }
}
