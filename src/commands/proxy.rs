//! `stablehand proxy run|status|switch|maintenance`: the traffic switch.

use super::*;
use crate::cli::ProxyCommand;
use crate::proxy::{Change, Control};

pub fn run(ctx: &Ctx, command: &ProxyCommand, out: &mut Printer) -> anyhow::Result<Exit> {
    let loaded = ctx.loaded()?;
    let control = Control::new(&loaded.state_dir());
    let state = match command {
        ProxyCommand::Run => {
            crate::proxy::run(loaded)?;
            return Ok(Exit::Ok);
        }
        ProxyCommand::Status => control.state()?,
        ProxyCommand::Switch { upstream, colour } => control.change(&Change::Upstream {
            upstream: upstream.clone(),
            colour: colour.clone(),
        })?,
        ProxyCommand::Maintenance { state } => {
            control.change(&Change::Maintenance { on: state == "on" })?
        }
    };
    report::proxy_state(out, &state);
    Ok(Exit::Ok)
}
