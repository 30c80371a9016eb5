//! `stablehand backup ...`: create (the default), list, show, sync, verify, prune, pin.

use super::*;
use crate::backup::{self, Created};
use crate::cli::BackupArgs;
use crate::{notify, remote};

pub fn run(ctx: &Ctx, args: &BackupArgs, out: &mut Printer) -> anyhow::Result<Exit> {
    let loaded = ctx.loaded()?;
    match &args.command {
        None => create(ctx, &args.create.label, out),
        Some(BackupCommand::Create(c)) => create(ctx, &c.label, out),
        Some(BackupCommand::List {
            remote: Some(name), ..
        }) => {
            report::remote_list(out, &remote::commands::list(loaded, name)?);
            Ok(Exit::Ok)
        }
        Some(BackupCommand::List { databases, .. }) => {
            let listing = ctx.catalog()?.list()?;
            let side = match databases {
                true => Some(crate::deploy::kept::annotated(loaded, ctx.database()?)?),
                false => None,
            };
            report::backup_list(out, &listing, side.as_deref());
            Ok(Exit::Ok)
        }
        Some(BackupCommand::Sync { remote: name }) => {
            let synced = remote::commands::sync(loaded, name.as_deref())?;
            report::synced(out, &synced);
            Ok(Exit::ok_if(synced.iter().all(|s| s.ok)))
        }
        Some(BackupCommand::Show { id }) => {
            let catalog = ctx.catalog()?;
            let m = catalog.find(id)?;
            report::backup_show(out, &m, &catalog);
            Ok(Exit::Ok)
        }
        Some(BackupCommand::Verify {
            id,
            all,
            latest: _,
            restore_test,
            remote: on,
        }) => {
            let (id, all) = (id.as_deref(), *all);
            let failed = if *restore_test {
                let results = match on {
                    Some(name) => remote::commands::restore_test(loaded, name, id, all)?,
                    None => crate::restore::restore_test(loaded, id, all)?,
                };
                report::restore_tests(out, &results);
                notify::announce_failed_verifications(
                    loaded,
                    results
                        .iter()
                        .map(|r| (r.id.as_str(), r.ok, r.problem.as_ref())),
                )
            } else {
                let results = match on {
                    Some(name) => remote::commands::verify(loaded, name, id, all)?,
                    None => backup::verify(loaded, id, all)?,
                };
                report::verify(out, &results);
                notify::announce_failed_verifications(
                    loaded,
                    results
                        .iter()
                        .map(|r| (r.id.as_str(), r.ok, r.problem.as_ref())),
                )
            };
            Ok(Exit::ok_if(failed == 0))
        }
        Some(BackupCommand::Prune {
            dry_run,
            remote: on,
        }) => {
            let outcome = match on {
                Some(name) => {
                    backup::prune_remote(loaded, &remote::Remote::named(loaded, name)?, *dry_run)?
                }
                None => backup::prune(loaded, *dry_run)?,
            };
            report::prune(out, &outcome);
            Ok(Exit::ok_if(outcome.error.is_none()))
        }
        Some(BackupCommand::Pin { id }) => {
            report::pinned(out, &backup::set_pinned(loaded, id, true)?);
            Ok(Exit::Ok)
        }
        Some(BackupCommand::Unpin { id }) => {
            report::pinned(out, &backup::set_pinned(loaded, id, false)?);
            Ok(Exit::Ok)
        }
    }
}

/// `stablehand backup [create]`: a failed backup, or a failed upload, is announced.
fn create(ctx: &Ctx, label: &str, out: &mut Printer) -> anyhow::Result<Exit> {
    let loaded = ctx.loaded()?;
    let created = match backup::create_backup(loaded, label, ctx.progress_bar()) {
        Ok(c) => c,
        Err(e) => {
            // Loud: the failure is announced (and the error still decides the exit code).
            notify::announce_backup_failure(loaded, &e);
            return Err(e);
        }
    };
    report::created(out, &created);
    if !created.upload_failures.is_empty() {
        // Loud: the local backup stands, the offsite copy does not.
        notify::announce_upload_failure(loaded, &created);
        return Err(upload_failed(&created));
    }
    if let Some(var) = &loaded.config.alerts.ping_url_env {
        notify::ping_after_backup(loaded, var, &created.backup.id);
    }
    Ok(Exit::Ok)
}

fn upload_failed(created: &Created) -> anyhow::Error {
    anyhow::anyhow!(
        "backup {} is stored locally, but its upload failed: {}; run `stablehand backup sync` once the remote is reachable (or set backup.remote_required = true to make this a failed backup)",
        created.backup.id,
        created
            .upload_failures
            .iter()
            .map(|f| format!("remote {}: {}", f.remote, f.error))
            .collect::<Vec<_>>()
            .join("; ")
    )
}
