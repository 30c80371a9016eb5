//! Checking a backup file: size and SHA-256 against the manifest, complete zstd
//! decompression (the frame checksum catches corruption), and `pg_restore --list` on the
//! decompressed stream to prove the dump's table of contents is readable.

use std::io::{self, Read, Write};
use std::path::Path;

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::db::Database;
use crate::process::ProcessError;

/// What reading a backup file found.
#[derive(Debug, Clone)]
pub struct FileCheck {
    /// Bytes of the stored file read (all of it when `read_all`).
    pub size_bytes: u64,
    /// SHA-256 of the stored file (only meaningful when `read_all`).
    pub sha256: String,
    /// Entries listed by `pg_restore --list`.
    pub toc_entries: u64,
    /// The archive's table of contents, read field by field.
    pub toc: super::toc::Toc,
    /// Rows per table (`schema.name`), counted in the archive's data as it was read
    /// whole; None when it was not read whole or pg_dump compressed the data itself.
    pub rows: Option<std::collections::BTreeMap<String, u64>>,
}

/// Why a check did not pass: the backup is bad, or it could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file is damaged, truncated or not a dump.
    #[error("{0:#}")]
    Damaged(anyhow::Error),
    /// A tool, the container or the machine got in the way (or stablehand was
    /// interrupted); nothing is known about the backup.
    #[error("could not check: {0:#}")]
    Unchecked(anyhow::Error),
}

fn damaged(e: impl Into<anyhow::Error>) -> CheckError {
    CheckError::Damaged(e.into())
}

fn unchecked(e: impl Into<anyhow::Error>) -> CheckError {
    CheckError::Unchecked(e.into())
}

/// Reads a backup file through zstd into `pg_restore --list`, killed after `limit`.
/// With `read_all`, the whole file is hashed and decompressed to its end; without it,
/// reading stops once pg_restore has what it needs (the table of contents at the front).
pub fn check_file(
    db: &Database,
    path: &Path,
    read_all: bool,
    limit: Duration,
    keys: Option<(&super::crypt::Keys, &super::crypt::Encryption)>,
) -> Result<FileCheck, CheckError> {
    let file = fs_err::File::open(path).map_err(damaged)?;
    let mut hashing = HashReader::new(file);
    let plain: Box<dyn Read + '_> = match keys {
        None => Box::new(&mut hashing),
        Some((k, enc)) => k
            .open(&mut hashing, &path.display().to_string(), enc)
            .map_err(|e| {
                // A missing key says nothing about the file; a broken header does.
                if format!("{e:#}").contains("none of the identities") {
                    unchecked(e)
                } else {
                    damaged(e)
                }
            })?,
    };
    let mut decoder = zstd::stream::read::Decoder::new(plain).map_err(damaged)?;

    let mut running = db
        .list_toc_cmd()
        .timeout(limit)
        .spawn_with_stdin()
        .map_err(unchecked)?;
    let mut stdin = running.stdin.take().expect("stdin is piped");
    let mut stdout = running.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });

    let mut buf = vec![0u8; 1 << 20];
    let mut feeding = true;
    let mut decode_error = None;
    // The front of the archive, kept until its table of contents reads whole.
    let mut scan = super::toc::ArchiveScan::default();
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                decode_error = Some(e);
                break;
            }
        };
        scan.push(&buf[..n]);
        if feeding {
            if let Err(e) = stdin.write_all(&buf[..n]) {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    return Err(unchecked(
                        anyhow::Error::from(e).context("feeding pg_restore"),
                    ));
                }
                // pg_restore has read the table of contents and exited.
                feeding = false;
            }
        }
        if !feeding && !read_all && scan.has_toc() {
            break;
        }
    }
    drop(stdin);
    let listing = reader.join().expect("reader thread");
    let status = running.wait();

    let mut inner = decoder.finish();
    if read_all {
        // Read whatever the decoder did not need (an age stream checks its last tag),
        // then hash the stored bytes to their end (trailing bytes count as corruption).
        io::copy(inner.get_mut(), &mut io::sink()).map_err(damaged)?;
    }
    drop(inner);
    if read_all {
        io::copy(&mut hashing, &mut io::sink()).map_err(damaged)?;
    }
    if let Some(e) = decode_error {
        return Err(damaged(anyhow::anyhow!(
            "the compressed stream is damaged: {e}"
        )));
    }
    match status {
        Ok(_) => {}
        Err(e @ ProcessError::Failed { .. }) => {
            return Err(damaged(
                anyhow::Error::from(e)
                    .context("pg_restore could not read the dump's table of contents"),
            ))
        }
        Err(e) => return Err(unchecked(e)),
    }
    let listing = listing.map_err(unchecked)?;
    let (size, sha) = hashing.finish();
    let (toc, rows) = scan.finish(read_all).map_err(damaged)?;
    let mut check = FileCheck::from_listing(size, sha, &listing, toc)?;
    check.rows = rows;
    Ok(check)
}

impl FileCheck {
    /// The check of a file whose `pg_restore --list` output is `listing`; an empty table
    /// of contents means the dump is empty, which no backup may be.
    pub fn from_listing(
        size_bytes: u64,
        sha256: String,
        listing: &str,
        toc: super::toc::Toc,
    ) -> Result<FileCheck, CheckError> {
        let toc_entries = listing
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
            .count() as u64;
        if toc_entries == 0 {
            return Err(damaged(anyhow::anyhow!(
                "pg_restore listed no entries: the dump is empty"
            )));
        }
        Ok(FileCheck {
            size_bytes,
            sha256,
            toc_entries,
            toc,
            rows: None,
        })
    }
}

/// The stored file has the size its manifest records (a cheap first check that catches
/// truncation before any decompression).
pub fn check_size(path: &Path, m: &crate::backup::manifest::Manifest) -> Result<(), CheckError> {
    let on_disk = fs_err::metadata(path).map_err(damaged)?.len();
    if on_disk != m.size_bytes {
        return Err(damaged(anyhow::anyhow!(
            "size mismatch: the manifest says {} bytes, the file has {on_disk}",
            m.size_bytes
        )));
    }
    Ok(())
}

/// A reader that hashes and counts what passes through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes read and their SHA-256 (hex).
    pub fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
