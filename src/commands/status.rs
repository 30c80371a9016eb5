//! `stablehand status`: running commit, stable release, last deploy, backups, unfinished work.

use super::*;

pub fn run(ctx: &Ctx, out: &mut Printer) -> anyhow::Result<Exit> {
    let status = crate::deploy::status::status(ctx.loaded()?)?;
    report::status(out, &status);
    Ok(Exit::ok_if(status.unfinished.is_none()))
}
