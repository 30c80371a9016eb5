//! Restoring while checking: one pass over the stored backup hashes it, decompresses
//! its frames on every core, counts each table's rows and feeds the schema and the data
//! to `pg_restore` as they come; the indexes and constraints are then built in parallel
//! from the archive's table of contents alone (post-data entries carry no data). No
//! decompressed copy of the backup is written, and the check costs no pass of its own.
//!
//! The new database is only ever a copy: when the hash, the frames or the rows turn out
//! wrong, the caller drops it and the live database was never touched.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc;

use anyhow::anyhow;

use crate::backup::toc::{self, ArchiveScan, Toc, TocError};
use crate::process::Cmd;

/// Decompressed pieces queued between the decoder and pg_restore's stdin (each up to a
/// frame, `create::FRAME_INPUT` bytes).
const QUEUED: usize = 4;

/// The most of a backup's front decompressed to find the end of its table of contents.
const FRONT_LIMIT: usize = 512 << 20;

/// Why loading the data stopped.
#[derive(Debug)]
pub enum LoadError {
    /// The stored file is damaged: its frames, size, SHA-256 or data blocks are wrong.
    Damaged(anyhow::Error),
    /// The file could not be read.
    Unreadable(anyhow::Error),
    /// pg_restore failed on a backup that checked out.
    Restore(anyhow::Error),
}

/// What the pass that loaded the data found.
pub struct Loaded {
    /// Rows per table (`schema.name`), counted in the archive.
    pub rows: BTreeMap<String, u64>,
}

/// The archive's front: its header and table of contents (what `pg_restore --list`
/// reads, and all that a post-data restore needs), decompressed from the start of the
/// stored file.
pub fn read_front(path: &Path) -> Result<(Toc, Vec<u8>), LoadError> {
    let file = fs_err::File::open(path).map_err(|e| LoadError::Unreadable(e.into()))?;
    let mut decoder = zstd::stream::read::Decoder::new(file)
        .map_err(|e| LoadError::Damaged(anyhow!("the compressed stream is damaged: {e}")))?;
    let mut front = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(LoadError::Damaged(anyhow!(
                    "the compressed stream is damaged: {e}"
                )))
            }
        };
        front.extend_from_slice(&buf[..n]);
        match toc::read(&front[..]) {
            Ok(toc) => {
                front.truncate(toc.data_start as usize);
                return Ok((toc, front));
            }
            Err(TocError::Truncated) if n > 0 && front.len() < FRONT_LIMIT => {}
            Err(e) => return Err(LoadError::Damaged(anyhow!(e))),
        }
    }
}

/// Runs `pg_restore` (`cmd`, which reads the archive from stdin; the caller chose its
/// sections) on the backup at `path`, while the same pass checks the stored file
/// against `expected` (size, SHA-256) and counts the rows. A damaged file is reported
/// as damaged even when pg_restore also failed on it.
pub fn load(
    cmd: Cmd,
    path: &Path,
    expected: (u64, &str),
    workers: usize,
) -> Result<Loaded, LoadError> {
    let file = fs_err::File::open(path).map_err(|e| LoadError::Unreadable(e.into()))?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUED);
    std::thread::scope(|scope| {
        let decoder = scope.spawn(move || {
            let mut hashing = crate::backup::verify::HashReader::new(file);
            let mut scan = ArchiveScan::default();
            let decoded = crate::backup::frames::decompress_owned(&mut hashing, workers, |b| {
                scan.push(&b);
                tx.send(b)
                    .map_err(|_| io::Error::other("the restore stopped taking data"))
            });
            drop(tx);
            let rest = io::copy(&mut hashing, &mut io::sink());
            (decoded, rest, scan, hashing.finish())
        });
        let restored = feed(cmd, &rx);
        // Whatever pg_restore did, the decoder runs to the end: only the whole pass
        // tells a damaged file from a failed restore.
        for _ in rx.iter() {}
        let (decoded, rest, scan, (size, sha)) = decoder.join().expect("the decoder thread");
        decoded.map_err(|e| match e {
            crate::backup::frames::FrameError::Damaged(e) => {
                LoadError::Damaged(anyhow!("the compressed stream is damaged: {e}"))
            }
            crate::backup::frames::FrameError::Sink(e) => LoadError::Restore(anyhow!(e)),
        })?;
        rest.map_err(|e| LoadError::Unreadable(e.into()))?;
        if size != expected.0 || sha != expected.1 {
            return Err(LoadError::Damaged(anyhow!(
                "{} mismatch: the manifest says {} bytes with SHA-256 {}, the file has {size} bytes hashing to {sha}",
                if size != expected.0 { "size" } else { "SHA-256" },
                expected.0,
                expected.1
            )));
        }
        let (_, rows) = scan
            .finish(true)
            .map_err(|e| LoadError::Damaged(e.into()))?;
        restored.map_err(LoadError::Restore)?;
        Ok(Loaded {
            rows: rows.unwrap_or_default(),
        })
    })
}

/// Starts pg_restore and writes the decompressed pieces to its stdin until they end or
/// it stops reading; returns how pg_restore ended.
fn feed(cmd: Cmd, pieces: &mpsc::Receiver<Vec<u8>>) -> anyhow::Result<()> {
    let mut running = cmd.spawn_with_stdin()?;
    let mut stdin = running.stdin.take().expect("stdin is piped");
    let mut stdout = running.stdout.take().expect("stdout is piped");
    let drain = std::thread::spawn(move || io::copy(&mut stdout, &mut io::sink()));
    let mut fed: io::Result<()> = Ok(());
    for piece in pieces.iter() {
        if let Err(e) = stdin.write_all(&piece) {
            // pg_restore stopped reading: it failed, or it needs nothing after this.
            fed = Err(e);
            break;
        }
    }
    drop(stdin);
    let status = running.wait();
    let _ = drain.join();
    status.map_err(|e| anyhow!(e).context("pg_restore failed"))?;
    if let Err(e) = fed {
        if e.kind() != io::ErrorKind::BrokenPipe {
            return Err(anyhow!(e).context("feeding the backup to pg_restore"));
        }
    }
    Ok(())
}
