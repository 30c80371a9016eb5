//! `stablehand status`: where production is, at a glance (and loudly, when a deploy was
//! left unfinished).

use serde::Serialize;

use crate::backup::catalog::Catalog;
use crate::config::Loaded;
use crate::db::Database;
use crate::git::Repo;
use crate::journal::{self, Journal, Release};

#[derive(Debug, Serialize)]
pub struct Status {
    pub running_commit: Option<String>,
    pub latest_stable: Option<String>,
    pub last_release: Option<Release>,
    pub last_backup: Option<String>,
    pub last_backup_at: Option<jiff::Timestamp>,
    pub backups: usize,
    /// Databases kept beside the live one (replaced, failed, snapshots, leftovers),
    /// each with the rule it is kept under (`note`).
    pub kept_databases: Vec<crate::db::ops::SideDatabase>,
    /// An unfinished deploy or rollback: `stablehand recover` finishes it.
    pub unfinished: Option<Journal>,
    /// Who holds the deploy lock now, if anyone.
    pub lock_holder: Option<crate::lock::Holder>,
    /// Problems reading any of the above (status shows what it can).
    pub problems: Vec<String>,
}

pub fn status(loaded: &Loaded) -> anyhow::Result<Status> {
    let state_dir = loaded.state_dir();
    let mut problems = Vec::new();
    let mut note = |what: &str, e: anyhow::Error| problems.push(format!("{what}: {e:#}"));
    let (running_commit, latest_stable) = match Repo::open(&loaded.app_dir, &loaded.config.git) {
        Ok(repo) => (
            repo.head().map_err(|e| note("git", e)).ok(),
            repo.latest_stable().unwrap_or(None),
        ),
        Err(e) => {
            note("git", e);
            (None, None)
        }
    };
    let history = journal::read_history_checked(&state_dir)
        .map_err(|e| note("history", e))
        .ok();
    if let Some(warning) = history.as_ref().and_then(|h| h.damage_warning(&state_dir)) {
        note("history", anyhow::anyhow!(warning));
    }
    let last_release = history.and_then(|h| h.releases.into_iter().last());
    let listing = Catalog::new(loaded.backup_dir()).list();
    let (last_backup, last_backup_at, backups) = match listing {
        Ok(l) => (
            l.backups.first().map(|m| m.id.clone()),
            l.backups.first().map(|m| m.created_at),
            l.backups.len(),
        ),
        Err(e) => {
            note("backups", e);
            (None, None, 0)
        }
    };
    let kept_databases = Database::from_config(loaded)
        .and_then(|db| super::kept::annotated(loaded, &db))
        .map_err(|e| note("database", e))
        .unwrap_or_default();
    let unfinished = Journal::load(&state_dir)
        .map_err(|e| note("journal", e))
        .ok()
        .flatten();
    let lock_holder = crate::lock::is_held(&state_dir)
        .then(|| crate::lock::read_holder(&state_dir))
        .flatten();
    Ok(Status {
        running_commit,
        latest_stable,
        last_release,
        last_backup,
        last_backup_at,
        backups,
        kept_databases,
        unfinished,
        lock_holder,
        problems,
    })
}
