//! What the setup and maintenance commands print: check, init, doctor, down migrations, remote listings and syncs.

use super::*;

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
