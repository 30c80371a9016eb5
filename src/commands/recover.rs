//! `stablehand recover`: finishes an interrupted deploy or rollback.

use super::*;

pub fn run(ctx: &Ctx, out: &mut Printer) -> anyhow::Result<Exit> {
    let loaded = ctx.loaded()?;
    crate::process::ignore_hangup();
    let outcome = crate::deploy::recover(loaded, ctx.progress_lines())?;
    report::outcome(out, &outcome);
    Ok(Exit::from_outcome(outcome.exit_code))
}
