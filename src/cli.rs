//! The command-line contract (see PRODUCT.md). A command appears here when it works.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Guarded deploys for docker-compose + PostgreSQL apps: verified backups first.
#[derive(Debug, Parser)]
#[command(name = "stablehand", version = version(), about, propagate_version = true)]
pub struct Cli {
    /// Config file [default: ./stablehand.toml]
    #[arg(long, global = true, env = "STABLEHAND_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// More detail on stderr (-v: commands run, -vv: their stderr)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr; no progress
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// What `stablehand --version` prints: the version and the git commit the binary was
/// built from (`STABLEHAND_COMMIT` at build time, which `make build`, `make dist` and
/// `make install` set; "unknown" for a plain `cargo build`).
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (commit {})",
            env!("CARGO_PKG_VERSION"),
            option_env!("STABLEHAND_COMMIT")
                .filter(|c| !c.is_empty())
                .unwrap_or("unknown")
        )
    })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented stablehand.toml from what this directory holds
    Init(InitArgs),
    /// The guarded deploy: backup, build, restart, health gate; mark stable or roll back
    /// code AND database (exit 0 deployed, 10 refused, 11 rolled back, 12 manual)
    Deploy(DeployArgs),
    /// Roll code and database back to the last stable release (exit 11 healthy again, 12 not)
    Rollback(RollbackArgs),
    /// Finish an interrupted deploy or rollback so code and database match
    Recover,
    /// Wait for the running deploy, rollback or recover, then print its outcome and exit
    /// with its exit code (0, 10, 11, 12)
    Wait(WaitArgs),
    /// Check tools, versions, access, privileges, disk and secrets (exit 1 when something
    /// blocks a deploy)
    Doctor,
    /// Dashboard, /metrics and /api/status, and the [schedule] jobs (runs until stopped)
    Serve(ServeArgs),
    /// Exit 1, saying why, when an alert condition holds (stale or failed backups, an
    /// unfinished deploy, an unhealthy stable release)
    Check,
    /// Running commit, stable release, last deploy, backups, kept databases, unfinished work
    Status,
    /// The release log: every deploy and rollback, newest first
    History(HistoryArgs),
    /// Remove the deploy lock of a stuck process
    Unlock(UnlockArgs),
    /// Create, list, show, verify, prune and pin database backups
    Backup(BackupArgs),
    /// Run the health gate now (exit 0 healthy, 1 not)
    Health,
    /// Restore a backup into a new database and swap it in (the old one is kept)
    Restore(RestoreArgs),
    /// Prisma migrations: undo the newest ones with their down.sql
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Databases stablehand keeps beside the live one
    #[command(subcommand)]
    Db(DbCommand),
    /// Stable releases: mark one, list them, see where a rollback would go
    #[command(subcommand)]
    Stable(StableCommand),
    /// The traffic switch in front of the app ([proxy]): run it, see it, move traffic
    #[command(subcommand)]
    Proxy(ProxyCommand),
}

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Serve proxy.listen, forwarding to the release that serves now (runs until stopped)
    Run,
    /// Where traffic goes, and what each upstream answered
    Status,
    /// Send new requests to another upstream (requests in flight finish where they are)
    Switch {
        /// host:port of the release to send traffic to
        upstream: String,
        /// Its name in the status [default: manual]
        #[arg(long, default_value = "manual")]
        colour: String,
    },
    /// Answer 503 with Retry-After (on), or forward again (off)
    Maintenance {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

// The arguments of `stablehand init` (its help is the variant's doc comment).
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Replace an existing config
    #[arg(long)]
    pub force: bool,
    /// The compose file the server runs (repeatable, in Compose's -f order)
    /// [default: the one the deploy workflow names, else a production-named file,
    /// else Compose's default]
    #[arg(long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

// The arguments of `stablehand deploy` (its help is the variant's doc comment).
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The commit, tag or branch to deploy [default: the remote branch]
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Run in the background, detached from the terminal (a cancelled CI job or a
    /// dropped SSH session cannot interrupt it); `stablehand wait` waits for its outcome
    #[arg(long, conflicts_with = "dry_run")]
    pub detach: bool,
    /// With [proxy]: blue_green (start beside the running release, gate, switch),
    /// maintenance (503 while it stops and starts) or auto (blue/green when the release's
    /// migrations are additive) [default: proxy.strategy]
    #[arg(long, value_enum)]
    pub strategy: Option<crate::config::Strategy>,
}

// The arguments of `stablehand rollback` (its help is the variant's doc comment).
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Roll back to this commit instead of latest-stable
    #[arg(long, value_name = "REF")]
    pub to: Option<String>,
    /// Database action: auto (only if the deploy changed it; down migrations when
    /// possible), restore, down, none
    #[arg(long, value_enum, value_name = "ACTION")]
    pub db: Option<crate::deploy::decision::DbPolicy>,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
}

// The arguments of `stablehand wait` (its help is the variant's doc comment).
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Give up after this long (exit 1; the deploy goes on)
    #[arg(long, value_name = "DURATION", default_value = "2h")]
    pub timeout: String,
}

// The arguments of `stablehand serve` (its help is the variant's doc comment).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: serve.listen, 127.0.0.1:9750]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

// The arguments of `stablehand history` (its help is the variant's doc comment).
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Show at most this many entries
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

// The arguments of `stablehand unlock` (its help is the variant's doc comment).
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Required: a live holder keeps running
    #[arg(long)]
    pub force: bool,
}

// The arguments of `stablehand restore` (its help is the variant's doc comment).
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup id, a unique prefix of one, or "latest"; without it, list the backups
    pub id: Option<String>,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// Restore into this new database and stop there (the live one is untouched)
    #[arg(long, value_name = "NAME", conflicts_with = "in_place")]
    pub target_db: Option<String>,
    /// Restore over the live database in one transaction (for a user without
    /// CREATEDB); objects created after the backup remain
    #[arg(long)]
    pub in_place: bool,
    /// Restore the copy held by this remote ([[backup.remote]] name)
    #[arg(long, value_name = "NAME")]
    pub from: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Undo applied migrations with their down.sql, newest first (the newest one by
    /// default); refused (exit 10) when a script is missing or would destroy data
    /// written since the backup taken before the migration
    Down {
        /// Undo every migration applied after this one (it stays applied)
        #[arg(long, value_name = "NAME")]
        to: Option<String>,
        /// Print the plan and the data check, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Drop a database kept by a restore or snapshot swap (never the live one)
    DropKept {
        name: String,
        /// Confirm the drop
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StableCommand {
    /// Tag a commit as the last release proven healthy and push the tags
    Mark {
        /// The commit, tag or branch to mark [default: HEAD]
        #[arg(value_name = "REF", default_value = "HEAD")]
        rev: String,
        /// The pre-deploy backup id to record in the tag message
        #[arg(long, value_name = "ID")]
        backup: Option<String>,
    },
    /// List the stable tags, newest first
    List {
        /// Fetch tags from the remote first
        #[arg(long)]
        fetch: bool,
    },
    /// Show where a rollback from the current commit would go, and why
    Target {
        /// A target to check instead of the automatic choice (e.g. HEAD~1)
        #[arg(long, value_name = "REF")]
        to: Option<String>,
        /// Fetch tags from the remote first
        #[arg(long)]
        fetch: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,

    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Label that starts the backup's id and file name
    #[arg(long, default_value = "manual", value_parser = parse_label)]
    pub label: String,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up the database now (the default of `stablehand backup`)
    Create(CreateArgs),
    /// List backups, newest first (by the manifests' time)
    List {
        /// Also list the databases stablehand keeps beside the live one (replaced by a
        /// restore, snapshots, leftovers of interrupted restores)
        #[arg(long)]
        databases: bool,
        /// List the copies on this remote instead (from its manifests)
        #[arg(long, value_name = "NAME", conflicts_with = "databases")]
        remote: Option<String>,
    },
    /// Upload the local backups a remote lacks (every remote, or --remote NAME)
    Sync {
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
    },
    /// Show one backup's manifest
    Show {
        /// Backup id, a unique prefix of one, or "latest"
        id: String,
    },
    /// Check size, SHA-256 and the dump's table of contents
    Verify {
        /// Backup id, a unique prefix of one, or "latest" [default: latest]
        id: Option<String>,
        /// Verify every backup
        #[arg(long, conflicts_with_all = ["id", "latest"])]
        all: bool,
        /// Verify the newest backup (the default without an id)
        #[arg(long, conflicts_with = "id")]
        latest: bool,
        /// Also restore into a scratch database, check every table, and drop it
        #[arg(long)]
        restore_test: bool,
        /// Verify the copies on this remote (size and SHA-256 streamed; with
        /// --restore-test, downloaded and restored)
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
    },
    /// Delete backups the retention policy does not keep
    Prune {
        /// Show what would be kept (and why) or deleted; delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Apply this remote's retention instead
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
    },
    /// Protect a backup from retention
    Pin { id: String },
    /// Remove a backup's protection from retention
    Unpin { id: String },
}

fn parse_label(s: &str) -> Result<String, String> {
    crate::backup::create::validate_label(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}
