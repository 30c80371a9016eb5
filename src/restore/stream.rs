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
        let (decoded, rest, scan, hashed) = decoder.join().expect("the decoder thread");
        let rows = check_pass(decoded, rest, scan, hashed, expected)?;
        restored.map_err(LoadError::Restore)?;
        Ok(Loaded { rows })
    })
}

/// Runs pg_restore (`cmd`, reading stdin) while `feed` writes its input; returns how
/// pg_restore ended. pg_restore may stop reading once it has what it needs: a broken
/// pipe after a successful pg_restore is no error.
pub fn run_fed(
    cmd: Cmd,
    what: &str,
    feed: impl FnOnce(&mut std::process::ChildStdin) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut running = cmd.spawn_with_stdin()?;
    let mut stdin = running.stdin.take().expect("stdin is piped");
    let mut stdout = running.stdout.take().expect("stdout is piped");
    let drain = std::thread::spawn(move || io::copy(&mut stdout, &mut io::sink()));
    let fed = feed(&mut stdin);
    drop(stdin);
    let status = running.wait();
    let _ = drain.join();
    status.map_err(|e| anyhow!(e).context(format!("pg_restore failed{what}")))?;
    match fed {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow!(e).context("feeding the backup to pg_restore"))
        }
        _ => Ok(()),
    }
}

/// Starts pg_restore and writes the decompressed pieces to its stdin until they end or
/// it stops reading; returns how pg_restore ended.
fn feed(cmd: Cmd, pieces: &mpsc::Receiver<Vec<u8>>) -> anyhow::Result<()> {
    run_fed(cmd, "", |stdin| {
        for piece in pieces.iter() {
            // An error: pg_restore stopped reading (it failed, or needs nothing more).
            stdin.write_all(&piece)?;
        }
        Ok(())
    })
}

/// How the data entries of an archive are split between parallel loaders: each list
/// holds dump ids in archive order (each loader is fed the blocks of its list, in that
/// order). `sizes` (bytes per `schema.name`, from the live
/// database when it exists) balance the tables, largest first onto the least loaded
/// list; the data-section entries that are not table data (sequence values, large
/// objects, their comments) all go to the first list.
pub fn split_data(toc: &Toc, workers: usize, sizes: &BTreeMap<String, u64>) -> Vec<Vec<i64>> {
    let mut section = toc::SECTION_PRE_DATA;
    let mut tables = Vec::new();
    let mut rest = Vec::new();
    for (at, e) in toc.entries.iter().enumerate() {
        // An entry outside any section belongs to the section of the one before it
        // (as pg_restore decides).
        if e.section != toc::SECTION_NONE {
            section = e.section;
        }
        if section != toc::SECTION_DATA {
            continue;
        }
        if e.desc == "TABLE DATA" {
            let name = format!("{}.{}", e.namespace.as_deref().unwrap_or(""), e.tag);
            // An unknown table weighs as much as a page: order alone then spreads them.
            tables.push((at, e.dump_id, sizes.get(&name).copied().unwrap_or(8192)));
        } else {
            rest.push((at, e.dump_id));
        }
    }
    let workers = workers.clamp(1, tables.len().max(1));
    let mut lists: Vec<(u64, Vec<(usize, i64)>)> = vec![(0, Vec::new()); workers];
    lists[0].1.extend(rest);
    let mut by_size = tables;
    by_size.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    for (at, id, size) in by_size {
        let lightest = (0..lists.len())
            .min_by_key(|&i| (lists[i].0, i))
            .expect("at least one list");
        lists[lightest].0 += size.max(1);
        lists[lightest].1.push((at, id));
    }
    lists
        .into_iter()
        .map(|(_, mut l)| {
            l.sort();
            l.into_iter().map(|(_, id)| id).collect()
        })
        .filter(|l: &Vec<i64>| !l.is_empty())
        .collect()
}

/// How far the decompressed copy has been written, and where its data blocks are, for
/// the loaders that follow it.
#[derive(Default)]
struct Written {
    state: std::sync::Mutex<Progress>,
    grew: std::sync::Condvar,
}

#[derive(Default)]
struct Progress {
    bytes: u64,
    ended: bool,
    blocks: Vec<toc::Block>,
}

impl Written {
    fn advance(&self, bytes: u64, blocks: &[toc::Block]) {
        let mut state = self.state.lock().expect("progress lock");
        state.bytes += bytes;
        // Only the blocks met since, and the last one (its end may be new), change.
        let keep = state.blocks.len().saturating_sub(1).min(blocks.len());
        state.blocks.truncate(keep);
        state.blocks.extend_from_slice(&blocks[keep..]);
        drop(state);
        self.grew.notify_all();
    }

    fn end(&self) {
        self.state.lock().expect("progress lock").ended = true;
        self.grew.notify_all();
    }

    /// Waits until `ready` says what to copy (Some) or the writing ended; returns what
    /// `ready` found last.
    fn wait_for<T>(&self, mut ready: impl FnMut(&Progress) -> Option<T>) -> Option<T> {
        let mut state = self.state.lock().expect("progress lock");
        loop {
            if let Some(found) = ready(&state) {
                return Some(found);
            }
            if state.ended {
                return ready(&state);
            }
            state = self.grew.wait(state).expect("progress lock");
        }
    }
}

/// Loads the data with parallel loaders: the pass that checks the stored file writes
/// the decompressed archive to `copy` (0600), `pre_data` runs meanwhile, then each of
/// `loaders` (pg_restore reading stdin with its own list, and the ids of that list's
/// entries that have data blocks) is fed the archive's front and its own blocks from
/// that copy, following the writer. Checks as `load` does.
pub fn load_parallel(
    pre_data: Cmd,
    loaders: Vec<(Cmd, Vec<i64>)>,
    data_start: u64,
    path: &Path,
    copy: &Path,
    expected: (u64, &str),
    workers: usize,
) -> Result<Loaded, LoadError> {
    let file = fs_err::File::open(path).map_err(|e| LoadError::Unreadable(e.into()))?;
    let mut out = crate::backup::manifest::create_private(copy)
        .map_err(|e| LoadError::Unreadable(e.into()))?;
    let written = Written::default();
    std::thread::scope(|scope| {
        let written = &written;
        let decoder = scope.spawn(move || {
            let mut hashing = crate::backup::verify::HashReader::new(file);
            let mut scan = ArchiveScan::default();
            let decoded = crate::backup::frames::decompress_owned(&mut hashing, workers, |b| {
                scan.push(&b);
                out.write_all(&b)?;
                written.advance(b.len() as u64, scan.blocks());
                Ok(())
            });
            written.end();
            let rest = io::copy(&mut hashing, &mut io::sink());
            (decoded, rest, scan, hashing.finish())
        });
        let before = pre_data
            .output()
            .map(drop)
            .map_err(|e| anyhow!(e).context("pg_restore failed (schema)"));
        let loaded: Vec<anyhow::Result<()>> = match &before {
            Ok(()) => {
                let feeders: Vec<_> = loaders
                    .into_iter()
                    .map(|(cmd, ids)| {
                        scope.spawn(move || follow(cmd, &ids, data_start, copy, written))
                    })
                    .collect();
                feeders
                    .into_iter()
                    .map(|f| f.join().expect("a loader thread"))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let (decoded, rest, scan, (size, sha)) = decoder.join().expect("the decoder thread");
        check_pass(decoded, rest, scan, (size, sha), expected).and_then(|rows| {
            before.map_err(LoadError::Restore)?;
            for l in loaded {
                l.map_err(LoadError::Restore)?;
            }
            Ok(Loaded { rows })
        })
    })
}

/// Feeds the pg_restore `cmd` the archive's front (its first `data_start` bytes) and
/// then the data blocks of `ids`, in order, from the decompressed copy at `copy` as it
/// is written; returns how pg_restore ended. (pg_restore reading a stream takes the
/// blocks it needs in order and never misses those it skips.)
fn follow(
    cmd: Cmd,
    ids: &[i64],
    data_start: u64,
    copy: &Path,
    written: &Written,
) -> anyhow::Result<()> {
    let file = fs_err::File::open(copy)?;
    let mut buf = vec![0u8; 1 << 20];
    run_fed(cmd, " (data)", |stdin| {
        copy_range(&file, stdin, &mut buf, written, 0, |p| {
            Some((p.bytes.min(data_start), p.bytes >= data_start))
        })?;
        let mut seen = 0;
        for id in ids {
            // The block's start, once it was met (blocks come in archive order).
            let found = written.wait_for(|p| {
                p.blocks[seen.min(p.blocks.len())..]
                    .iter()
                    .position(|b| b.dump_id == *id)
                    .map(|i| (seen + i, p.blocks[seen + i].start))
            });
            let Some((index, start)) = found else {
                return Err(io::Error::other(format!(
                    "entry {id} has no data block in the archive"
                )));
            };
            seen = index + 1;
            copy_range(&file, stdin, &mut buf, written, start, |p| {
                match p.blocks[index].end {
                    Some(end) => Some((end, true)),
                    None => Some((p.bytes, false)),
                }
            })?;
        }
        Ok(())
    })
}

/// Copies the copy's bytes from `from` to `out` as they are written, up to where
/// `until` says (the end so far, and whether it is final).
fn copy_range(
    file: &fs_err::File,
    out: &mut impl Write,
    buf: &mut [u8],
    written: &Written,
    from: u64,
    mut until: impl FnMut(&Progress) -> Option<(u64, bool)>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut pos = from;
    loop {
        let limit = written.wait_for(|p| until(p).filter(|&(end, last)| last || end > pos));
        let Some((end, last)) = limit else {
            return Err(io::Error::other("the decompressed archive ended early"));
        };
        while pos < end {
            let want = ((end - pos) as usize).min(buf.len());
            let n = file.file().read_at(&mut buf[..want], pos)?;
            if n == 0 {
                return Err(io::Error::other(
                    "the decompressed copy is shorter than written",
                ));
            }
            out.write_all(&buf[..n])?;
            pos += n as u64;
        }
        if last {
            return Ok(());
        }
    }
}

/// The verdict of the pass over the stored file: damaged, unreadable, or its rows.
fn check_pass(
    decoded: Result<(), crate::backup::frames::FrameError>,
    rest: io::Result<u64>,
    scan: ArchiveScan,
    (size, sha): (u64, String),
    expected: (u64, &str),
) -> Result<BTreeMap<String, u64>, LoadError> {
    decoded.map_err(|e| match e {
        crate::backup::frames::FrameError::Damaged(e) => {
            LoadError::Damaged(anyhow!("the compressed stream is damaged: {e}"))
        }
        crate::backup::frames::FrameError::Sink(e) => LoadError::Unreadable(anyhow!(e)),
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
    Ok(rows.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::toc::TocEntry;

    fn entry(dump_id: i64, desc: &str, tag: &str, section: i64) -> TocEntry {
        TocEntry {
            dump_id,
            desc: desc.into(),
            namespace: Some("public".into()),
            tag: tag.into(),
            owner: None,
            section,
            has_data: desc == "TABLE DATA" || desc == "BLOBS",
        }
    }

    fn toc(entries: Vec<TocEntry>) -> Toc {
        Toc {
            version: (1, 14, 0),
            database: None,
            entries,
            data_start: 0,
            int_size: 4,
            compressed: false,
        }
    }

    #[test]
    fn data_is_split_largest_first_and_each_list_keeps_archive_order() {
        let t = toc(vec![
            entry(1, "TABLE", "a", 2),
            entry(2, "TABLE DATA", "a", 3),
            entry(3, "TABLE DATA", "b", 3),
            entry(4, "TABLE DATA", "c", 3),
            entry(5, "TABLE DATA", "d", 3),
            entry(6, "SEQUENCE SET", "a_id_seq", 3),
            entry(7, "BLOBS", "BLOBS", 3),
            entry(8, "COMMENT", "LARGE OBJECT 1", 1),
            entry(9, "INDEX", "a_idx", 4),
            entry(10, "ACL", "TABLE a", 1),
        ]);
        let sizes: BTreeMap<String, u64> = [
            ("public.a", 100),
            ("public.b", 900),
            ("public.c", 300),
            ("public.d", 500),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // b (900) | d (500), c (300), a (100): the rest of the data section with the
        // first list; the comment after the large objects is data too, the ACL after
        // the index is not.
        assert_eq!(
            split_data(&t, 2, &sizes),
            vec![vec![3, 6, 7, 8], vec![2, 4, 5]]
        );
        assert_eq!(split_data(&t, 1, &sizes), vec![vec![2, 3, 4, 5, 6, 7, 8]]);
        // More workers than tables: one list per table; unknown sizes spread by order.
        assert_eq!(split_data(&t, 8, &BTreeMap::new()).len(), 4);
        assert_eq!(
            split_data(&toc(vec![entry(1, "TABLE", "a", 2)]), 2, &sizes),
            Vec::<Vec<i64>>::new()
        );
    }
}
