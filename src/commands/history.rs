//! `stablehand history`: every deploy and rollback, newest first.

use super::*;
use crate::cli::HistoryArgs;

pub fn run(ctx: &Ctx, args: &HistoryArgs, out: &mut Printer) -> anyhow::Result<Exit> {
    let state_dir = ctx.loaded()?.state_dir();
    let checked = crate::journal::read_history_checked(&state_dir)?;
    if let Some(warning) = checked.damage_warning(&state_dir) {
        tracing::warn!("{warning}");
    }
    let mut history = checked.releases;
    history.reverse();
    history.truncate(args.limit);
    report::history(out, &history);
    Ok(Exit::Ok)
}
