//! Switches an app to a commit's retained images through the library, for
//! bench/rollback.sh (the deploy's rollback will call the same `Runtime::switch_to`):
//!
//!     target/release/examples/runtime_switch CONFIG COMMIT
//!
//! The commit must be checked out already. Prints the `SwitchReport` as one JSON line
//! (`rebuilt` says whether any image had to be built).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(config), Some(commit)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: runtime_switch CONFIG COMMIT");
    };
    let loaded = stablehand::config::load(&PathBuf::from(config))?;
    let runtime = stablehand::runtime::Runtime::load(&loaded)?;
    let report = runtime.switch_to(&commit)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
