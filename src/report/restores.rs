//! What restore commands print: the backup a restore targets, the restore, restore tests, a dropped kept database.

use super::*;

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
