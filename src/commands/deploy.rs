//! `stablehand deploy`: the guarded deploy (or its plan, or itself in the background).

use super::*;
use crate::cli::DeployArgs;
use crate::deploy;

pub fn run(ctx: &Ctx, args: &DeployArgs, out: &mut Printer) -> anyhow::Result<Exit> {
    let loaded = ctx.loaded()?;
    if args.detach {
        let detached = deploy::background::detach(loaded, std::env::args_os().collect())?;
        report::detached(out, &detached);
        return Ok(Exit::Ok);
    }
    if !args.dry_run {
        crate::process::ignore_hangup();
    }
    let outcome = deploy::deploy(
        loaded,
        &deploy::DeployRequest {
            reference: args.reference.as_deref(),
            dry_run: args.dry_run,
            strategy: args.strategy,
            progress: ctx.progress_lines(),
        },
    )?;
    report::outcome(out, &outcome);
    Ok(Exit::from_outcome(outcome.exit_code))
}
