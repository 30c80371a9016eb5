//! What the setup and maintenance commands print: check, init, doctor, down migrations, remote listings and syncs.

use super::*;

/// `stablehand check`.
pub fn check(out: &mut Printer, r: &crate::check::Report) {
    if out.json() {
        out.document(r);
        return;
    }
    if r.ok {
        say!(
            out,
            "ok: backups fresh and verified, no unfinished deploy, the release is healthy"
        );
        return;
    }
    say!(out, "ALERT: {} condition(s) hold", r.problems.len());
    for p in &r.problems {
        say!(out, "  {}: {}\n    fix: {}", p.condition, p.detail, p.fix);
    }
}

/// `stablehand init`.
pub fn initialized(out: &mut Printer, path: &std::path::Path, d: &crate::init::Detected) {
    if out.json() {
        out.document(&serde_json::json!({ "written": path, "detected": d }));
        return;
    }
    say!(out, "wrote {}", path.display());
    if let Some(reason) = &d.compose_reason {
        say!(
            out,
            "  compose files: {} ({reason})",
            d.compose_files.join(", ")
        );
        if !d.other_compose_files.is_empty() {
            say!(
                out,
                "  also here, not used: {} (choose with `stablehand init --force --file F`)",
                d.other_compose_files.join(", ")
            );
        }
    }
    if let Some(how) = &d.resolved_with {
        say!(out, "  services read from {how}");
    }
    match (&d.db_service, &d.db_user, &d.db_name) {
        (Some(s), Some(u), Some(n)) => say!(
            out,
            "  database: service {s}, user {u} ({}), name {n} ({})",
            d.db_user_from.as_deref().unwrap_or(""),
            d.db_name_from.as_deref().unwrap_or("")
        ),
        _ if !d.compose_files.is_empty() => say!(out, "  database: no PostgreSQL service found"),
        _ => {}
    }
    if !d.compose_files.is_empty() {
        say!(
            out,
            "  app services: {}",
            if d.app_services.is_empty() {
                "none".into()
            } else {
                d.app_services.join(", ")
            }
        );
    }
    for line in &d.health_lines {
        say!(out, "  health: {line}");
    }
    say!(
        out,
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
    say!(
        out,
        "  git remote {}, branch {}",
        d.git_remote.as_deref().unwrap_or("none"),
        d.git_branch.as_deref().unwrap_or("the remote's default"),
    );
    for n in &d.notes {
        say!(out, "  CHECK: {n}");
    }
    say!(
        out,
        "next: `stablehand doctor`, then `stablehand deploy --dry-run`"
    );
}

/// `stablehand doctor`.
pub fn doctor(out: &mut Printer, r: &crate::doctor::Report) {
    if out.json() {
        out.document(r);
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
    say!(out, "{}", table(&["", "CHECK", "FOUND", "FIX"], &rows));
    if r.blocking == 0 {
        say!(out, "nothing blocks a deploy");
    } else {
        say!(out, "{} problem(s) block a deploy", r.blocking);
    }
}

/// `stablehand migrate down`.
pub fn migrate_down(out: &mut Printer, r: &crate::migrations::DownReport) {
    if out.json() {
        out.document(r);
        return;
    }
    if r.migrations.is_empty() {
        say!(
            out,
            "nothing to undo: no migration is applied (after the one named with --to, if any)"
        );
        return;
    }
    let verb = if r.applied.is_some() {
        "undid"
    } else {
        "would undo"
    };
    say!(
        out,
        "{verb} {} migration(s) in database {}, newest first: {}",
        r.migrations.len(),
        r.database,
        r.migrations.join(", ")
    );
    say!(
        out,
        "  {} statement(s), {}",
        r.statements,
        if r.transactional {
            "in one transaction"
        } else {
            "statement by statement (a statement cannot run in a transaction)"
        }
    );
    if !r.destroys.is_empty() {
        say!(
            out,
            "  drops {} (no data written since the reference backup in them)",
            r.destroys.join(", ")
        );
    }
    match (&r.reference_backup, &r.applied) {
        (Some(b), Some(a)) if a.fingerprint_checked => {
            say!(out, "  the schema now matches backup {b}'s fingerprint")
        }
        (Some(b), _) => say!(out, "  the result is checked against backup {b}'s fingerprint"),
        (None, _) => say!(out,
            "  WARNING: no backup records the schema these migrations leave, so the result cannot be checked against a fingerprint"
        ),
    }
    match &r.applied {
        Some(a) => {
            say!(out,
                "  done in {} ms; the ledger rows are marked rolled back, so a deploy applies them again",
                a.took_ms
            );
            say!(out, "next: the running code may expect the newer schema: roll the code back too (`stablehand rollback --to <commit> --db none`)");
        }
        None => say!(out, "dry run: nothing was changed"),
    }
}

/// `backup list --remote NAME`.
pub fn remote_list(out: &mut Printer, l: &crate::remote::commands::RemoteListing) {
    if out.json() {
        out.document(l);
        return;
    }
    say!(out, "remote {} ({})", l.remote, l.url);
    if l.backups.is_empty() {
        say!(out, "no backups on this remote");
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
        say!(
            out,
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
            say!(out,
                "({} cop(ies) of other servers or databases: this server never prunes them and never takes them for `latest`)",
                l.others.len()
            );
        }
    }
    for i in &l.incomplete {
        say!(out, "incomplete: {i}");
    }
}

/// `backup sync`.
pub fn synced(out: &mut Printer, s: &[crate::remote::commands::Synced]) {
    if out.json() {
        out.document(s);
        return;
    }
    if s.is_empty() {
        say!(out, "every remote already holds every local backup");
    }
    for r in s {
        match &r.error {
            None => say!(
                out,
                "uploaded {} to {} ({})",
                r.id,
                r.remote,
                HumanBytes(r.size_bytes)
            ),
            Some(e) => say!(out, "FAILED {} to {}: {e}", r.id, r.remote),
        }
    }
}
