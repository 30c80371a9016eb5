//! `stablehand wait`: waits for the running deploy, rollback or recover, with its exit code.

use super::*;
use crate::cli::WaitArgs;

pub fn run(ctx: &Ctx, args: &WaitArgs, out: &mut Printer) -> anyhow::Result<Exit> {
    let loaded = ctx.loaded()?;
    let timeout = humantime::parse_duration(&args.timeout).map_err(|e| {
        UsageError(format!(
            "--timeout {:?} is not a duration like 90s or 2h: {e}",
            args.timeout
        ))
    })?;
    let waited = crate::deploy::background::wait(loaded, timeout)?;
    report::waited(out, &waited);
    Ok(Exit::from_outcome(waited.exit_code))
}
