//! `stablehand serve`: the dashboard, /metrics, /api/status and the scheduled jobs.

use super::*;
use crate::cli::ServeArgs;

pub fn run(ctx: &Ctx, args: &ServeArgs) -> anyhow::Result<Exit> {
    crate::serve::serve(ctx.loaded()?.clone(), args.listen.as_deref())?;
    Ok(Exit::Ok)
}
