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

/// How the data entries of an archive are split between parallel loaders: each list
/// holds dump ids in archive order (each loader reads the whole stream and skips the
/// blocks that are not on its list). `sizes` (bytes per `schema.name`, from the live
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

/// How far the decompressed copy has been written, for the loaders that follow it.
#[derive(Default)]
struct Written {
    state: std::sync::Mutex<(u64, bool)>,
    grew: std::sync::Condvar,
}

impl Written {
    fn advance(&self, bytes: u64) {
        self.state.lock().expect("progress lock").0 += bytes;
        self.grew.notify_all();
    }

    fn end(&self) {
        self.state.lock().expect("progress lock").1 = true;
        self.grew.notify_all();
    }

    /// Waits until more than `pos` bytes are written or the writing ended; returns
    /// (written, ended).
    fn wait_past(&self, pos: u64) -> (u64, bool) {
        let mut state = self.state.lock().expect("progress lock");
        while state.0 <= pos && !state.1 {
            state = self.grew.wait(state).expect("progress lock");
        }
        *state
    }
}

/// Loads the data with parallel loaders: the pass that checks the stored file writes
/// the decompressed archive to `copy` (0600), `pre_data` runs meanwhile, then each of
/// `loaders` (pg_restore reading stdin, each with its own list) is fed that copy from
/// its start, following the writer. Checks as `load` does; the copy is left complete
/// (the caller restores the post-data entries from it and removes it).
pub fn load_parallel(
    pre_data: Cmd,
    loaders: Vec<Cmd>,
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
                written.advance(b.len() as u64);
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
                    .map(|cmd| scope.spawn(move || follow(cmd, copy, written)))
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

/// Feeds the decompressed copy at `copy` to the pg_restore `cmd` from its start as it
/// is written; returns how pg_restore ended.
fn follow(cmd: Cmd, copy: &Path, written: &Written) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = fs_err::File::open(copy)?;
    let mut running = cmd.spawn_with_stdin()?;
    let mut stdin = running.stdin.take().expect("stdin is piped");
    let mut stdout = running.stdout.take().expect("stdout is piped");
    let drain = std::thread::spawn(move || io::copy(&mut stdout, &mut io::sink()));
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let fed = (|| -> io::Result<()> {
        loop {
            let (end, ended) = written.wait_past(pos);
            while pos < end {
                let want = ((end - pos) as usize).min(buf.len());
                let n = file.file().read_at(&mut buf[..want], pos)?;
                if n == 0 {
                    return Err(io::Error::other("the decompressed copy shrank"));
                }
                stdin.write_all(&buf[..n])?;
                pos += n as u64;
            }
            if ended {
                return Ok(());
            }
        }
    })();
    drop(stdin);
    let status = running.wait();
    let _ = drain.join();
    status.map_err(|e| anyhow!(e).context("pg_restore failed (data)"))?;
    match fed {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow!(e).context("feeding the backup to pg_restore"))
        }
        _ => Ok(()),
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
            deps: Vec::new(),
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
