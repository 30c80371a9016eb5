//! `stablehand restore`: a backup into a new database, swapped in (or listed without an id).

use super::*;
use crate::cli::RestoreArgs;

pub fn run(ctx: &Ctx, args: &RestoreArgs, out: &mut Printer) -> anyhow::Result<Exit> {
    let loaded = ctx.loaded()?;
    let Some(id) = &args.id else {
        match &args.from {
            Some(name) => report::remote_list(out, &crate::remote::commands::list(loaded, name)?),
            None => report::backup_list(out, &ctx.catalog()?.list()?, None),
        }
        tell!(
            out,
            "restore needs a backup id: stablehand restore ID (or \"latest\")"
        );
        return Ok(Exit::Usage);
    };
    let restored = crate::restore::restore(
        loaded,
        &crate::restore::Request {
            id,
            confirm: crate::prompt::by(args.yes),
            target_db: args.target_db.as_deref(),
            in_place: args.in_place,
            from: args.from.as_deref(),
            // The gate's rounds after the restore, on a terminal.
            progress: match std::io::stderr().is_terminal() {
                true => &crate::printer::stderr,
                false => &crate::printer::silent,
            },
        },
    )?;
    report::restored(out, &restored);
    // Production was changed and the app is not proven healthy: exit 12.
    Ok(match restored.app_healthy {
        Some(false) => Exit::Manual,
        _ => Exit::Ok,
    })
}
