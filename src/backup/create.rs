//! The backup pipeline: `pg_dump -Fc -Z0` streamed through multithreaded zstd and
//! SHA-256 in one pass into a hidden temp file, fsynced, checked, renamed, and only then
//! recorded by its manifest. Any failure removes the partial file and records nothing.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::catalog::{Catalog, DirLock};
use super::manifest::{
    self, Compression, DatabaseInfo, Manifest, ToolVersions, Verification, DATA_SUFFIX,
};
use crate::config::BackupConfig;
use crate::db::Database;

/// The first bytes of every pg_dump custom-format archive.
const CUSTOM_FORMAT_MAGIC: &[u8] = b"PGDMP";
const CHUNK: usize = 1 << 20;
/// The default cap on zstd workers.
const MAX_DEFAULT_THREADS: usize = 4;

/// The step of the pipeline that failed, named in the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Preflight,
    Dump,
    Write,
    Check,
    Upload,
    Manifest,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Preflight => "preflight (database and pg_dump)",
            Stage::Dump => "dump (pg_dump)",
            Stage::Write => "write (compressing to the backup file)",
            Stage::Check => "check (size and table of contents)",
            Stage::Upload => "upload (backup.remote_required = true)",
            Stage::Manifest => "manifest",
        })
    }
}

/// A failed backup: which stage, and why. Nothing was recorded.
#[derive(Debug, thiserror::Error)]
#[error("backup failed at stage {stage}: {cause:#}\n  no backup was recorded and no partial file was left behind")]
pub struct BackupFailed {
    pub stage: Stage,
    pub cause: anyhow::Error,
}

fn at(stage: Stage) -> impl FnOnce(anyhow::Error) -> BackupFailed {
    move |cause| BackupFailed { stage, cause }
}

/// What to back up and how.
pub struct Request<'a> {
    pub label: &'a str,
    pub app_dir: &'a Path,
    /// The commit the backup belongs to; default: the app directory's HEAD.
    pub commit: Option<&'a str>,
    pub settings: &'a BackupConfig,
    pub show_progress: bool,
    /// Remotes that get a copy in the same pass.
    pub remotes: &'a [crate::remote::Remote],
}

/// A remote copy that did not make it (the local backup may still stand).
#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadFailure {
    pub remote: String,
    pub error: String,
}

/// A backup and what happened to its remote copies.
pub struct Made {
    pub manifest: Manifest,
    pub upload_failures: Vec<UploadFailure>,
}

/// Runs one backup while holding the directory lock. Returns the manifest on success.
pub fn create(
    db: &Database,
    catalog: &Catalog,
    lock: &DirLock,
    req: &Request,
) -> Result<Made, BackupFailed> {
    validate_label(req.label).map_err(at(Stage::Preflight))?;
    catalog
        .remove_unfinished(lock)
        .context("removing unfinished files of an earlier, killed backup")
        .map_err(at(Stage::Preflight))?;

    // No single step of the backup, catalog reads included, may outlast backup.timeout.
    let db = &db.clone().with_query_timeout(req.settings.timeout);
    // One session for the server's version, the ledger, the schema's fingerprint, the
    // write counters and the transaction horizon (each docker exec costs ~0.15 s).
    let facts = db.backup_facts().map_err(at(Stage::Preflight))?;
    let server = facts.server;
    // Compose mode runs the server's own pg_dump: its version is read from the dump.
    let pg_dump = match db.mode {
        crate::config::DbMode::Direct => {
            let pg_dump = db.pg_dump_version().map_err(at(Stage::Preflight))?;
            db.check_pg_dump(&server, &pg_dump)
                .map_err(at(Stage::Preflight))?;
            Some(pg_dump.text)
        }
        crate::config::DbMode::Compose => None,
    };
    let prisma = facts.prisma;
    let fingerprint = facts.fingerprint;
    let counters = facts.counters;
    let xid_horizon = facts.xid_horizon;

    let commit = match req.commit {
        Some(c) => Some(c.to_string()),
        None => git_commit(req.app_dir),
    };
    let created_at = Timestamp::now();
    // A remote may be shared by servers backing up at the same second: an id one of
    // them holds is taken too (its copy would be overwritten).
    let id = unique_id(catalog, req.label, created_at, commit.as_deref(), |id| {
        req.remotes.iter().any(|r| r.holds(id))
    });
    let file_name = format!("{id}{DATA_SUFFIX}");
    let final_path = catalog.path_of(&file_name);
    let temp = TempFile(catalog.path_of(&format!(".{file_name}.partial")));

    let threads = match req.settings.threads {
        // One worker per CPU, at most 4: memory grows with workers, speed stops growing.
        0 => std::thread::available_parallelism()
            .map(|n| n.get().min(MAX_DEFAULT_THREADS) as u32)
            .unwrap_or(1),
        n => n,
    };
    let started = Instant::now();
    // Our sessions carry a name of their own, so a killed dump's server session (which
    // may hold locks, or in compose mode keep running in the container) can be ended.
    let db = &db
        .clone()
        .with_application_name(&format!("stablehand-backup-{}", std::process::id()));
    let written = dump_to_file(db, &temp.0, &file_name, req, threads).inspect_err(|e| {
        if e.stage == Stage::Dump {
            match db.end_sessions() {
                Ok(n) if n > 0 => {
                    tracing::warn!("ended {n} database session(s) left by the failed pg_dump")
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!("could not end the failed pg_dump's database session: {err:#}")
                }
            }
        }
    })?;

    if written.size_bytes < req.settings.min_size {
        return Err(BackupFailed {
            stage: Stage::Check,
            cause: anyhow!(
                "the backup is only {} bytes, below backup.min_size ({} bytes); pg_dump produced {} bytes",
                written.size_bytes,
                req.settings.min_size,
                written.dump_bytes
            ),
        });
    }
    let local_enc = local_encryption(req.settings);
    let keys = match (&req.settings.encryption, &local_enc) {
        (Some(enc), Some(_)) => Some(
            super::crypt::Keys::load(enc)
                .context("an encrypted local backup is checked with the identity file")
                .map_err(at(Stage::Check))?,
        ),
        _ => None,
    };
    let toc = super::verify::check_file(
        db,
        &temp.0,
        false,
        req.settings.timeout,
        keys.as_ref().zip(local_enc.as_ref()),
    )
    .map_err(|e| anyhow!(e).context("the new dump failed its structural check"))
    .map_err(at(Stage::Check))?;
    let prisma_after = db
        .prisma_migrations()
        .context("reading _prisma_migrations after the dump")
        .map_err(at(Stage::Check))?;
    if prisma_after != prisma {
        return Err(at(Stage::Check)(anyhow!(
            "_prisma_migrations changed while the backup ran (a migration ran at the same time), so the dump's schema is uncertain; run the backup again when no migration is running"
        )));
    }
    let duration = started.elapsed();

    let manifest = Manifest {
        format_version: manifest::FORMAT_VERSION,
        id: id.clone(),
        label: req.label.to_string(),
        file: file_name,
        created_at,
        database: DatabaseInfo {
            name: db.name.clone(),
            mode: db.mode,
            server_version: server.text,
        },
        tools: ToolVersions {
            pg_dump: pg_dump
                .or_else(|| {
                    let by = toc.toc.dumped_by.as_deref()?;
                    crate::db::Version::parse_tool_output(by).map(|v| v.text)
                })
                .unwrap_or_default(),
            stablehand: env!("CARGO_PKG_VERSION").to_string(),
            zstd: zstd::zstd_safe::version_string().to_string(),
        },
        git_commit: commit,
        size_bytes: written.size_bytes,
        dump_bytes: written.dump_bytes,
        sha256: written.sha256,
        duration_ms: duration.as_millis() as u64,
        compression: Compression {
            algorithm: "zstd".into(),
            level: req.settings.compression_level,
            threads,
        },
        format: "pg_dump-custom".into(),
        prisma_migrations: prisma,
        schema_fingerprint: Some(fingerprint),
        write_counters: Some(counters),
        xid_horizon: Some(xid_horizon),
        encryption: local_encryption(req.settings),
        uploads: Vec::new(),
        origin: Some(manifest::Origin::here(req.app_dir)),
        pinned: false,
        verification_failure: None,
        verification: Some(Verification {
            at: Timestamp::now(),
            method: "structural".into(),
            toc_entries: toc.toc_entries,
            tables: None,
            rows: None,
        }),
    };
    let mut manifest = manifest;
    // Remote copies: the data is all sent; complete each upload, then its manifest.
    let (uploads, upload_failures) = complete_uploads(req.remotes, written.pending, &manifest);
    if req.settings.remote_required && !upload_failures.is_empty() {
        // Nothing is recorded anywhere: the copies that did complete are taken back.
        for u in &uploads {
            if let Some(r) = req.remotes.iter().find(|r| r.name == u.remote) {
                let mut copy = manifest.clone();
                copy.file = u.file.clone();
                let _ = r.delete(&copy);
            }
        }
        return Err(at(Stage::Upload)(anyhow!(
            "{}",
            upload_failures
                .iter()
                .map(|f| format!("remote {}: {}", f.remote, f.error))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    manifest.uploads = uploads;
    // Data file under its final name, then the manifest: the backup exists from the
    // moment the manifest lands, and never without its data file.
    fs_err::rename(&temp.0, &final_path)
        .map_err(anyhow::Error::from)
        .map_err(at(Stage::Manifest))?;
    temp.disarm();
    let placed = TempFile(final_path);
    if let Err(e) = manifest.write_atomic(&catalog.dir) {
        // The manifest may have landed before the failure (its directory fsync failed):
        // remove it too, so no manifest ever points at a missing file.
        let _ = std::fs::remove_file(Manifest::manifest_path(&catalog.dir, &manifest.id));
        return Err(at(Stage::Manifest)(e));
    }
    placed.disarm();
    Ok(Made {
        manifest,
        upload_failures,
    })
}

/// How local copies are encrypted (with `encrypt_local`), for the manifest.
fn local_encryption(settings: &BackupConfig) -> Option<super::crypt::Encryption> {
    settings
        .encryption
        .as_ref()
        .filter(|e| e.encrypt_local)
        .map(|e| super::crypt::describe(&e.recipients))
}

/// Completes the uploads whose data was all sent, then uploads each copy's manifest
/// (last: a copy counts from then on). Returns the copies made and the failures.
fn complete_uploads(
    remotes: &[crate::remote::Remote],
    pending: Vec<Pending>,
    manifest: &Manifest,
) -> (Vec<manifest::UploadRecord>, Vec<UploadFailure>) {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for p in pending {
        let Pending {
            remote: name,
            file,
            outcome,
            encryption,
        } = p;
        let result = outcome.and_then(|(upload, size_bytes, sha256)| {
            upload.finish()?;
            let remote = remotes
                .iter()
                .find(|r| r.name == name)
                .expect("pending uploads come from these remotes");
            let mut copy = manifest.clone();
            copy.file = file.clone();
            copy.size_bytes = size_bytes;
            copy.sha256 = sha256.clone();
            copy.encryption = encryption;
            copy.uploads = Vec::new();
            remote.put_manifest(&copy)?;
            Ok(manifest::UploadRecord {
                remote: name.clone(),
                at: Timestamp::now(),
                file: file.clone(),
                size_bytes,
                sha256,
            })
        });
        match result {
            Ok(record) => done.push(record),
            Err(e) => failed.push(UploadFailure {
                remote: name,
                error: format!("{e:#}"),
            }),
        }
    }
    (done, failed)
}

struct Written {
    size_bytes: u64,
    dump_bytes: u64,
    sha256: String,
    pending: Vec<Pending>,
}

/// A remote copy whose data went out with the dump: its upload (not yet completed),
/// size and SHA-256 of what was stored, or why it stopped.
struct Pending {
    remote: String,
    file: String,
    encryption: Option<super::crypt::Encryption>,
    outcome: anyhow::Result<(crate::remote::Upload, u64, String)>,
}

type Stored<W> = super::crypt::MaybeEncrypted<HashWriter<W>>;

/// Finishes a copy: the end of its age stream, then its hash.
fn finish_copy<W: Write>(w: Stored<W>) -> io::Result<(W, u64, String)> {
    Ok(w.finish()?.finish())
}

/// One remote's branch of the pipeline.
struct RemoteBranch {
    remote: String,
    file: String,
    encryption: Option<super::crypt::Encryption>,
    writer: Option<Stored<crate::remote::Upload>>,
    status: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    error: Option<String>,
}

/// What zstd writes into: the local file and every remote, each encrypted on its own
/// and hashed as stored. A remote that fails drops out; the local file never does.
struct Fanout {
    local: Stored<BufWriter<fs_err::File>>,
    remotes: Vec<RemoteBranch>,
}

impl Write for Fanout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.local.write_all(buf)?;
        for r in &mut self.remotes {
            if let Some(w) = &mut r.writer {
                if let Err(e) = w.write_all(buf) {
                    r.writer = None;
                    r.error = Some(
                        r.status
                            .lock()
                            .unwrap()
                            .clone()
                            .unwrap_or_else(|| e.to_string()),
                    );
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.local.flush()
    }
}

fn dump_to_file(
    db: &Database,
    path: &Path,
    file_name: &str,
    req: &Request,
    threads: u32,
) -> Result<Written, BackupFailed> {
    let file = crate::files::create_private(path)
        .with_context(|| format!("creating {}", path.display()))
        .map_err(at(Stage::Write))?;
    let encryption = req.settings.encryption.as_ref();
    let local = super::crypt::MaybeEncrypted::new(
        HashWriter::new(BufWriter::with_capacity(CHUNK, file)),
        encryption
            .filter(|e| e.encrypt_local)
            .map(|e| e.recipients.as_slice()),
    )
    .map_err(at(Stage::Write))?;
    let mut remotes = Vec::new();
    for r in req.remotes {
        let file = match encryption {
            Some(_) => format!("{file_name}{}", super::crypt::AGE_SUFFIX),
            None => file_name.to_string(),
        };
        let upload = r.upload(&file);
        let status = upload.status.clone();
        let writer = super::crypt::MaybeEncrypted::new(
            HashWriter::new(upload),
            encryption.map(|e| e.recipients.as_slice()),
        )
        .map_err(at(Stage::Write))?;
        remotes.push(RemoteBranch {
            remote: r.name.clone(),
            file,
            encryption: encryption.map(|e| super::crypt::describe(&e.recipients)),
            writer: Some(writer),
            status,
            error: None,
        });
    }
    let sink = Fanout { local, remotes };
    let mut encoder =
        FramedEncoder::new(sink, req.settings.compression_level, threads, FRAME_INPUT)
            .context("starting zstd")
            .map_err(at(Stage::Write))?;

    let mut running = db
        .dump_cmd()
        .timeout(req.settings.timeout)
        .spawn()
        .map_err(anyhow::Error::from)
        .map_err(at(Stage::Dump))?;
    let mut stdout = running.stdout.take().expect("stdout is piped");
    let progress = progress_bar(req.show_progress);

    let mut buf = vec![0u8; CHUNK];
    let mut dump_bytes: u64 = 0;
    let mut head = Vec::with_capacity(CUSTOM_FORMAT_MAGIC.len());
    let pumped: Result<(), BackupFailed> = loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                break Err(at(Stage::Dump)(
                    anyhow!(e).context("reading pg_dump's output"),
                ))
            }
        };
        if head.len() < CUSTOM_FORMAT_MAGIC.len() {
            let take = (CUSTOM_FORMAT_MAGIC.len() - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        dump_bytes += n as u64;
        progress.inc(n as u64);
        if let Err(e) = encoder.write_all(&buf[..n]) {
            break Err(at(Stage::Write)(
                anyhow!(e).context(format!("writing {}", path.display())),
            ));
        }
    };
    if let Err(e) = pumped {
        running.kill();
        let _ = running.wait();
        progress.finish_and_clear();
        return Err(e);
    }
    drop(stdout);
    // pg_dump's exit status decides first: a dump that died is a failed dump even if
    // everything it wrote was compressed fine.
    let waited = running.wait();
    progress.finish_and_clear();
    waited
        .map_err(anyhow::Error::from)
        .map_err(at(Stage::Dump))?;
    if head != CUSTOM_FORMAT_MAGIC {
        return Err(at(Stage::Dump)(anyhow!(
            "pg_dump exited 0 but its output does not start with the custom-format header ({dump_bytes} bytes)"
        )));
    }

    let finished = (|| -> anyhow::Result<Written> {
        let fanout = encoder.finish().context("finishing zstd")?;
        let (writer, size_bytes, sha256) = finish_copy(fanout.local)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let pending = fanout
            .remotes
            .into_iter()
            .map(|r| {
                let outcome = match (r.writer, r.error) {
                    (Some(w), _) => finish_copy(w).map_err(|e| {
                        anyhow!(
                            "{}",
                            r.status
                                .lock()
                                .unwrap()
                                .clone()
                                .unwrap_or_else(|| e.to_string())
                        )
                    }),
                    (None, error) => Err(anyhow!(
                        "{}",
                        error.unwrap_or_else(|| "the upload stopped".into())
                    )),
                };
                Pending {
                    remote: r.remote,
                    file: r.file,
                    encryption: r.encryption,
                    outcome,
                }
            })
            .collect();
        Ok(Written {
            size_bytes,
            dump_bytes,
            sha256,
            pending,
        })
    })()
    .with_context(|| format!("writing {}", path.display()))
    .map_err(at(Stage::Write))?;
    Ok(finished)
}

fn progress_bar(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} dumping: {bytes} read from pg_dump ({bytes_per_sec}), {elapsed}",
        )
        .expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Removes its file when dropped, unless disarmed.
struct TempFile(PathBuf);

impl TempFile {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Labels become part of file names: letters, digits, `.`, `-`, `_`.
pub fn validate_label(label: &str) -> anyhow::Result<()> {
    if label.is_empty()
        || label.len() > 64
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        || label.starts_with('.')
    {
        bail!("invalid label {label:?}: use 1-64 letters, digits, '.', '-' or '_' (not starting with '.')");
    }
    Ok(())
}

/// `<label>_<YYYYMMDD_HHMMSS>_<sha7|manual>`, with `_2`, `_3`... when taken here or
/// (`elsewhere`) on a remote.
fn unique_id(
    catalog: &Catalog,
    label: &str,
    at: Timestamp,
    commit: Option<&str>,
    elsewhere: impl Fn(&str) -> bool,
) -> String {
    let stamp = at
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y%m%d_%H%M%S")
        .to_string();
    let sha7 = commit
        .map(|c| crate::git::abbrev(c, 7).to_string())
        .unwrap_or_else(|| "manual".into());
    let base = format!("{label}_{stamp}_{sha7}");
    let taken = |id: &str| {
        catalog.path_of(&format!("{id}{DATA_SUFFIX}")).exists()
            || Manifest::manifest_path(&catalog.dir, id).exists()
            || elsewhere(id)
    };
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}_{n}"))
        .find(|id| !taken(id))
        .expect("some suffix is free")
}

/// The app's current commit, or None outside a git repository (or before its first
/// commit). Any other git failure is warned about, since the id then says "manual".
fn git_commit(app_dir: &Path) -> Option<String> {
    let result = crate::ownership::git_in(app_dir)
        .args(["rev-parse", "--verify", "HEAD"])
        .timeout(Duration::from_secs(30))
        .output();
    match result {
        Ok(s) => Some(s.trim().to_string())
            .filter(|s| s.len() >= 7 && s.chars().all(|c| c.is_ascii_hexdigit())),
        Err(crate::process::ProcessError::Failed { stderr_tail, .. })
            if stderr_tail.contains("not a git repository")
                || stderr_tail.contains("Needed a single revision") =>
        {
            None
        }
        Err(crate::process::ProcessError::NotFound { .. }) => None,
        Err(e) => {
            tracing::warn!(
                "could not read the app's git commit, recording the backup as \"manual\": {e}"
            );
            None
        }
    }
}

/// Input bytes per zstd frame. The backup is a sequence of independent frames (any
/// zstd reader decodes it as one stream), so a restore decompresses them on every
/// core; frames this long cost under 0.1% of compression ratio.
pub const FRAME_INPUT: u64 = 32 << 20;

/// A zstd encoder that ends its frame every `frame_input` bytes of input and starts
/// the next one (same level, same threads, each frame with its checksum).
struct FramedEncoder<W: Write> {
    current: Option<zstd::stream::write::Encoder<'static, W>>,
    level: i32,
    threads: u32,
    frame_input: u64,
    in_frame: u64,
}

impl<W: Write> FramedEncoder<W> {
    fn new(sink: W, level: i32, threads: u32, frame_input: u64) -> io::Result<Self> {
        Ok(FramedEncoder {
            current: Some(Self::frame(sink, level, threads)?),
            level,
            threads,
            frame_input,
            in_frame: 0,
        })
    }

    fn frame(
        sink: W,
        level: i32,
        threads: u32,
    ) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
        let mut e = zstd::stream::write::Encoder::new(sink, level)?;
        e.include_checksum(true)?;
        if threads > 1 {
            e.multithread(threads)?;
        }
        Ok(e)
    }

    /// The open frame (none only after ending one failed, which was reported).
    fn open(&mut self) -> io::Result<&mut zstd::stream::write::Encoder<'static, W>> {
        self.current
            .as_mut()
            .ok_or_else(|| io::Error::other("the previous zstd frame could not be ended"))
    }

    /// Ends the last frame and returns the sink.
    fn finish(mut self) -> io::Result<W> {
        self.open()?;
        self.current.take().expect("checked").finish()
    }
}

impl<W: Write> Write for FramedEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = (self.frame_input - self.in_frame) as usize;
        let n = self.open()?.write(&buf[..buf.len().min(room)])?;
        self.in_frame += n as u64;
        if self.in_frame == self.frame_input {
            let sink = self.current.take().expect("written to above").finish()?;
            self.current = Some(Self::frame(sink, self.level, self.threads)?);
            self.in_frame = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.open()?.flush()
    }
}

#[cfg(test)]
mod tests;
