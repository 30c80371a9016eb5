//! `stablehand health`: the health gate, now.

use super::*;

pub fn run(ctx: &Ctx, out: &mut Printer) -> anyhow::Result<Exit> {
    let progress = ctx.progress_lines();
    let verdict = crate::health::run_gate(ctx.loaded()?, |round, decision| {
        progress(&crate::health::round_line(round, decision))
    })?;
    report::health_verdict(out, &verdict);
    Ok(Exit::ok_if(verdict.passed))
}
