//! `stablehand unlock --force`: removes the deploy lock of a stuck process.

use super::*;
use crate::cli::UnlockArgs;

pub fn run(ctx: &Ctx, args: &UnlockArgs, out: &mut Printer) -> anyhow::Result<Exit> {
    let loaded = ctx.loaded()?;
    if !args.force {
        return Err(UsageError(
            "unlock removes the deploy lock even if its holder still runs; pass --force to confirm"
                .into(),
        )
        .into());
    }
    let holder = crate::lock::force_unlock(&loaded.state_dir())?;
    report::unlocked(out, holder.as_ref());
    Ok(Exit::Ok)
}
