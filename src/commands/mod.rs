//! The command layer: one file per command, each `run(ctx, args, out) -> Exit`. A
//! command reads its arguments, asks the jobs below (deploy, restore, backup, ...) to do
//! the work, hands what they return to `report` through the `Printer`, and maps it to an
//! exit code. Nothing below this layer prints a report or asks a question, and nothing
//! below imports from it (tests/it/architecture.rs).

mod backup;
mod check;
mod db;
mod deploy;
mod doctor;
mod health;
mod history;
mod init;
mod migrate;
mod proxy;
mod recover;
mod restore;
mod rollback;
mod serve;
mod stable;
mod status;
mod unlock;
mod wait;

use std::cell::OnceCell;
use std::io::IsTerminal;
use std::path::PathBuf;

use crate::cli::{BackupCommand, Cli, Command, StableCommand};
use crate::config::{self, Loaded};
use crate::printer::Printer;
use crate::{ownership, report, Refused, UsageError};

/// Exit codes shared by every command (deploy adds 10, 11, 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    /// deploy: refused before any change.
    Refused = 10,
    /// deploy/rollback: rolled back, production healthy on the target.
    RolledBack = 11,
    /// deploy/rollback: manual intervention required.
    Manual = 12,
    Config = 78,
    Interrupted = 130,
}

impl Exit {
    /// The exit of a deploy, rollback or recover outcome.
    pub fn from_outcome(code: i32) -> Exit {
        match code {
            0 => Exit::Ok,
            10 => Exit::Refused,
            11 => Exit::RolledBack,
            12 => Exit::Manual,
            _ => Exit::Failure,
        }
    }

    /// 0 when `ok`, else 1.
    pub fn ok_if(ok: bool) -> Exit {
        if ok {
            Exit::Ok
        } else {
            Exit::Failure
        }
    }

    /// The exit code of an error: its kind, found anywhere in its chain.
    pub fn of_error(err: &anyhow::Error) -> Exit {
        if crate::process::interrupted() {
            return Exit::Interrupted;
        }
        for cause in err.chain() {
            if cause.downcast_ref::<config::ConfigError>().is_some() {
                return Exit::Config;
            }
            if cause.downcast_ref::<UsageError>().is_some() {
                return Exit::Usage;
            }
            if cause.downcast_ref::<Refused>().is_some() {
                return Exit::Refused;
            }
            if cause
                .downcast_ref::<crate::restore::AppNotRestarted>()
                .is_some()
            {
                return Exit::Manual;
            }
        }
        Exit::Failure
    }
}

/// What a command works with, each part built once, when first asked for.
pub struct Ctx<'a> {
    pub cli: &'a Cli,
    loaded: OnceCell<Loaded>,
    database: OnceCell<crate::db::Database>,
}

impl<'a> Ctx<'a> {
    pub fn new(cli: &'a Cli) -> Ctx<'a> {
        Ctx {
            cli,
            loaded: OnceCell::new(),
            database: OnceCell::new(),
        }
    }

    /// The config file's path (`--config`, else ./stablehand.toml).
    pub fn config_path(&self) -> PathBuf {
        self.cli
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_FILE))
    }

    /// The loaded config (a config error is exit 78).
    pub fn loaded(&self) -> anyhow::Result<&Loaded> {
        if let Some(loaded) = self.loaded.get() {
            return Ok(loaded);
        }
        let loaded = config::load(&self.config_path())?;
        Ok(self.loaded.get_or_init(|| loaded))
    }

    /// The live database.
    pub fn database(&self) -> anyhow::Result<&crate::db::Database> {
        if let Some(database) = self.database.get() {
            return Ok(database);
        }
        let database = crate::db::Database::from_config(self.loaded()?)?;
        Ok(self.database.get_or_init(|| database))
    }

    /// The local backup catalog.
    pub fn catalog(&self) -> anyhow::Result<crate::backup::catalog::Catalog> {
        Ok(crate::backup::catalog::Catalog::new(
            self.loaded()?.backup_dir(),
        ))
    }

    /// The app's repository.
    pub fn repo(&self) -> anyhow::Result<crate::git::Repo> {
        let loaded = self.loaded()?;
        crate::git::Repo::open(&loaded.app_dir, &loaded.config.git)
    }

    /// Step lines and gate rounds on stderr (not with --quiet or --json).
    pub fn progress(&self) -> bool {
        !self.cli.quiet && !self.cli.json
    }

    /// Where a job's progress lines go.
    pub fn progress_lines(&self) -> crate::printer::Progress<'static> {
        match self.progress() {
            true => &crate::printer::stderr,
            false => &crate::printer::silent,
        }
    }

    /// A progress bar: progress, on a terminal.
    pub fn progress_bar(&self) -> bool {
        self.progress() && std::io::stderr().is_terminal()
    }
}

/// Runs the parsed command: the state check, the command, the metrics textfile and the
/// hand-over of what a root run wrote; errors reported and mapped to exit codes.
pub fn main(cli: &Cli) -> Exit {
    let ctx = Ctx::new(cli);
    let mut out = Printer::terminal(cli.json, cli.quiet);
    let result = state_preflight(&ctx).and_then(|()| dispatch(&ctx, &mut out));
    // The metrics textfile reflects whatever this command did (success or not). A
    // config written by this command (init) is read now: a failed load is not kept.
    if let Ok(loaded) = ctx.loaded() {
        crate::metrics::write_textfile(loaded);
        // Run as root in another user's tree: what it wrote goes to the tree's owner.
        ownership::hand_over_state(loaded);
    }
    match result {
        Ok(code) => code,
        Err(err) => {
            let code = Exit::of_error(&err);
            report::error(&mut out, &err, code as i32);
            code
        }
    }
}

/// One line per command.
fn dispatch(ctx: &Ctx, out: &mut Printer) -> anyhow::Result<Exit> {
    match &ctx.cli.command {
        Command::Init(args) => init::run(ctx, args, out),
        Command::Deploy(args) => deploy::run(ctx, args, out),
        Command::Rollback(args) => rollback::run(ctx, args, out),
        Command::Recover => recover::run(ctx, out),
        Command::Wait(args) => wait::run(ctx, args, out),
        Command::Doctor => doctor::run(ctx, out),
        Command::Serve(args) => serve::run(ctx, args),
        Command::Check => check::run(ctx, out),
        Command::Status => status::run(ctx, out),
        Command::History(args) => history::run(ctx, args, out),
        Command::Unlock(args) => unlock::run(ctx, args, out),
        Command::Backup(args) => backup::run(ctx, args, out),
        Command::Health => health::run(ctx, out),
        Command::Restore(args) => restore::run(ctx, args, out),
        Command::Migrate(command) => migrate::run(ctx, command, out),
        Command::Db(command) => db::run(ctx, command, out),
        Command::Stable(command) => stable::run(ctx, command, out),
        Command::Proxy(command) => proxy::run(ctx, command, out),
    }
}

/// Before a command: as root, hands leftovers of an earlier root run to the work tree's
/// owner; as another user, refuses when stablehand's state holds a file this user
/// cannot use (a deploy is then refused, exit 10). Init and doctor are left alone.
fn state_preflight(ctx: &Ctx) -> anyhow::Result<()> {
    let write = match &ctx.cli.command {
        Command::Init { .. } | Command::Doctor => return Ok(()),
        Command::Status
        | Command::History { .. }
        | Command::Check
        | Command::Health
        | Command::Wait { .. }
        | Command::Proxy(crate::cli::ProxyCommand::Status)
        | Command::Stable(StableCommand::List { .. } | StableCommand::Target { .. }) => false,
        Command::Backup(args) => !matches!(
            args.command,
            Some(BackupCommand::List { .. } | BackupCommand::Show { .. })
        ),
        _ => true,
    };
    let Ok(loaded) = ctx.loaded() else {
        // The command itself reports the config error.
        return Ok(());
    };
    ownership::hand_over_state(loaded);
    ownership::check_state_access(loaded, write).map_err(|e| match ctx.cli.command {
        Command::Deploy { .. } => anyhow::Error::new(Refused(format!("{e:#}"))),
        _ => e,
    })
}
