//! `stablehand db drop-kept`: drops a database kept beside the live one (never the live one).

use super::*;
use crate::cli::DbCommand;

pub fn run(ctx: &Ctx, command: &DbCommand, out: &mut Printer) -> anyhow::Result<Exit> {
    let DbCommand::DropKept { name, yes } = command;
    ctx.loaded()?;
    if !*yes {
        return Err(UsageError(format!(
            "dropping {name} deletes that database for good; pass --yes to confirm"
        ))
        .into());
    }
    let database = ctx.database()?;
    let side = database.side_databases()?;
    match side.iter().find(|s| s.name == *name) {
        Some(s) if s.kind == "replaced" || s.kind == "snapshot" || s.kind == "leftover" => {
            // Never from under a connected session (no forced drop).
            database.drop_kept_database(name)?;
            report::dropped(out, name);
            Ok(Exit::Ok)
        }
        _ => Err(anyhow::anyhow!(
            "{name} is not a database stablehand keeps beside {} (see `stablehand backup list --databases`); nothing was dropped",
            database.name
        )),
    }
}
