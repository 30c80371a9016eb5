//! `stablehand check`: exit 1, saying why, when an alert condition holds.

use super::*;

pub fn run(ctx: &Ctx, out: &mut Printer) -> anyhow::Result<Exit> {
    let report = crate::check::check(ctx.loaded()?)?;
    report::check(out, &report);
    Ok(Exit::ok_if(report.ok))
}
