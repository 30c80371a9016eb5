//! Restoring while checking. With one job, one pass over the stored backup hashes it,
//! decompresses its frames on every core, counts each table's rows and feeds the schema
//! and the data to one `pg_restore`. With parallel jobs, each loader decompresses the
//! stored file on its own and feeds its `pg_restore` only its own tables' data blocks
//! (then builds their indexes), while one more pass hashes the file. The indexes and
//! constraints left are then built in parallel from the archive's table of contents
//! alone (post-data entries carry no data). No decompressed copy is written.
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

/// The indexes and constraints that can be built as soon as one loader's data is in:
/// `INDEX` and `CONSTRAINT` (primary key, unique, exclusion) entries that depend on
/// tables of that loader's list alone. One list per loader (in archive order), and
/// every other entry of the archive: the post-data restore after all the data takes
/// those (with `--section=post-data`, so only the post-data ones are restored).
pub fn split_post_data(toc: &Toc, lists: &[Vec<i64>]) -> (Vec<Vec<i64>>, Vec<i64>) {
    let by_id: BTreeMap<i64, &toc::TocEntry> = toc.entries.iter().map(|e| (e.dump_id, e)).collect();
    // Which loader fills each table (the table data entries depend on their table).
    let mut loader_of = BTreeMap::new();
    for (k, list) in lists.iter().enumerate() {
        for id in list {
            let Some(e) = by_id.get(id) else { continue };
            if e.desc == "TABLE DATA" {
                for dep in &e.deps {
                    if by_id.get(dep).is_some_and(|t| t.desc == "TABLE") {
                        loader_of.insert(*dep, k);
                    }
                }
            }
        }
    }
    let mut early = vec![Vec::new(); lists.len()];
    let mut rest = Vec::new();
    for e in &toc.entries {
        let mut loaders = e.deps.iter().map(|d| loader_of.get(d));
        let first = loaders.next().flatten();
        let alone = match first {
            Some(k) if matches!(e.desc.as_str(), "INDEX" | "CONSTRAINT") => {
                loaders.all(|l| l == Some(k)).then_some(*k)
            }
            _ => None,
        };
        match alone {
            Some(k) => early[k].push(e.dump_id),
            None => rest.push(e.dump_id),
        }
    }
    (early, rest)
}

/// One of the parallel loaders of `load_parallel`.
pub struct Loader {
    /// pg_restore reading the archive from stdin, with its own list.
    pub cmd: Cmd,
    /// The ids of that list's entries that have data blocks.
    pub blocks: Vec<i64>,
    /// What to run once its data is in (the indexes on its tables alone), if anything.
    pub then: Option<Cmd>,
}

/// Loads the data with parallel loaders: `pre_data` runs first, then each of `loaders`
/// decompresses the stored file on its own (nothing decompressed is written or shared:
/// no loader waits for another) and feeds its pg_restore the archive's front and its
/// own blocks, counting their rows, then runs its `then`; meanwhile one more pass
/// hashes the stored file. Damage found by the hash or by any loader is reported as
/// damage even when pg_restore also failed.
pub fn load_parallel(
    pre_data: Cmd,
    loaders: Vec<Loader>,
    toc: &Toc,
    path: &Path,
    expected: (u64, &str),
) -> Result<Loaded, LoadError> {
    std::thread::scope(|scope| {
        let hasher = scope.spawn(|| -> io::Result<(u64, String)> {
            let mut hashing = crate::backup::verify::HashReader::new(fs_err::File::open(path)?);
            io::copy(&mut hashing, &mut io::sink())?;
            Ok(hashing.finish())
        });
        let before = pre_data
            .output()
            .map(drop)
            .map_err(|e| anyhow!(e).context("pg_restore failed (schema)"));
        let loaded: Vec<Result<BTreeMap<i64, u64>, LoadError>> = match &before {
            Ok(()) => {
                let running: Vec<_> = loaders
                    .into_iter()
                    .map(|l| scope.spawn(move || load_own(l, toc, path)))
                    .collect();
                running
                    .into_iter()
                    .map(|r| r.join().expect("a loader thread"))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let hashed = hasher
            .join()
            .expect("the hashing thread")
            .map_err(|e| LoadError::Unreadable(e.into()))?;
        check_hash(hashed, expected)?;
        // Damage first, then a file that could not be read, then a failed restore.
        let rank = |e: &LoadError| match e {
            LoadError::Damaged(_) => 0,
            LoadError::Unreadable(_) => 1,
            LoadError::Restore(_) => 2,
        };
        let mut found: Vec<BTreeMap<i64, u64>> = Vec::new();
        let mut failed: Option<LoadError> = None;
        for l in loaded {
            match l {
                Ok(rows) => found.push(rows),
                Err(e) if failed.as_ref().is_none_or(|f| rank(&e) < rank(f)) => failed = Some(e),
                Err(_) => {}
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        before.map_err(LoadError::Restore)?;
        let rows = toc
            .entries
            .iter()
            .filter(|e| e.desc == "TABLE DATA")
            .map(|e| {
                let name = format!("{}.{}", e.namespace.as_deref().unwrap_or(""), e.tag);
                let counted = found.iter().filter_map(|f| f.get(&e.dump_id)).sum();
                (name, counted)
            })
            .collect();
        Ok(Loaded { rows })
    })
}

/// One loader: decompresses the stored file at `path` from its start, feeds its
/// pg_restore the front and its own blocks (and stops once they are all in), then runs
/// its `then`; returns the rows of its own entries.
fn load_own(l: Loader, toc: &Toc, path: &Path) -> Result<BTreeMap<i64, u64>, LoadError> {
    let file = fs_err::File::open(path).map_err(|e| LoadError::Unreadable(e.into()))?;
    let damaged =
        |e: io::Error| LoadError::Damaged(anyhow!("the compressed stream is damaged: {e}"));
    let mut decoder = zstd::stream::read::Decoder::new(file).map_err(damaged)?;
    let own: std::collections::HashSet<i64> = l.blocks.iter().copied().collect();
    let Some(counter) = toc::RowCounter::new(toc) else {
        return Err(LoadError::Restore(anyhow!(
            "the archive's data is compressed by pg_dump: its blocks cannot be found"
        )));
    };
    let mut counter = counter.counting_only(own.clone());
    let mut picker = Picker::new(toc.data_start, own);
    let mut broken = None;
    let fed = run_fed(l.cmd, " (data)", |stdin| {
        let mut buf = vec![0u8; 1 << 20];
        while !picker.done() {
            let n = match decoder.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            };
            counter.push(&buf[..n]);
            picker.take(&buf[..n], counter.blocks(), stdin)?;
        }
        Ok(())
    });
    if let Some(e) = broken {
        return Err(damaged(e));
    }
    if !picker.done() {
        return Err(LoadError::Damaged(anyhow!(
            "the archive ended before the data of {} of its entries",
            picker.left
        )));
    }
    fed.map_err(LoadError::Restore)?;
    // Every own block was read whole (done); table data has rows, large objects none.
    let rows = l
        .blocks
        .iter()
        .filter_map(|id| counter.rows_of(*id).map(|r| (*id, r)))
        .collect();
    if let Some(then) = l.then {
        then.output().map_err(|e| {
            LoadError::Restore(anyhow!(e).context("pg_restore failed (indexes and constraints)"))
        })?;
    }
    Ok(rows)
}

/// Picks one loader's bytes out of the decompressed archive as it streams past: the
/// front (header and table of contents), then the data blocks of its own entries; the
/// other blocks are skipped. Bytes whose block is not known yet (its header was cut
/// between two reads) are held until it is.
struct Picker {
    data_start: u64,
    own: std::collections::HashSet<i64>,
    /// Own blocks not yet wholly handed on.
    left: usize,
    /// Bytes of the archive seen.
    at: u64,
    /// Bytes before this were handed on or skipped; `held` are those from here to `at`.
    decided: u64,
    held: Vec<u8>,
    /// The block holding `decided`, by its index among the blocks met.
    block: usize,
}

impl Picker {
    fn new(data_start: u64, own: std::collections::HashSet<i64>) -> Picker {
        Picker {
            data_start,
            left: own.len(),
            own,
            at: 0,
            decided: 0,
            held: Vec::new(),
            block: 0,
        }
    }

    /// Whether the front and every own block were handed on.
    fn done(&self) -> bool {
        self.decided >= self.data_start && self.left == 0
    }

    /// Takes the next `bytes` of the archive (`blocks`: those met so far, the counter's
    /// after it took the same bytes) and writes what is the loader's to `out`.
    fn take(
        &mut self,
        bytes: &[u8],
        blocks: &[toc::Block],
        out: &mut impl Write,
    ) -> io::Result<()> {
        let start = self.at;
        self.at += bytes.len() as u64;
        let held_from = self.decided;
        while self.decided < self.at && !self.done() {
            let (to, send) = if self.decided < self.data_start {
                (self.data_start.min(self.at), true)
            } else {
                while blocks
                    .get(self.block)
                    .is_some_and(|b| b.end.is_some_and(|end| end <= self.decided))
                {
                    self.block += 1;
                }
                // Not met yet, or its entry's id not read yet: wait for more bytes.
                let Some(b) = blocks.get(self.block).filter(|b| b.dump_id != 0) else {
                    break;
                };
                let own = self.own.contains(&b.dump_id);
                if own && b.end.is_some() {
                    self.left -= 1;
                }
                (b.end.unwrap_or(self.at).min(self.at), own)
            };
            if send {
                let (from, to) = (self.decided, to);
                if from < start {
                    let upto = to.min(start);
                    out.write_all(
                        &self.held[(from - held_from) as usize..(upto - held_from) as usize],
                    )?;
                }
                if to > start {
                    out.write_all(
                        &bytes[(from.max(start) - start) as usize..(to - start) as usize],
                    )?;
                }
            }
            self.decided = to;
        }
        // Keep what is not decided yet (a few bytes of a block's header, usually none).
        let mut rest = Vec::new();
        if self.decided < start {
            rest.extend_from_slice(&self.held[(self.decided - held_from) as usize..]);
        }
        rest.extend_from_slice(
            &bytes[(self.decided.max(start) - start).min(bytes.len() as u64) as usize..],
        );
        self.held = rest;
        Ok(())
    }
}

/// The stored file's size and SHA-256 are the manifest's.
fn check_hash((size, sha): (u64, String), expected: (u64, &str)) -> Result<(), LoadError> {
    if size != expected.0 || sha != expected.1 {
        return Err(LoadError::Damaged(anyhow!(
            "{} mismatch: the manifest says {} bytes with SHA-256 {}, the file has {size} bytes hashing to {sha}",
            if size != expected.0 { "size" } else { "SHA-256" },
            expected.0,
            expected.1
        )));
    }
    Ok(())
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
    check_hash((size, sha), expected)?;
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
            has_data: desc == "TABLE DATA" || desc == "BLOBS",
        }
    }

    fn with_deps(mut e: TocEntry, deps: &[i64]) -> TocEntry {
        e.deps = deps.to_vec();
        e
    }

    fn toc(entries: Vec<TocEntry>) -> Toc {
        Toc {
            version: (1, 14, 0),
            database: None,
            dumped_by: None,
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

    #[test]
    fn indexes_on_one_loaders_tables_alone_are_built_by_that_loader() {
        let t = toc(vec![
            entry(1, "TABLE", "a", 2),
            entry(2, "TABLE", "b", 2),
            entry(3, "FUNCTION", "f(integer)", 2),
            with_deps(entry(10, "TABLE DATA", "a", 3), &[1]),
            with_deps(entry(11, "TABLE DATA", "b", 3), &[2]),
            with_deps(entry(20, "CONSTRAINT", "a a_pkey", 4), &[1]),
            with_deps(entry(21, "INDEX", "b_idx", 4), &[2]),
            with_deps(entry(22, "FK CONSTRAINT", "b b_a_fkey", 4), &[2, 20]),
            with_deps(entry(23, "INDEX", "a_b_idx", 4), &[1, 2]),
            with_deps(entry(24, "INDEX", "a_f_idx", 4), &[1, 3]),
            with_deps(entry(25, "TRIGGER", "a t", 4), &[1]),
            with_deps(entry(26, "COMMENT", "INDEX b_idx", 1), &[21]),
            with_deps(entry(27, "ACL", "TABLE a", 1), &[1]),
        ]);
        let (early, rest) = split_post_data(&t, &[vec![10], vec![11]]);
        assert_eq!(early, vec![vec![20], vec![21]]);
        // Everything else waits for all the data (pg_restore --section=post-data then
        // takes the post-data ones of these): across loaders, on other objects, not an
        // index or constraint.
        assert_eq!(rest, vec![1, 2, 3, 10, 11, 22, 23, 24, 25, 26, 27]);
    }

    /// An archive integer as pg_dump writes it with 4-byte integers.
    fn int(v: i64) -> Vec<u8> {
        let mut out = vec![u8::from(v < 0)];
        out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        out
    }

    /// A table data block: its type, id, the COPY text in chunks, the end chunk.
    fn block(id: i64, chunks: &[&str]) -> Vec<u8> {
        let mut out = vec![1u8];
        out.extend(int(id));
        for c in chunks {
            out.extend(int(c.len() as i64));
            out.extend_from_slice(c.as_bytes());
        }
        out.extend(int(0));
        out
    }

    #[test]
    fn a_loader_is_handed_the_front_and_its_own_blocks_however_the_stream_is_cut() {
        let front = b"HEADER+TOC".to_vec();
        let mine = block(3, &["1\tx\n2\ty\n", "3\tz\n\\.\n\n\n"]);
        let mut archive = front.clone();
        archive.extend(block(2, &["9\tq\n\\.\n\n\n"]));
        archive.extend(&mine);
        archive.extend(block(4, &["8\tr\n\\.\n\n\n"]));
        let mut t = toc(vec![
            entry(2, "TABLE DATA", "a", 3),
            entry(3, "TABLE DATA", "b", 3),
            entry(4, "TABLE DATA", "c", 3),
        ]);
        t.data_start = front.len() as u64;
        let mut expected = front.clone();
        expected.extend(&mine);
        // Cut in every piece size, so that headers, ids and lengths are split everywhere.
        for piece in 1..=archive.len() {
            let own: std::collections::HashSet<i64> = [3].into();
            let mut counter = toc::RowCounter::new(&t)
                .expect("not compressed")
                .counting_only(own.clone());
            let mut picker = Picker::new(t.data_start, own);
            let mut out = Vec::new();
            for bytes in archive.chunks(piece) {
                if picker.done() {
                    break;
                }
                counter.push(bytes);
                picker.take(bytes, counter.blocks(), &mut out).unwrap();
            }
            assert!(picker.done(), "piece size {piece}");
            assert_eq!(out, expected, "piece size {piece}");
            assert_eq!(counter.rows_of(3), Some(3), "piece size {piece}");
            // The others were read through, not counted.
            assert_eq!(counter.rows_of(2), Some(0), "piece size {piece}");
        }
        // A loader with no blocks of its own is handed the front alone.
        let mut picker = Picker::new(t.data_start, Default::default());
        let mut counter = toc::RowCounter::new(&t).unwrap();
        let mut out = Vec::new();
        counter.push(&archive);
        picker.take(&archive, counter.blocks(), &mut out).unwrap();
        assert!(picker.done());
        assert_eq!(out, front);
        // An archive that ends inside its block leaves the loader not done.
        let cut = &archive[..archive.len() - mine.len() / 2 - 20];
        let own: std::collections::HashSet<i64> = [3].into();
        let mut picker = Picker::new(t.data_start, own);
        let mut counter = toc::RowCounter::new(&t).unwrap();
        counter.push(cut);
        picker.take(cut, counter.blocks(), &mut Vec::new()).unwrap();
        assert!(!picker.done());
        assert_eq!(counter.rows_of(3), None);
    }
}
