//! `stablehand migrate down`: undoes the newest Prisma migrations with their down.sql.

use super::*;
use crate::cli::MigrateCommand;

pub fn run(ctx: &Ctx, command: &MigrateCommand, out: &mut Printer) -> anyhow::Result<Exit> {
    let MigrateCommand::Down { to, dry_run, yes } = command;
    let report = crate::migrations::down_by_hand(
        ctx.loaded()?,
        &crate::migrations::DownRequest {
            to: to.as_deref(),
            dry_run: *dry_run,
            confirm: crate::prompt::by(*yes),
        },
    )?;
    report::migrate_down(out, &report);
    Ok(Exit::Ok)
}
