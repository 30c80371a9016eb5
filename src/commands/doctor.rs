//! `stablehand doctor`: tools, versions, access, privileges, disk and secrets.

use super::*;

pub fn run(ctx: &Ctx, out: &mut Printer) -> anyhow::Result<Exit> {
    let report = crate::doctor::doctor(ctx.loaded()?);
    report::doctor(out, &report);
    Ok(Exit::ok_if(report.blocking == 0))
}
