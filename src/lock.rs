//! One deploy or rollback at a time per app directory: `.stablehand/lock`, an exclusive
//! `flock` (released by the kernel when the holder dies, so a stale lock is simply taken
//! over) with the holder written inside: pid, host, command, start time and a heartbeat
//! refreshed every few seconds.
//!
//! `serve`'s scheduled jobs take the same lock (holder `serve: scheduled backup`...), so a
//! job never overlaps a deploy, rollback, recover or `migrate down`. The rule between
//! them: a command that finds a scheduled job holding the lock waits for it (up to
//! `SCHEDULED_JOB_WAIT`, saying so) instead of being refused, and while it waits it holds
//! `.stablehand/lock.next`, which scheduled jobs yield to: the waiting command goes next.
//! Any other holder refuses the command at once, as before.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

const HEARTBEAT: Duration = Duration::from_secs(5);

/// The command of every lock holder that is one of `serve`'s scheduled jobs starts so.
pub const SCHEDULED_JOB_PREFIX: &str = "serve: ";

/// How long a deploy, rollback, recover or `migrate down` waits for a scheduled job that
/// holds the lock before it is refused (exit 10, naming the job).
pub const SCHEDULED_JOB_WAIT: Duration = Duration::from_secs(10 * 60);

/// How often a waiting command tries the lock again.
const RETRY: Duration = Duration::from_millis(100);

/// How long a holder that has not written its name yet (it has only just taken the lock)
/// is given to write it before the command is refused.
const NAMING_GRACE: Duration = Duration::from_secs(2);

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
#[error("another deploy or rollback holds the lock {path}: {holder}{}; wait for it to finish, or if that process is stuck, stop it (or run `stablehand unlock --force`)", waited_note(*.waited))]
pub struct Held {
    pub path: PathBuf,
    /// The holder, described (or "a process that has not written its name yet").
    pub holder: String,
    /// The holder as recorded in the lock file.
    pub by: Option<Holder>,
    /// How long this command waited for it (a scheduled job) before giving up.
    pub waited: Option<Duration>,
}

fn waited_note(waited: Option<Duration>) -> String {
    match waited {
        Some(w) => format!(
            ", still running after this command waited {} for it",
            humantime::format_duration(Duration::from_secs(w.as_secs()))
        ),
        None => String::new(),
    }
}

impl Held {
    /// Whether the holder is one of `serve`'s scheduled jobs.
    pub fn is_scheduled_job(&self) -> bool {
        self.by
            .as_ref()
            .is_some_and(|h| h.command.starts_with(SCHEDULED_JOB_PREFIX))
    }
}

/// The held lock; released on drop (or when the process dies).
pub struct AppLock {
    _file: nix::fcntl::Flock<File>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
    /// The previous holder when the lock was taken over from a process that is gone.
    pub took_over: Option<Holder>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("lock")
}

/// Held (flock) by a command waiting for a scheduled job to finish, its name inside.
fn next_path(state_dir: &Path) -> PathBuf {
    state_dir.join("lock.next")
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
    flocked(&path(state_dir))
}

fn flocked(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// The command waiting for a scheduled job to release the lock, if one is: a scheduled
/// job about to start lets it go first.
pub fn next_in_line(state_dir: &Path) -> Option<Holder> {
    let path = next_path(state_dir);
    if !flocked(&path) {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    serde_json::from_str(&text).ok()
}

/// The place in line of a command waiting for a scheduled job; released on drop.
struct NextInLine(nix::fcntl::Flock<File>);

impl NextInLine {
    /// None when another command already waits (it goes first; this one still waits).
    fn take(state_dir: &Path, holder: &Holder) -> Option<NextInLine> {
        let file = open_lock_file(&next_path(state_dir)).ok()?;
        let mut lock =
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()?;
        write_holder(&mut lock, holder).ok()?;
        Some(NextInLine(lock))
    }
}

impl Drop for NextInLine {
    fn drop(&mut self) {
        let _ = self.0.set_len(0);
    }
}

fn me(command: &str) -> Holder {
    let now = jiff::Timestamp::now().to_string();
    Holder {
        pid: std::process::id(),
        host: hostname(),
        command: command.to_string(),
        started_at: now.clone(),
        heartbeat_at: now,
    }
}

impl AppLock {
    /// Takes the lock for `command`. A scheduled job of `serve` holding it is waited for
    /// (up to `SCHEDULED_JOB_WAIT`, with a warning naming it); any other holder fails the
    /// call at once with `Held` naming it.
    pub fn acquire(state_dir: &Path, command: &str) -> anyhow::Result<AppLock> {
        Self::acquire_waiting(state_dir, command, SCHEDULED_JOB_WAIT)
    }

    /// `acquire`, waiting up to `limit` for a scheduled job.
    fn acquire_waiting(
        state_dir: &Path,
        command: &str,
        limit: Duration,
    ) -> anyhow::Result<AppLock> {
        let started = Instant::now();
        let mut announced = false;
        // Taken again each round while someone else has it (or a probe got in the way).
        let mut place: Option<NextInLine> = None;
        let mut unnamed_since: Option<Instant> = None;
        loop {
            let held = match Self::try_acquire(state_dir, command) {
                Ok(lock) => return Ok(lock),
                Err(e) => e.downcast::<Held>()?,
            };
            let waited = started.elapsed();
            unnamed_since = match held.by {
                None => unnamed_since.or(Some(Instant::now())),
                Some(_) => None,
            };
            let wait = if held.is_scheduled_job() {
                waited < limit
            } else {
                unnamed_since.is_some_and(|t| t.elapsed() < NAMING_GRACE)
            };
            if !wait {
                return Err(Held {
                    waited: held.is_scheduled_job().then_some(waited),
                    ..held
                }
                .into());
            }
            if held.is_scheduled_job() {
                if !announced {
                    tracing::warn!(
                        "waiting for {} to finish (up to {}) before this {command} starts",
                        held.holder,
                        humantime::format_duration(limit)
                    );
                    announced = true;
                }
                if place.is_none() {
                    place = NextInLine::take(state_dir, &me(command));
                }
            }
            std::thread::sleep(RETRY);
        }
    }

    /// Takes the lock for `command` now, or fails with `Held` naming the holder.
    pub fn try_acquire(state_dir: &Path, command: &str) -> anyhow::Result<AppLock> {
        fs_err::create_dir_all(state_dir)?;
        let path = path(state_dir);
        let file = open_lock_file(&path)?;
        let mut lock =
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let by = serde_json::from_str::<Holder>(&text).ok();
                    let holder = by
                        .as_ref()
                        .map(|h| h.to_string())
                        .unwrap_or_else(|| "a process that has not written its name yet".into());
                    return Err(Held {
                        path,
                        holder,
                        by,
                        waited: None,
                    }
                    .into());
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
        let holder = me(command);
        write_holder(&mut lock, &holder).with_context(|| format!("writing {}", path.display()))?;
        // Released (the sender dropped): the heartbeat ends at once, not at its next tick.
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let heartbeat = {
            let mut file = lock.try_clone().context("cloning the lock file handle")?;
            let mut holder = holder.clone();
            std::thread::spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(HEARTBEAT)
                {
                    holder.heartbeat_at = jiff::Timestamp::now().to_string();
                    let _ = write_holder(&mut file, &holder);
                }
            })
        };
        Ok(AppLock {
            _file: lock,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
            took_over,
        })
    }
}

impl Drop for AppLock {
    fn drop(&mut self) {
        drop(self.stop.take());
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

    #[test]
    fn a_deploy_waits_for_a_scheduled_job_and_goes_next() {
        let dir = tempfile::tempdir().unwrap();
        let job = AppLock::try_acquire(dir.path(), "serve: scheduled backup").unwrap();
        assert!(next_in_line(dir.path()).is_none());
        let state_dir = dir.path().to_path_buf();
        let deploy = std::thread::spawn(move || {
            let started = Instant::now();
            AppLock::acquire(&state_dir, "deploy").map(|lock| (lock, started.elapsed()))
        });
        let waiting = (0..100)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                next_in_line(dir.path())
            })
            .expect("the waiting deploy holds its place in line");
        assert_eq!(waiting.command, "deploy");
        std::thread::sleep(Duration::from_millis(300));
        assert!(!deploy.is_finished(), "the deploy waits while the job runs");
        drop(job);
        let (lock, waited) = deploy.join().unwrap().expect("the deploy got the lock");
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert_eq!(read_holder(dir.path()).unwrap().command, "deploy");
        assert!(next_in_line(dir.path()).is_none(), "its place is given up");
        drop(lock);
    }

    #[test]
    fn a_scheduled_job_still_running_after_the_limit_refuses_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let _job = AppLock::try_acquire(dir.path(), "serve: scheduled verify").unwrap();
        let started = Instant::now();
        let err = AppLock::acquire_waiting(dir.path(), "rollback", Duration::from_millis(400))
            .err()
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(400));
        let held = err.downcast_ref::<Held>().expect("a Held error");
        assert!(held.is_scheduled_job());
        let msg = held.to_string();
        assert!(msg.contains("`serve: scheduled verify`"), "{msg}");
        assert!(
            msg.contains("still running after this command waited"),
            "{msg}"
        );
    }

    #[test]
    fn a_holder_with_no_name_yet_is_given_a_moment() {
        // `is_held` (status, the dashboard) probes with a shared lock and writes no name:
        // a deploy arriving during the probe waits it out instead of being refused.
        let dir = tempfile::tempdir().unwrap();
        drop(AppLock::acquire(dir.path(), "deploy").unwrap());
        let file = File::open(path(dir.path())).unwrap();
        let probe =
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(probe);
        });
        let lock = AppLock::acquire(dir.path(), "deploy").expect("taken once the probe is gone");
        release.join().unwrap();
        drop(lock);
    }

    #[test]
    fn a_deploy_holding_the_lock_refuses_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let _deploy = AppLock::acquire(dir.path(), "deploy").unwrap();
        let started = Instant::now();
        let err = AppLock::acquire(dir.path(), "deploy").err().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        let held = err.downcast_ref::<Held>().expect("a Held error");
        assert!(!held.is_scheduled_job());
        assert!(held.waited.is_none());
        assert!(next_in_line(dir.path()).is_none(), "nobody waits");
    }
}
