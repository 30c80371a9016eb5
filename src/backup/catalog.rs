//! The backups in a directory, read from their manifests and ordered by the manifests'
//! time (never by file names or mtimes), plus the directory lock that serialises
//! writers (create, prune, pin, verify).

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::manifest::{Manifest, DATA_SUFFIX, MANIFEST_SUFFIX};

/// Name of the lock file inside the backup directory.
const LOCK_FILE: &str = ".stablehand-backup.lock";
/// How long a command waits for another one working in the same backup directory.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The backup directory.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub dir: PathBuf,
}

/// Something in the directory that is not a complete backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stray {
    pub file: String,
    pub problem: String,
}

/// What `list` finds: complete backups newest first, and strays.
#[derive(Debug, Default)]
pub struct Listing {
    pub backups: Vec<Manifest>,
    pub strays: Vec<Stray>,
}

/// Why `pick` found no single backup.
pub enum NotPicked {
    /// "latest" asked of no backups.
    Empty,
    NoMatch,
    /// The ids a prefix matches.
    Ambiguous(Vec<String>),
}

/// Backup `id` among `backups` (newest first): an exact id, a unique id prefix, or
/// "latest" for the newest. Shared by the local catalog and the remotes.
pub fn pick(backups: Vec<Manifest>, id: &str) -> Result<Manifest, NotPicked> {
    if id == "latest" {
        return backups.into_iter().next().ok_or(NotPicked::Empty);
    }
    if let Some(m) = backups.iter().find(|m| m.id == id) {
        return Ok(m.clone());
    }
    let mut matches: Vec<Manifest> = backups
        .into_iter()
        .filter(|m| m.id.starts_with(id))
        .collect();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(NotPicked::NoMatch),
        _ => Err(NotPicked::Ambiguous(
            matches.into_iter().map(|m| m.id).collect(),
        )),
    }
}

impl Catalog {
    /// The catalog of backups in `dir` (which need not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Catalog { dir: dir.into() }
    }

    /// Creates the directory (0700) if needed.
    pub fn ensure_dir(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        if !self.dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .with_context(|| format!("creating the backup directory {}", self.dir.display()))?;
        }
        Ok(())
    }

    /// Takes the directory's exclusive lock, waiting up to `LOCK_WAIT` for another
    /// stablehand process to finish; released when the guard drops (or the holder dies).
    pub fn lock(&self) -> anyhow::Result<DirLock> {
        use std::io::{Read, Seek, Write};
        self.ensure_dir()?;
        let path = self.dir.join(LOCK_FILE);
        let started = std::time::Instant::now();
        let mut announced = false;
        loop {
            let file = crate::lock::open_lock_file(&path)?;
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(mut lock) => {
                    let holder = format!(
                        "pid {} ({}), since {}",
                        std::process::id(),
                        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
                        jiff::Timestamp::now()
                    );
                    lock.set_len(0)?;
                    lock.rewind()?;
                    lock.write_all(holder.as_bytes())?;
                    return Ok(DirLock { _lock: lock });
                }
                Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = crate::redact::redact_text(holder.trim());
                    if started.elapsed() >= LOCK_WAIT {
                        bail!(
                            "another stablehand process is working in {} (backup, prune or verify) and has not finished within {}: {holder}",
                            self.dir.display(),
                            humantime::format_duration(LOCK_WAIT)
                        );
                    }
                    if !announced {
                        tracing::warn!(
                            "waiting for another stablehand process in {}: {holder}",
                            self.dir.display()
                        );
                        announced = true;
                    }
                    if crate::process::interrupted() {
                        bail!("interrupted while waiting for the backup directory lock");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
                Err((_, e)) => bail!("locking {}: {e}", path.display()),
            }
        }
    }

    /// All complete backups, newest first, and anything that looks like an incomplete one.
    pub fn list(&self) -> anyhow::Result<Listing> {
        let mut listing = Listing::default();
        if !self.dir.exists() {
            return Ok(listing);
        }
        let mut data_files = Vec::new();
        for entry in fs_err::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") {
                listing.strays.push(Stray {
                    file: name,
                    problem: "unfinished write (a backup in progress, or one that was killed)"
                        .into(),
                });
            } else if name.ends_with(MANIFEST_SUFFIX) {
                match Manifest::read(&entry.path()) {
                    Ok(m) => listing.backups.push(m),
                    Err(e) => listing.strays.push(Stray {
                        file: name,
                        problem: format!("unreadable manifest: {e:#}"),
                    }),
                }
            } else if name.ends_with(DATA_SUFFIX) {
                data_files.push(name);
            }
        }
        for m in &listing.backups {
            if !self.dir.join(&m.file).exists() {
                listing.strays.push(Stray {
                    file: m.file.clone(),
                    problem: format!("data file of backup {} is missing", m.id),
                });
            }
        }
        for name in data_files {
            if !listing.backups.iter().any(|m| m.file == name) {
                listing.strays.push(Stray {
                    file: name,
                    problem:
                        "no manifest: not a complete backup (ignored; the next backup removes it)"
                            .into(),
                });
            }
        }
        listing.backups.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(listing)
    }

    /// Finds a backup by id or unique id prefix; "latest" is the newest.
    pub fn find(&self, id: &str) -> anyhow::Result<Manifest> {
        match pick(self.list()?.backups, id) {
            Ok(m) => Ok(m),
            Err(NotPicked::Empty) => bail!("there are no backups in {}", self.dir.display()),
            Err(NotPicked::NoMatch) => bail!(
                "no backup with id {id:?} in {}; `stablehand backup list` shows the ids",
                self.dir.display()
            ),
            Err(NotPicked::Ambiguous(ids)) => bail!(
                "{id:?} matches {} backups ({}); give more of the id",
                ids.len(),
                ids.join(", ")
            ),
        }
    }

    /// The backups a command names: one id (or prefix, or "latest"), all of them, or,
    /// with neither, the newest.
    pub fn select(&self, id: Option<&str>, all: bool) -> anyhow::Result<Vec<Manifest>> {
        Ok(match (id, all) {
            (Some(id), _) => vec![self.find(id)?],
            (None, true) => self.list()?.backups,
            (None, false) => vec![self.find("latest")?],
        })
    }

    /// Deletes a backup: the manifest first (so it stops counting), then the data file.
    pub fn delete(&self, m: &Manifest, _lock: &DirLock) -> anyhow::Result<()> {
        fs_err::remove_file(Manifest::manifest_path(&self.dir, &m.id))?;
        match fs_err::remove_file(m.data_path(&self.dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        crate::files::sync_dir(&self.dir)
    }

    /// Removes leftovers of writes that never finished: temp files, and data files
    /// without a manifest (a crash between the two renames). Only safe under the lock,
    /// which every writer holds.
    pub fn remove_unfinished(&self, _lock: &DirLock) -> anyhow::Result<Vec<String>> {
        let mut removed = Vec::new();
        for entry in fs_err::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let orphan = name.ends_with(DATA_SUFFIX) && {
                let id = name.trim_end_matches(DATA_SUFFIX);
                !Manifest::manifest_path(&self.dir, id).exists()
            };
            if (name.starts_with('.') && name.ends_with(".partial")) || orphan {
                fs_err::remove_file(entry.path())?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// The path of a data file inside the directory.
    pub fn path_of(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// Holds the backup directory's lock.
pub struct DirLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}
