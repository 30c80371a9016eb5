//! `stablehand init`: writes a commented stablehand.toml from what the directory holds.

use super::*;
use crate::cli::InitArgs;

pub fn run(ctx: &Ctx, args: &InitArgs, out: &mut Printer) -> anyhow::Result<Exit> {
    let path = ctx.config_path();
    let (written, detected) = crate::init::init(&path, args.force, &args.files)?;
    report::initialized(out, &written, &detected);
    Ok(Exit::Ok)
}
