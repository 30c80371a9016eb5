//! One deploy or rollback at a time per app directory: `.stablehand/lock`, an exclusive
//! `flock` (released by the kernel when the holder dies, so a stale lock is simply taken
//! over) with the holder written inside: pid, host, command, start time and a heartbeat
//! refreshed every few seconds.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

const HEARTBEAT: Duration = Duration::from_secs(5);

/// Who holds (or held) the lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub command: String,
    pub started_at: String,
    pub heartbeat_at: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} running `{}` since {} (last heartbeat {})",
            self.pid, self.host, self.command, self.started_at, self.heartbeat_at
        )
    }
}

/// The lock is held by another process.
#[derive(Debug, thiserror::Error)]
#[error("another deploy or rollback holds the lock {path}: {holder}; wait for it to finish, or if that process is stuck, stop it (or run `stablehand unlock --force`)")]
pub struct Held {
    pub path: PathBuf,
    pub holder: String,
}

/// The held lock; released on drop (or when the process dies).
pub struct AppLock {
    _file: nix::fcntl::Flock<File>,
    stop: Arc<AtomicBool>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
    /// The previous holder when the lock was taken over from a process that is gone.
    pub took_over: Option<Holder>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("lock")
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

fn write_holder(file: &mut File, holder: &Holder) -> std::io::Result<()> {
    let json = serde_json::to_vec(holder).unwrap_or_default();
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(&json)?;
    file.sync_data()
}

/// Opens (creating, 0600, never truncating) a file that is locked with flock.
pub fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Reads the holder recorded in the lock file, if any.
pub fn read_holder(state_dir: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether a process holds the lock now.
pub fn is_held(state_dir: &Path) -> bool {
    let Ok(file) = File::open(path(state_dir)) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

impl AppLock {
    /// Takes the lock for `command`, or fails at once with `Held` naming the holder.
    pub fn acquire(state_dir: &Path, command: &str) -> anyhow::Result<AppLock> {
        fs_err::create_dir_all(state_dir)?;
        let path = path(state_dir);
        let file = open_lock_file(&path)?;
        let mut lock =
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let holder = serde_json::from_str::<Holder>(&text)
                        .map(|h| h.to_string())
                        .unwrap_or_else(|_| "a process that has not written its name yet".into());
                    return Err(Held { path, holder }.into());
                }
                Err((_, e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()))
                }
            };
        let mut previous = String::new();
        let _ = lock.read_to_string(&mut previous);
        let took_over = serde_json::from_str::<Holder>(&previous).ok();
        if let Some(h) = &took_over {
            tracing::warn!("took over the lock of a process that is gone: {h}");
        }
        let now = jiff::Timestamp::now().to_string();
        let holder = Holder {
            pid: std::process::id(),
            host: hostname(),
            command: command.to_string(),
            started_at: now.clone(),
            heartbeat_at: now,
        };
        write_holder(&mut lock, &holder).with_context(|| format!("writing {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let stop = stop.clone();
            let mut file = lock.try_clone().context("cloning the lock file handle")?;
            let mut holder = holder.clone();
            std::thread::spawn(move || {
                let step = Duration::from_millis(200);
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited >= HEARTBEAT {
                        waited = Duration::ZERO;
                        holder.heartbeat_at = jiff::Timestamp::now().to_string();
                        let _ = write_holder(&mut file, &holder);
                    }
                }
            })
        };
        Ok(AppLock {
            _file: lock,
            stop,
            heartbeat: Some(heartbeat),
            took_over,
        })
    }
}

impl Drop for AppLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        // A clean release leaves no holder behind (a crashed one does, for the warning).
        let _ = self._file.set_len(0);
    }
}

/// `unlock --force`: removes the lock file so the next command can proceed. A live
/// holder keeps its (now unlinked) lock, so this is for a holder that is stuck.
pub fn force_unlock(state_dir: &Path) -> anyhow::Result<Option<Holder>> {
    let holder = read_holder(state_dir);
    match std::fs::remove_file(path(state_dir)) {
        Ok(()) => Ok(holder),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("removing the lock file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_named_in_the_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let first = AppLock::acquire(dir.path(), "deploy").unwrap();
        assert!(first.took_over.is_none());
        assert!(is_held(dir.path()));
        let err = AppLock::acquire(dir.path(), "rollback").err().unwrap();
        let held = err.downcast_ref::<Held>().expect("a Held error");
        assert!(
            held.holder.contains(&format!("pid {}", std::process::id())),
            "{held}"
        );
        assert!(held.holder.contains("`deploy`"), "{held}");
        drop(first);
        assert!(!is_held(dir.path()));
        let again = AppLock::acquire(dir.path(), "deploy").unwrap();
        assert!(
            again.took_over.is_none(),
            "a clean release leaves no holder behind"
        );
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_taken_over_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let stale = Holder {
            pid: 999_999,
            host: "old-host".into(),
            command: "deploy".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            heartbeat_at: "2026-01-01T00:00:05Z".into(),
        };
        std::fs::write(path(dir.path()), serde_json::to_vec(&stale).unwrap()).unwrap();
        let lock = AppLock::acquire(dir.path(), "deploy").unwrap();
        assert_eq!(lock.took_over.as_ref().map(|h| h.pid), Some(999_999));
        assert_eq!(read_holder(dir.path()).unwrap().pid, std::process::id());
        drop(lock);
        assert!(
            force_unlock(dir.path()).unwrap().is_none(),
            "released: nothing named"
        );
    }
}
