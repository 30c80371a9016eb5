//! `stablehand rollback`: code and database back to the last stable release, by hand.

use super::*;
use crate::cli::RollbackArgs;
use crate::deploy;
use crate::prompt::Question;

pub fn run(ctx: &Ctx, args: &RollbackArgs, out: &mut Printer) -> anyhow::Result<Exit> {
    let loaded = ctx.loaded()?;
    // A rollback by hand may restore the database: confirmed on a terminal, refused
    // without one.
    crate::prompt::by(args.yes).confirm(&Question {
        prompt: format!(
            "Roll back the app in {} (code, and the database when the deploy changed it)? Type \"rollback\" to confirm: ",
            loaded.app_dir.display()
        ),
        answer: "rollback".into(),
        note: None,
        no_terminal: "a rollback may restore the database; pass --yes to confirm (no terminal to ask on)".into(),
    })?;
    crate::process::ignore_hangup();
    let outcome = deploy::rollback(
        loaded,
        &deploy::RollbackRequest {
            to: args.to.as_deref(),
            db: args.db,
            progress: ctx.progress_lines(),
        },
    )?;
    report::outcome(out, &outcome);
    Ok(Exit::from_outcome(outcome.exit_code))
}
