//! `stablehand stable mark|list|target`: the stable releases.

use super::*;
use crate::git;

pub fn run(ctx: &Ctx, command: &StableCommand, out: &mut Printer) -> anyhow::Result<Exit> {
    let loaded = ctx.loaded()?;
    let repo = ctx.repo()?;
    match command {
        StableCommand::Mark { rev, backup } => {
            let marked = repo.mark_stable(rev, backup.as_deref(), jiff::Timestamp::now())?;
            report::marked(out, &marked);
            // A failed push is a failure unless pushing is off.
            Ok(Exit::ok_if(marked.pushed || !loaded.config.git.push))
        }
        StableCommand::List { fetch } => {
            if *fetch {
                repo.fetch_tags()?;
            }
            let tags = repo.stable_tags()?;
            report::stable_list(out, &tags, repo.names());
            Ok(Exit::Ok)
        }
        StableCommand::Target { to, fetch } => {
            if *fetch {
                repo.fetch_tags()?;
            }
            let current = repo.head()?;
            let inputs = git::TargetInputs {
                latest_stable: repo.latest_stable()?,
                requested: to.as_deref().map(|r| repo.resolve(r)).transpose()?,
                current,
                previous: None,
                failed: crate::journal::failed_commits(
                    &crate::journal::read_history(&loaded.state_dir()).unwrap_or_default(),
                ),
            };
            let target = git::rollback_target(&inputs);
            let reverted = match &target {
                git::Target::Commit { commit, .. } => {
                    repo.commits_between(commit, &inputs.current)?
                }
                git::Target::None { .. } => Vec::new(),
            };
            report::target(out, &inputs.current, &target, &reverted);
            Ok(Exit::ok_if(matches!(target, git::Target::Commit { .. })))
        }
    }
}
