//! stablehand: guarded deploys for docker-compose + PostgreSQL apps.
//! `run` parses the command line, loads the config, dispatches, and maps errors to exit codes.

/// `println!` that never panics: a closed terminal (a dropped SSH session) or a closed
/// pipe must not stop a deploy halfway. What cannot be written is lost; the outcome is
/// still in the history and the notifications.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that never panics (see `outln!`).
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

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
pub mod redact;
pub mod remote;
pub mod report;
pub mod restore;
pub mod runtime;
pub mod serve;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use cli::{BackupCommand, Cli, Command, DbCommand, StableCommand};

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
    fn from_outcome(code: i32) -> Exit {
        match code {
            0 => Exit::Ok,
            10 => Exit::Refused,
            11 => Exit::RolledBack,
            12 => Exit::Manual,
            _ => Exit::Failure,
        }
    }
}

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
    let result = state_preflight(&cli).and_then(|()| dispatch(&cli));
    // The metrics textfile reflects whatever this command did (success or not).
    if let Ok(loaded) = load_config(&cli) {
        metrics::write_textfile(&loaded);
        // Run as root in another user's tree: what it wrote goes to the tree's owner.
        ownership::hand_over_state(&loaded);
    }
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            let code = classify(&err);
            report::error(&err, code as i32, cli.json);
            ExitCode::from(code as u8)
        }
    }
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

fn classify(err: &anyhow::Error) -> Exit {
    if process::interrupted() {
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
        if cause.downcast_ref::<restore::AppNotRestarted>().is_some() {
            return Exit::Manual;
        }
    }
    Exit::Failure
}

/// Before a command: as root, hands leftovers of an earlier root run to the work tree's
/// owner; as another user, refuses when stablehand's state holds a file this user
/// cannot use (a deploy is then refused, exit 10). Init and doctor are left alone.
fn state_preflight(cli: &Cli) -> anyhow::Result<()> {
    let write = match &cli.command {
        Command::Init { .. } | Command::Doctor => return Ok(()),
        Command::Status
        | Command::History { .. }
        | Command::Check
        | Command::Health
        | Command::Wait { .. }
        | Command::Stable(StableCommand::List { .. } | StableCommand::Target { .. }) => false,
        Command::Backup(args) => !matches!(
            args.command,
            Some(BackupCommand::List { .. } | BackupCommand::Show { .. })
        ),
        _ => true,
    };
    let Ok(loaded) = load_config(cli) else {
        // The command itself reports the config error.
        return Ok(());
    };
    ownership::hand_over_state(&loaded);
    ownership::check_state_access(&loaded, write).map_err(|e| match cli.command {
        Command::Deploy { .. } => anyhow::Error::new(Refused(format!("{e:#}"))),
        _ => e,
    })
}

fn load_config(cli: &Cli) -> anyhow::Result<config::Loaded> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_FILE));
    Ok(config::load(&path)?)
}

fn dispatch(cli: &Cli) -> anyhow::Result<Exit> {
    let show_progress = !cli.quiet && !cli.json && std::io::stderr().is_terminal();
    let progress = !cli.quiet && !cli.json;
    match &cli.command {
        Command::Deploy {
            reference,
            dry_run,
            detach,
        } => {
            let loaded = load_config(cli)?;
            if *detach {
                let detached = deploy::background::detach(&loaded, std::env::args_os().collect())?;
                report::detached(&detached, cli.json);
                return Ok(Exit::Ok);
            }
            if !*dry_run {
                process::ignore_hangup();
            }
            let outcome = deploy::deploy(
                &loaded,
                &deploy::DeployRequest {
                    reference: reference.as_deref(),
                    dry_run: *dry_run,
                    progress,
                },
            )?;
            report::outcome(&outcome, cli.json);
            Ok(Exit::from_outcome(outcome.exit_code))
        }
        Command::Rollback { to, db, yes } => {
            let loaded = load_config(cli)?;
            if !*yes {
                confirm_rollback(&loaded)?;
            }
            process::ignore_hangup();
            let outcome = deploy::rollback(
                &loaded,
                &deploy::RollbackRequest {
                    to: to.as_deref(),
                    db: *db,
                    progress,
                },
            )?;
            report::outcome(&outcome, cli.json);
            Ok(Exit::from_outcome(outcome.exit_code))
        }
        Command::Migrate(cli::MigrateCommand::Down { to, dry_run, yes }) => {
            let loaded = load_config(cli)?;
            let yes = *yes;
            let confirm = |r: &migrations::DownReport| confirm_down(r, yes);
            let report = migrations::down_by_hand(
                &loaded,
                &migrations::DownRequest {
                    to: to.as_deref(),
                    dry_run: *dry_run,
                    confirm: &confirm,
                },
            )?;
            report::migrate_down(&report, cli.json);
            Ok(Exit::Ok)
        }
        Command::Init { force, files } => {
            let path = cli
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_FILE));
            let (written, detected) = init::init(&path, *force, files)?;
            report::initialized(&written, &detected, cli.json);
            Ok(Exit::Ok)
        }
        Command::Doctor => {
            let loaded = load_config(cli)?;
            let report = doctor::doctor(&loaded);
            report::doctor(&report, cli.json);
            Ok(if report.blocking == 0 {
                Exit::Ok
            } else {
                Exit::Failure
            })
        }
        Command::Serve { listen } => {
            let loaded = load_config(cli)?;
            serve::serve(loaded, listen.as_deref())?;
            Ok(Exit::Ok)
        }
        Command::Check => {
            let loaded = load_config(cli)?;
            let report = check::check(&loaded)?;
            report::check(&report, cli.json);
            Ok(if report.ok { Exit::Ok } else { Exit::Failure })
        }
        Command::Recover => {
            let loaded = load_config(cli)?;
            process::ignore_hangup();
            let outcome = deploy::recover(&loaded, progress)?;
            report::outcome(&outcome, cli.json);
            Ok(Exit::from_outcome(outcome.exit_code))
        }
        Command::Wait { timeout } => {
            let loaded = load_config(cli)?;
            let timeout = humantime::parse_duration(timeout).map_err(|e| {
                UsageError(format!(
                    "--timeout {timeout:?} is not a duration like 90s or 2h: {e}"
                ))
            })?;
            let waited = deploy::background::wait(&loaded, timeout)?;
            report::waited(&waited, cli.json);
            Ok(Exit::from_outcome(waited.exit_code))
        }
        Command::Status => {
            let loaded = load_config(cli)?;
            let status = deploy::status::status(&loaded)?;
            report::status(&status, cli.json);
            Ok(if status.unfinished.is_some() {
                Exit::Failure
            } else {
                Exit::Ok
            })
        }
        Command::History { limit } => {
            let loaded = load_config(cli)?;
            let checked = crate::journal::read_history_checked(&loaded.state_dir())?;
            if let Some(warning) = checked.damage_warning(&loaded.state_dir()) {
                tracing::warn!("{warning}");
            }
            let mut history = checked.releases;
            history.reverse();
            history.truncate(*limit);
            report::history(&history, cli.json);
            Ok(Exit::Ok)
        }
        Command::Unlock { force } => {
            let loaded = load_config(cli)?;
            if !*force {
                return Err(UsageError(
                    "unlock removes the deploy lock even if its holder still runs; pass --force to confirm".into(),
                )
                .into());
            }
            let holder = lock::force_unlock(&loaded.state_dir())?;
            report::unlocked(holder.as_ref(), cli.json);
            Ok(Exit::Ok)
        }
        Command::Stable(command) => stable(cli, command),
        Command::Health => {
            let loaded = load_config(cli)?;
            let progress = !cli.quiet && !cli.json;
            let verdict = health::run_gate(&loaded, |round, decision| {
                if progress {
                    crate::health::print_round(round, decision);
                }
            })?;
            report::health_verdict(&verdict, cli.json);
            Ok(if verdict.passed {
                Exit::Ok
            } else {
                Exit::Failure
            })
        }
        Command::Restore {
            id,
            yes,
            target_db,
            in_place,
            from,
        } => {
            let loaded = load_config(cli)?;
            let Some(id) = id else {
                match from {
                    Some(name) => {
                        report::remote_list(&remote::commands::list(&loaded, name)?, cli.json)
                    }
                    None => {
                        let catalog = backup::catalog::Catalog::new(loaded.backup_dir());
                        report::backup_list(&catalog.list()?, None, cli.json);
                    }
                }
                errln!("restore needs a backup id: stablehand restore ID (or \"latest\")");
                return Ok(Exit::Usage);
            };
            let restored = restore::restore(
                &loaded,
                &restore::Request {
                    id,
                    yes: *yes,
                    target_db: target_db.as_deref(),
                    in_place: *in_place,
                    from: from.as_deref(),
                },
            )?;
            report::restored(&restored, cli.json);
            // Production was changed and the app is not proven healthy: exit 12.
            Ok(match restored.app_healthy {
                Some(false) => Exit::Manual,
                _ => Exit::Ok,
            })
        }
        Command::Db(DbCommand::DropKept { name, yes }) => {
            let loaded = load_config(cli)?;
            if !*yes {
                return Err(UsageError(format!(
                    "dropping {name} deletes that database for good; pass --yes to confirm"
                ))
                .into());
            }
            let database = db::Database::from_config(&loaded)?;
            let side = database.side_databases()?;
            match side.iter().find(|s| s.name == *name) {
                Some(s) if s.kind == "replaced" || s.kind == "snapshot" || s.kind == "leftover" => {
                    // Never from under a connected session (no forced drop).
                    database.drop_kept_database(name)?;
                    report::dropped(name, cli.json);
                    Ok(Exit::Ok)
                }
                _ => Err(anyhow::anyhow!(
                    "{name} is not a database stablehand keeps beside {} (see `stablehand backup list --databases`); nothing was dropped",
                    database.name
                )),
            }
        }
        Command::Backup(args) => {
            let loaded = load_config(cli)?;
            match &args.command {
                None => create(cli, &loaded, &args.create.label, show_progress),
                Some(BackupCommand::Create(c)) => create(cli, &loaded, &c.label, show_progress),
                Some(BackupCommand::List {
                    remote: Some(name), ..
                }) => {
                    report::remote_list(&remote::commands::list(&loaded, name)?, cli.json);
                    Ok(Exit::Ok)
                }
                Some(BackupCommand::Sync { remote: name }) => {
                    let synced = remote::commands::sync(&loaded, name.as_deref())?;
                    report::synced(&synced, cli.json);
                    Ok(if synced.iter().all(|s| s.ok) {
                        Exit::Ok
                    } else {
                        Exit::Failure
                    })
                }
                Some(BackupCommand::List { databases, .. }) => {
                    let catalog = backup::catalog::Catalog::new(loaded.backup_dir());
                    let listing = catalog.list()?;
                    let side = if *databases {
                        Some(deploy::kept::annotated(
                            &loaded,
                            &db::Database::from_config(&loaded)?,
                        )?)
                    } else {
                        None
                    };
                    report::backup_list(&listing, side.as_deref(), cli.json);
                    Ok(Exit::Ok)
                }
                Some(BackupCommand::Show { id }) => {
                    let catalog = backup::catalog::Catalog::new(loaded.backup_dir());
                    let m = catalog.find(id)?;
                    report::backup_show(&m, &catalog, cli.json);
                    Ok(Exit::Ok)
                }
                Some(BackupCommand::Verify {
                    id,
                    all,
                    latest: _,
                    restore_test,
                    remote: on,
                }) => {
                    if *restore_test {
                        let results = match on {
                            Some(name) => {
                                remote::commands::restore_test(&loaded, name, id.as_deref(), *all)?
                            }
                            None => restore::restore_test(&loaded, id.as_deref(), *all)?,
                        };
                        report::restore_tests(&results, cli.json);
                        notify::announce_failed_verifications(
                            &loaded,
                            results
                                .iter()
                                .map(|r| (r.id.as_str(), r.ok, r.problem.as_ref())),
                        );
                        return Ok(if results.iter().all(|r| r.ok) {
                            Exit::Ok
                        } else {
                            Exit::Failure
                        });
                    }
                    let results = match on {
                        Some(name) => remote::commands::verify(&loaded, name, id.as_deref(), *all)?,
                        None => backup::verify(&loaded, id.as_deref(), *all)?,
                    };
                    report::verify(&results, cli.json);
                    notify::announce_failed_verifications(
                        &loaded,
                        results
                            .iter()
                            .map(|r| (r.id.as_str(), r.ok, r.problem.as_ref())),
                    );
                    Ok(if results.iter().all(|r| r.ok) {
                        Exit::Ok
                    } else {
                        Exit::Failure
                    })
                }
                Some(BackupCommand::Prune {
                    dry_run,
                    remote: on,
                }) => {
                    let outcome = match on {
                        Some(name) => backup::prune_remote(
                            &loaded,
                            &remote::Remote::named(&loaded, name)?,
                            *dry_run,
                        )?,
                        None => backup::prune(&loaded, *dry_run)?,
                    };
                    report::prune(&outcome, cli.json);
                    Ok(if outcome.error.is_some() {
                        Exit::Failure
                    } else {
                        Exit::Ok
                    })
                }
                Some(BackupCommand::Pin { id }) => {
                    let m = backup::set_pinned(&loaded, id, true)?;
                    report::pinned(&m, cli.json);
                    Ok(Exit::Ok)
                }
                Some(BackupCommand::Unpin { id }) => {
                    let m = backup::set_pinned(&loaded, id, false)?;
                    report::pinned(&m, cli.json);
                    Ok(Exit::Ok)
                }
            }
        }
    }
}

/// Asks on the terminal and returns the trimmed answer; without a terminal to ask on,
/// the usage error `no_terminal` (exit 2). Every confirmation goes through here.
pub(crate) fn ask(prompt: &str, no_terminal: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, Write};
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(no_terminal.into()).into());
    }
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Asks for `word` to be typed; anything else changes nothing (exit 2).
fn confirm_word(prompt: &str, word: &str, no_terminal: &str) -> anyhow::Result<()> {
    if ask(prompt, no_terminal)? != word {
        return Err(UsageError("not confirmed; nothing was changed".into()).into());
    }
    Ok(())
}

/// A rollback by hand may restore the database: confirm on a terminal, refuse without.
fn confirm_rollback(loaded: &config::Loaded) -> anyhow::Result<()> {
    confirm_word(
        &format!(
            "Roll back the app in {} (code, and the database when the deploy changed it)? Type \"rollback\" to confirm: ",
            loaded.app_dir.display()
        ),
        "rollback",
        "a rollback may restore the database; pass --yes to confirm (no terminal to ask on)",
    )
}

/// `migrate down` changes the schema under the running app: confirm on a terminal.
fn confirm_down(r: &migrations::DownReport, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    confirm_word(
        &format!(
            "Undo {} in database {} with their down.sql? Type \"down\" to confirm: ",
            r.migrations.join(", "),
            r.database
        ),
        "down",
        "migrate down changes the database schema; pass --yes to confirm (no terminal to ask on)",
    )
}

fn create(
    cli: &Cli,
    loaded: &config::Loaded,
    label: &str,
    show_progress: bool,
) -> anyhow::Result<Exit> {
    let created = match backup::create_backup(loaded, label, show_progress) {
        Ok(c) => c,
        Err(e) => {
            // Loud: the failure is announced (and the error still decides the exit code).
            notify::announce_backup_failure(loaded, &e);
            return Err(e);
        }
    };
    report::created(&created, cli.json, cli.quiet);
    if !created.upload_failures.is_empty() {
        // Loud: the local backup stands, the offsite copy does not.
        notify::announce_upload_failure(loaded, &created);
        return Err(anyhow::anyhow!(
            "backup {} is stored locally, but its upload failed: {}; run `stablehand backup sync` once the remote is reachable (or set backup.remote_required = true to make this a failed backup)",
            created.backup.id,
            created
                .upload_failures
                .iter()
                .map(|f| format!("remote {}: {}", f.remote, f.error))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if let Some(var) = &loaded.config.alerts.ping_url_env {
        // The dead-man's switch: "a backup succeeded just now".
        match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => {
                let d = notify::post_json(
                    "ping",
                    url.trim(),
                    &serde_json::json!({ "backup": created.backup.id }),
                    loaded.config.notify.attempts,
                    loaded.config.notify.timeout,
                );
                if !d.ok {
                    tracing::warn!(
                        "the backup succeeded but the ping to {} failed: {}",
                        d.target,
                        d.error.unwrap_or_default()
                    );
                }
            }
            _ => tracing::warn!("alerts.ping_url_env names {var}, which is not set: no ping sent"),
        }
    }
    Ok(Exit::Ok)
}

fn stable(cli: &Cli, command: &StableCommand) -> anyhow::Result<Exit> {
    let loaded = load_config(cli)?;
    let repo = git::Repo::open(&loaded.app_dir, &loaded.config.git)?;
    match command {
        StableCommand::Mark { rev, backup } => {
            let marked = repo.mark_stable(rev, backup.as_deref(), jiff::Timestamp::now())?;
            report::marked(&marked, cli.json);
            // A failed push is a failure unless pushing is off.
            Ok(if marked.pushed || !loaded.config.git.push {
                Exit::Ok
            } else {
                Exit::Failure
            })
        }
        StableCommand::List { fetch } => {
            if *fetch {
                repo.fetch_tags()?;
            }
            let tags = repo.stable_tags()?;
            report::stable_list(&tags, repo.names(), cli.json);
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
            report::target(&inputs.current, &target, &reverted, cli.json);
            Ok(match target {
                git::Target::Commit { .. } => Exit::Ok,
                git::Target::None { .. } => Exit::Failure,
            })
        }
    }
}
