//! stablehand: guarded deploys for docker-compose + PostgreSQL apps.
//! `run` parses the command line, loads the config, dispatches, and maps errors to exit codes.

/// `eprintln!` that never panics: a closed terminal (a dropped SSH session) or a closed
/// pipe must not stop a deploy halfway.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

#[macro_use]
pub mod printer;
pub mod backup;
pub mod check;
pub mod cli;
pub mod config;
pub mod db;
pub mod deploy;
pub mod doctor;
pub mod files;
pub mod git;
pub mod health;
pub mod init;
pub mod journal;
pub mod lock;
pub mod metrics;
pub mod migrations;
pub mod notify;
pub mod ownership;
pub mod process;
pub mod proxy;
pub mod redact;
pub mod remote;
pub mod report;
pub mod restore;
pub mod runtime;
pub mod serve;

pub mod commands;
pub mod prompt;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::Cli;
pub use commands::Exit;

/// An error in how a command was called (exit 2), found after parsing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A refusal before anything changed (exit 10), found by a command other than deploy.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Runs stablehand with these arguments and returns the process exit code.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    init_logging(&cli);
    process::install_interrupt_handler();
    ExitCode::from(commands::main(&cli) as u8)
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "stablehand=debug",
        (false, _) => "stablehand=trace",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STABLEHAND_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}
