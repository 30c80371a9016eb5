//! The table of contents of a `pg_dump -Fc` archive, read field by field from the
//! archive's header (the format of `ReadHead`/`ReadToc` in PostgreSQL's
//! `pg_backup_archiver.c`, archive versions 1.12 to 1.16: pg_dump 9.5 to 17), rather
//! than from the words of `pg_restore --list`, whose lines cannot tell a table named
//! `Order Items` in schema `public` from a table `Items` in schema `public Order`.

use std::io::{self, Read};

/// One entry of the table of contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    pub dump_id: i64,
    /// "TABLE", "TABLE DATA", "TABLE ATTACH", "SEQUENCE SET", "MATERIALIZED VIEW", ...
    pub desc: String,
    /// The object's schema (None for objects outside any schema).
    pub namespace: Option<String>,
    /// The object's name, as pg_dump tags it.
    pub tag: String,
    pub owner: Option<String>,
    /// Which part of a restore it belongs to (`SECTION_DATA` for table data, sequence
    /// values and large objects).
    pub section: i64,
    /// The entries it depends on, by dump id.
    pub deps: Vec<i64>,
    /// Whether it has a data block in the archive (table data, large objects).
    pub has_data: bool,
}

/// Where one entry's data block lies in the archive (`end`: once it was read whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub dump_id: i64,
    pub start: u64,
    pub end: Option<u64>,
}

/// `pg_backup.h`'s `teSection`: entries outside any section (comments, ACLs) belong
/// to the section of the entry before them.
pub const SECTION_NONE: i64 = 1;
pub const SECTION_PRE_DATA: i64 = 2;
pub const SECTION_DATA: i64 = 3;

/// The table of contents of an archive.
#[derive(Debug, Clone)]
pub struct Toc {
    /// Archive version (major, minor, revision), e.g. (1, 14, 0) for PostgreSQL 15.
    pub version: (u8, u8, u8),
    /// The database pg_dump dumped.
    pub database: Option<String>,
    /// The version of the pg_dump that wrote the archive (e.g. "15.8").
    pub dumped_by: Option<String>,
    pub entries: Vec<TocEntry>,
    /// Where the data blocks begin (the length of the header and table of contents).
    pub data_start: u64,
    /// Bytes of an archive integer (after its sign byte).
    pub int_size: usize,
    /// True when pg_dump compressed the table data itself (not stablehand's `-Z0`).
    pub compressed: bool,
}

impl Toc {
    /// The tables (ordinary, partitioned and partitions: the `TABLE` entries) as
    /// (schema, name).
    pub fn tables(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter(|e| e.desc == "TABLE")
            .map(|e| (e.namespace.clone().unwrap_or_default(), e.tag.clone()))
            .collect()
    }

    /// The roles that own objects in the archive, sorted and deduplicated.
    pub fn owners(&self) -> Vec<String> {
        let mut owners: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| e.owner.clone())
            .filter(|o| !o.is_empty())
            .collect();
        owners.sort();
        owners.dedup();
        owners
    }
}

const MIN_VERSION: (u8, u8) = (1, 12);
const MAX_VERSION: (u8, u8) = (1, 16);
/// The custom archive format's number in the header.
const FORMAT_CUSTOM: u8 = 1;

/// Why a table of contents could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TocError {
    /// The bytes end before the table of contents does.
    #[error("the archive ends inside its table of contents")]
    Truncated,
    #[error("the archive's table of contents is not valid: {0}")]
    Invalid(String),
    /// An archive version this stablehand does not know (a newer pg_dump).
    #[error("archive version {0}.{1} is not one stablehand can read (it reads 1.12 to 1.16: pg_dump 9.5 to 17)")]
    Unsupported(u8, u8),
}

struct Reader<R> {
    inner: R,
    int_size: usize,
    off_size: usize,
    consumed: u64,
}

impl<R: Read> Reader<R> {
    fn byte(&mut self) -> Result<u8, TocError> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), TocError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => TocError::Truncated,
            _ => TocError::Invalid(e.to_string()),
        })?;
        self.consumed += buf.len() as u64;
        Ok(())
    }

    /// `ReadInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> Result<i64, TocError> {
        let negative = self.byte()? != 0;
        let mut value: i64 = 0;
        for i in 0..self.int_size {
            let b = self.byte()? as i64;
            if i < 8 {
                value |= b << (8 * i);
            }
        }
        Ok(if negative { -value } else { value })
    }

    /// `ReadStr`: a length (`int`; negative for NULL), then that many bytes.
    fn string(&mut self) -> Result<Option<String>, TocError> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        if len > 1 << 30 {
            return Err(TocError::Invalid(format!("a string of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.exact(&mut buf)?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// `ReadOffset` of the custom format: a flag byte and `off_size` bytes.
    fn offset(&mut self) -> Result<(), TocError> {
        self.byte()?;
        for _ in 0..self.off_size {
            self.byte()?;
        }
        Ok(())
    }
}

/// Reads the header and table of contents at the start of a custom-format archive.
pub fn read(input: impl Read) -> Result<Toc, TocError> {
    let mut r = Reader {
        inner: input,
        int_size: 4,
        off_size: 8,
        consumed: 0,
    };
    let mut magic = [0u8; 5];
    r.exact(&mut magic)?;
    if &magic != b"PGDMP" {
        return Err(TocError::Invalid(
            "no PGDMP magic string: not a pg_dump custom-format archive".into(),
        ));
    }
    let (major, minor, rev) = (r.byte()?, r.byte()?, r.byte()?);
    if (major, minor) < MIN_VERSION || (major, minor) > MAX_VERSION {
        return Err(TocError::Unsupported(major, minor));
    }
    let at_least = |m: u8| minor >= m;
    r.int_size = r.byte()? as usize;
    r.off_size = r.byte()? as usize;
    if !(1..=16).contains(&r.int_size) || !(1..=16).contains(&r.off_size) {
        return Err(TocError::Invalid(format!(
            "integer size {} / offset size {}",
            r.int_size, r.off_size
        )));
    }
    let format = r.byte()?;
    if format != FORMAT_CUSTOM {
        return Err(TocError::Invalid(format!(
            "archive format {format} is not the custom format (-Fc)"
        )));
    }
    let compressed = if at_least(15) {
        r.byte()? != 0 // compression algorithm
    } else {
        r.int()? != 0 // compression level
    };
    for _ in 0..7 {
        r.int()?; // creation time: sec, min, hour, mday, mon, year, isdst
    }
    let database = r.string()?;
    r.string()?; // server version
    let dumped_by = r.string()?;
    let count = r.int()?;
    if !(0..=10_000_000).contains(&count) {
        return Err(TocError::Invalid(format!("{count} entries")));
    }
    let mut entries = Vec::with_capacity(count.min(100_000) as usize);
    for _ in 0..count {
        let dump_id = r.int()?;
        if dump_id <= 0 {
            return Err(TocError::Invalid(format!("entry id {dump_id}")));
        }
        let has_data = r.int()? != 0;
        r.string()?; // table oid
        r.string()?; // oid
        let tag = r.string()?.unwrap_or_default();
        let desc = r.string()?.unwrap_or_default();
        let section = r.int()?;
        r.string()?; // definition
        r.string()?; // drop statement
        r.string()?; // copy statement
        let namespace = r.string()?;
        r.string()?; // tablespace
        if at_least(14) {
            r.string()?; // table access method
        }
        if at_least(16) {
            r.int()?; // relkind
        }
        let owner = r.string()?;
        r.string()?; // "with oids": always "false"
        let mut deps = Vec::new();
        while let Some(dep) = r.string()? {
            deps.push(dep.trim().parse().unwrap_or(0));
        } // ended by a NULL
        r.offset()?; // where the entry's data is (custom format)
        entries.push(TocEntry {
            dump_id,
            desc,
            namespace,
            tag,
            owner,
            section,
            deps,
            has_data,
        });
    }
    Ok(Toc {
        version: (major, minor, rev),
        database,
        dumped_by,
        entries,
        data_start: r.consumed,
        int_size: r.int_size,
        compressed,
    })
}

/// Block types of the custom format's data section.
const BLOCK_DATA: u8 = 1;
const BLOCK_BLOBS: u8 = 3;

/// Counts the rows of each table's data as the archive streams past, in the same pass
/// that decompresses and hashes it: `TABLE DATA` blocks hold `COPY` text, one line per
/// row (newlines inside values are escaped), in length-prefixed chunks. Also proves
/// every data block is whole: an archive that ends inside one is truncated.
pub struct RowCounter {
    int_size: usize,
    /// Bytes of the archive seen so far.
    at: u64,
    data_start: u64,
    state: State,
    /// The integer being read, when it spans two pushes.
    int_bytes: Vec<u8>,
    /// The data entry being read: its id, lines so far, and its last bytes.
    current: i64,
    lines: u64,
    tail: [u8; COPY_END.len()],
    tail_len: usize,
    /// Per data entry: lines, and whether its data ended with [`COPY_END`].
    rows: std::collections::BTreeMap<i64, (u64, bool)>,
    /// The data blocks met so far, in archive order.
    blocks: Vec<Block>,
    /// When set, only these entries' rows are counted (the others' blocks are read
    /// through without looking at their lines).
    only: Option<std::collections::HashSet<i64>>,
}

/// How pg_dump ends each table's COPY data in an archive: the end-of-data marker line
/// and two empty lines, none of them rows.
const COPY_END: &[u8] = b"\\.\n\n\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    BlockType,
    DumpId { blobs: bool },
    ChunkLen { blobs: bool },
    Chunk { blobs: bool, left: u64 },
    BlobOid,
    Failed,
}

impl RowCounter {
    /// A counter for an archive whose table of contents is `toc`; None when the data is
    /// compressed inside the archive (then rows are counted in the restored database).
    pub fn new(toc: &Toc) -> Option<RowCounter> {
        (!toc.compressed).then(|| RowCounter {
            int_size: toc.int_size,
            at: 0,
            data_start: toc.data_start,
            state: State::BlockType,
            int_bytes: Vec::new(),
            current: 0,
            lines: 0,
            tail: [0; COPY_END.len()],
            tail_len: 0,
            rows: Default::default(),
            blocks: Vec::new(),
            only: None,
        })
    }

    /// Counts the rows of these entries only.
    pub fn counting_only(mut self, ids: std::collections::HashSet<i64>) -> RowCounter {
        self.only = Some(ids);
        self
    }

    /// The rows of entry `dump_id`, once its data block was read whole.
    pub fn rows_of(&self, dump_id: i64) -> Option<u64> {
        self.rows.get(&dump_id).map(rows_in)
    }

    /// Takes the next bytes of the archive (from its first byte on).
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.at < self.data_start {
            let skip = ((self.data_start - self.at) as usize).min(bytes.len());
            self.at += skip as u64;
            bytes = &bytes[skip..];
        }
        self.at += bytes.len() as u64;
        let end = self.at;
        while !bytes.is_empty() {
            let pos = end - bytes.len() as u64;
            match self.state {
                State::Failed => return,
                State::Chunk { blobs, left } => {
                    let take = (left as usize).min(bytes.len());
                    if !blobs && self.only.as_ref().is_none_or(|o| o.contains(&self.current)) {
                        self.data(&bytes[..take]);
                    }
                    bytes = &bytes[take..];
                    self.state = match left - take as u64 {
                        0 => State::ChunkLen { blobs },
                        left => State::Chunk { blobs, left },
                    };
                }
                State::BlockType => {
                    self.blocks.push(Block {
                        dump_id: 0,
                        start: pos,
                        end: None,
                    });
                    self.state = match bytes[0] {
                        BLOCK_DATA => State::DumpId { blobs: false },
                        BLOCK_BLOBS => State::DumpId { blobs: true },
                        _ => State::Failed,
                    };
                    bytes = &bytes[1..];
                }
                State::DumpId { .. } | State::ChunkLen { .. } | State::BlobOid => {
                    let width = 1 + self.int_size;
                    let value = if self.int_bytes.is_empty() && bytes.len() >= width {
                        // The common case: the whole integer is here.
                        let v = int_value(&bytes[..width]);
                        bytes = &bytes[width..];
                        v
                    } else {
                        let take = (width - self.int_bytes.len()).min(bytes.len());
                        self.int_bytes.extend_from_slice(&bytes[..take]);
                        bytes = &bytes[take..];
                        if self.int_bytes.len() < width {
                            continue;
                        }
                        let v = int_value(&self.int_bytes);
                        self.int_bytes.clear();
                        v
                    };
                    self.state = self.after_int(value);
                    let at = end - bytes.len() as u64;
                    if let Some(block) = self.blocks.last_mut() {
                        match self.state {
                            State::BlockType => block.end = Some(at),
                            State::ChunkLen { .. } | State::BlobOid if block.dump_id == 0 => {
                                block.dump_id = self.current
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// The data blocks met so far, in archive order (the last may be unfinished).
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// COPY data of the current entry.
    fn data(&mut self, data: &[u8]) {
        self.lines += memchr::memchr_iter(b'\n', data).count() as u64;
        let n = COPY_END.len();
        if data.len() >= n {
            self.tail.copy_from_slice(&data[data.len() - n..]);
            self.tail_len = n;
        } else {
            // Shift the kept bytes left and append.
            let keep = (n - data.len()).min(self.tail_len);
            let mut t = [0u8; COPY_END.len()];
            t[..keep].copy_from_slice(&self.tail[self.tail_len - keep..self.tail_len]);
            t[keep..keep + data.len()].copy_from_slice(data);
            self.tail = t;
            self.tail_len = keep + data.len();
        }
    }

    /// Records the entry just read.
    fn end_entry(&mut self) {
        let ended = self.tail_len == COPY_END.len() && self.tail == *COPY_END;
        let entry = self.rows.entry(self.current).or_default();
        entry.0 += self.lines;
        entry.1 = ended;
        self.lines = 0;
        self.tail_len = 0;
    }

    fn after_int(&mut self, value: i64) -> State {
        match self.state {
            State::DumpId { blobs } => {
                self.current = value;
                if blobs {
                    State::BlobOid
                } else {
                    State::ChunkLen { blobs }
                }
            }
            State::ChunkLen { blobs } => match value {
                0 if blobs => State::BlobOid,
                0 => {
                    self.end_entry();
                    State::BlockType
                }
                n if n > 0 => State::Chunk {
                    blobs,
                    left: n as u64,
                },
                _ => State::Failed,
            },
            State::BlobOid => match value {
                0 => State::BlockType,
                _ => State::ChunkLen { blobs: true },
            },
            _ => State::Failed,
        }
    }

    /// Rows per table (`schema.name`) once the whole archive was pushed; an error when
    /// the data ended inside a block or made no sense.
    pub fn finish(self, toc: &Toc) -> Result<std::collections::BTreeMap<String, u64>, TocError> {
        match self.state {
            State::BlockType => {}
            State::Failed => {
                return Err(TocError::Invalid(
                    "a data block of unknown type or length".into(),
                ))
            }
            _ => return Err(TocError::Truncated),
        }
        let mut out = std::collections::BTreeMap::new();
        for e in toc.entries.iter().filter(|e| e.desc == "TABLE DATA") {
            let name = format!("{}.{}", e.namespace.as_deref().unwrap_or(""), e.tag);
            out.insert(name, self.rows.get(&e.dump_id).map_or(0, rows_in));
        }
        Ok(out)
    }
}

/// The rows of an entry's data: its lines, less the end-of-data line and the two empty
/// lines after it when its data ended with them.
fn rows_in(&(lines, ended): &(u64, bool)) -> u64 {
    match ended {
        true => lines.saturating_sub(3),
        false => lines,
    }
}

/// An archive integer: a sign byte, then its bytes, least significant first.
fn int_value(bytes: &[u8]) -> i64 {
    let mut value: i64 = 0;
    for (i, b) in bytes[1..].iter().enumerate().take(8) {
        value |= (*b as i64) << (8 * i);
    }
    if bytes[0] != 0 {
        -value
    } else {
        value
    }
}

/// The most of a stream's front kept to read its table of contents (a schema of tens
/// of thousands of objects fits many times over).
const FRONT_LIMIT: usize = 512 << 20;

/// Reads an archive as it streams past, in the pass that decompresses and hashes it:
/// the table of contents from its front, then the rows of each table.
#[derive(Default)]
pub struct ArchiveScan {
    front: Vec<u8>,
    toc: Option<Result<Toc, TocError>>,
    rows: Option<RowCounter>,
}

impl ArchiveScan {
    /// Takes the next bytes of the archive.
    pub fn push(&mut self, chunk: &[u8]) {
        if let Some(rows) = &mut self.rows {
            rows.push(chunk);
            return;
        }
        if self.toc.is_some() {
            return;
        }
        self.front.extend_from_slice(chunk);
        match read(&self.front[..]) {
            Err(TocError::Truncated) if self.front.len() < FRONT_LIMIT => {}
            Ok(toc) => {
                let mut rows = RowCounter::new(&toc);
                if let Some(r) = &mut rows {
                    r.push(&self.front);
                }
                self.rows = rows;
                self.toc = Some(Ok(toc));
                self.front = Vec::new();
            }
            Err(e) => {
                self.toc = Some(Err(e));
                self.front = Vec::new();
            }
        }
    }

    /// The data blocks met so far (none when rows are not counted).
    pub fn blocks(&self) -> &[Block] {
        self.rows.as_ref().map_or(&[], |r| r.blocks())
    }

    /// True once the table of contents was read (or found broken).
    pub fn has_toc(&self) -> bool {
        self.toc.is_some()
    }

    /// The table of contents, and the rows per table when `whole` (every byte of the
    /// archive was pushed) and the data could be counted.
    pub fn finish(
        self,
        whole: bool,
    ) -> Result<(Toc, Option<std::collections::BTreeMap<String, u64>>), TocError> {
        let toc = match self.toc {
            Some(result) => result?,
            None => read(&self.front[..])?,
        };
        let rows = match (whole, self.rows) {
            (true, Some(counter)) => Some(counter.finish(&toc)?),
            _ => None,
        };
        Ok((toc, rows))
    }
}
