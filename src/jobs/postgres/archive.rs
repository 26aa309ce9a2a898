//! pg_dump's custom archive format, read as it streams past.
//!
//! Two things need to see inside the dump without a second pass over the database or a local copy
//! of the archive:
//! * the backup counts each table's rows from the dump stream itself (every row of a `COPY` text
//!   block ends with one raw newline; newlines inside values are escaped as `\n`), instead of
//!   scanning every table a second time with `count(*)` in the dump's snapshot;
//! * the parallel restore ([`super::parallel`]) splits each table's `COPY` data over several
//!   connections and hands the archive's header and table of contents (a few KiB to a few MiB:
//!   the schema, no data) to `pg_restore` for the schema before and the indexes after.
//!
//! The layout (`src/bin/pg_dump/pg_backup_archiver.c` and `pg_backup_custom.c`): a header
//! (`PGDMP`, version, integer and offset sizes, format, compression, creation time, database name,
//! server and pg_dump versions), the table of contents (a count, then one entry per object: dump
//! id, whether it has data, catalog ids, tag, description, section, definition, drop statement,
//! `COPY` statement, schema, tablespace, table access method, relkind from 1.16, owner, a
//! with-oids flag, dependencies, and the data offset), then the data blocks in dump order: a block
//! type (1 = table data, 3 = large objects), the dump id, and length-prefixed chunks ending with a
//! zero length (large objects: an oid before each object's chunks, a zero oid at the end).
//! Integers are a sign byte followed by `int_size` little-endian bytes. Since a dump streamed to a
//! pipe is never rewritten, the offsets are "not set" and the data follows the table of contents.
//!
//! Only archive versions 1.12 (PostgreSQL 9.x) to 1.16 (PostgreSQL 17/18) are read; anything
//! else, or compressed data, is [`ArchiveError::Unsupported`] and the callers fall back to what
//! needs no parsing (counting with SQL, a single-stream `pg_restore`).

use std::collections::HashMap;

/// Block types in the data part.
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

/// Oldest and newest archive version (1.x) this reader knows.
const MIN_MINOR: u8 = 12;
const MAX_MINOR: u8 = 16;

/// Why the stream could not be read as a custom archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// A valid archive this reader does not handle (version, compression).
    #[error("unsupported archive: {0}")]
    Unsupported(String),
    /// Not a custom archive, or damaged.
    #[error("malformed archive: {0}")]
    Malformed(String),
}

/// The header fields that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: (u8, u8, u8),
    pub int_size: usize,
    pub off_size: usize,
}

/// One table-of-contents entry (the fields drctl uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    pub dump_id: i64,
    pub has_data: bool,
    pub tag: String,
    pub desc: String,
    /// 1 none, 2 pre-data, 3 data, 4 post-data (`teSection`).
    pub section: i64,
    pub copy_stmt: Option<String>,
    pub namespace: Option<String>,
    /// Kept only for the entries that set session state (`ENCODING`, `STDSTRINGS`).
    pub defn: Option<String>,
}

pub const SECTION_NONE: i64 = 1;
pub const SECTION_PRE_DATA: i64 = 2;

impl TocEntry {
    /// A table's data loaded with `COPY … FROM stdin`.
    pub fn is_copy_data(&self) -> bool {
        self.desc == "TABLE DATA" && self.copy_stmt.as_deref().is_some_and(|s| s.starts_with("COPY "))
    }
}

/// What the reader found, in stream order.
pub trait Visitor {
    type Error;
    /// The table of contents is complete; `head` is every byte of the archive so far (header
    /// and table of contents), when the reader was asked to keep it.
    fn toc(&mut self, header: &Header, entries: &[TocEntry], head: Option<Vec<u8>>) -> Result<(), Self::Error>;
    /// A data block begins: table data (`blobs` false) or large objects.
    fn begin(&mut self, dump_id: i64, blobs: bool) -> Result<(), Self::Error>;
    /// Data of the current block, in order (`COPY` text for table data).
    fn data(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
    /// The current block ended.
    fn end(&mut self) -> Result<(), Self::Error>;
}

/// Either the archive could not be read, or the visitor stopped.
#[derive(Debug)]
pub enum FeedError<E> {
    Archive(ArchiveError),
    Visitor(E),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Header and table of contents (parsed from `buf`, item by item).
    Head,
    /// Expecting a block type and dump id, or the end of the archive.
    Block,
    /// Expecting a chunk length (`blob`: inside a large object).
    ChunkLen { blob: bool },
    /// Inside a chunk, this many bytes left.
    Chunk { left: u64, blob: bool },
    /// Expecting a large object's oid (0 ends the block).
    BlobOid,
    /// The reader gave up; everything else passes unread.
    Failed,
}

/// A push reader: feed it the archive's bytes in any pieces.
pub struct Reader {
    state: State,
    /// Unparsed bytes of the current small item (header, one toc entry, an integer).
    buf: Vec<u8>,
    header: Option<Header>,
    toc_count: Option<i64>,
    entries: Vec<TocEntry>,
    keep_head: bool,
    head: Vec<u8>,
    /// The last bytes of the current table data block, held back until the block ends: pg_dump
    /// ends each table's data with the end-of-copy marker `\\.` and two empty lines, which are
    /// not rows and not for a `COPY` over the protocol.
    hold: Vec<u8>,
}

/// How pg_dump ends every table's `COPY` data in a custom archive.
const END_OF_COPY: &[u8] = b"\\.\n\n\n";

impl Reader {
    /// `keep_head`: hand the raw header and table of contents to [`Visitor::toc`].
    pub fn new(keep_head: bool) -> Reader {
        Reader {
            state: State::Head,
            buf: Vec::new(),
            header: None,
            toc_count: None,
            entries: Vec::new(),
            keep_head,
            head: Vec::new(),
            hold: Vec::new(),
        }
    }

    /// Whether the whole table of contents has been read.
    pub fn past_toc(&self) -> bool {
        !matches!(self.state, State::Head | State::Failed)
    }

    pub fn entries(&self) -> &[TocEntry] {
        &self.entries
    }

    /// Read `input`. After an error the reader stays failed (and ignores further input).
    pub fn feed<V: Visitor>(&mut self, mut input: &[u8], v: &mut V) -> Result<(), FeedError<V::Error>> {
        while !input.is_empty() {
            match self.state {
                State::Failed => return Ok(()),
                State::Head => {
                    // take as much as the next items could need; parse whole items from `buf`
                    self.buf.extend_from_slice(input);
                    if self.keep_head {
                        self.head.extend_from_slice(input);
                    }
                    input = &[];
                    let used = match self.parse_head() {
                        Ok(used) => used,
                        Err(e) => return Err(self.fail(FeedError::Archive(e))),
                    };
                    if self.past_toc_parsed() {
                        // the rest of `buf` is data: hand it back to the loop
                        let rest = self.buf.split_off(used);
                        self.buf.clear();
                        if self.keep_head {
                            self.head.truncate(self.head.len() - rest.len());
                        }
                        self.state = State::Block;
                        let head = self.keep_head.then(|| std::mem::take(&mut self.head));
                        let header = self.header.clone().expect("parsed");
                        if let Err(e) = v.toc(&header, &self.entries, head) {
                            return Err(self.fail(FeedError::Visitor(e)));
                        }
                        return self.feed(&rest, v);
                    }
                    self.buf.drain(..used);
                }
                State::Chunk { left, blob } => {
                    let n = (left.min(input.len() as u64)) as usize;
                    if !blob && let Err(e) = self.pass(&input[..n], v) {
                        return Err(self.fail(FeedError::Visitor(e)));
                    }
                    input = &input[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 { State::ChunkLen { blob } } else { State::Chunk { left, blob } };
                }
                State::Block | State::ChunkLen { .. } | State::BlobOid => {
                    let need = self.small_item_len();
                    let take = (need - self.buf.len()).min(input.len());
                    self.buf.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.buf.len() == need
                        && let Err(e) = self.small_item(v)
                    {
                        return Err(self.fail(e));
                    }
                }
            }
        }
        Ok(())
    }

    /// The archive ended: it must end between blocks.
    pub fn finish(&self) -> Result<(), ArchiveError> {
        match self.state {
            State::Block if self.buf.is_empty() => Ok(()),
            State::Failed => Err(ArchiveError::Malformed("reading stopped earlier".into())),
            State::Head => Err(ArchiveError::Malformed("the archive ends inside its table of contents".into())),
            _ => Err(ArchiveError::Malformed("the archive ends inside a data block".into())),
        }
    }

    /// Hand table data on, holding back the last `END_OF_COPY.len()` bytes.
    fn pass<V: Visitor>(&mut self, data: &[u8], v: &mut V) -> Result<(), V::Error> {
        let keep = END_OF_COPY.len();
        if data.len() >= keep {
            if !self.hold.is_empty() {
                v.data(&std::mem::take(&mut self.hold))?;
            }
            let (now, later) = data.split_at(data.len() - keep);
            if !now.is_empty() {
                v.data(now)?;
            }
            self.hold.extend_from_slice(later);
        } else {
            self.hold.extend_from_slice(data);
            if self.hold.len() > keep {
                let over = self.hold.len() - keep;
                let now: Vec<u8> = self.hold.drain(..over).collect();
                v.data(&now)?;
            }
        }
        Ok(())
    }

    /// The table data block ended: what was held back is data unless it is the end marker.
    fn end_block<V: Visitor>(&mut self, v: &mut V) -> Result<(), V::Error> {
        let held = std::mem::take(&mut self.hold);
        if !held.is_empty() && held != END_OF_COPY {
            v.data(&held)?;
        }
        v.end()
    }

    fn fail<E>(&mut self, e: E) -> E {
        self.state = State::Failed;
        self.buf = Vec::new();
        self.head = Vec::new();
        e
    }

    fn int_size(&self) -> usize {
        self.header.as_ref().map_or(4, |h| h.int_size)
    }

    fn past_toc_parsed(&self) -> bool {
        self.toc_count.is_some_and(|n| self.entries.len() as i64 == n)
    }

    fn small_item_len(&self) -> usize {
        let int = 1 + self.int_size();
        match self.state {
            State::Block => 1 + int,
            _ => int,
        }
    }

    fn small_item<V: Visitor>(&mut self, v: &mut V) -> Result<(), FeedError<V::Error>> {
        let int_size = self.int_size();
        let buf = std::mem::take(&mut self.buf);
        let mut c = Cursor { buf: &buf, pos: 0, int_size };
        let visit = |r: Result<(), V::Error>| r.map_err(FeedError::Visitor);
        match self.state {
            State::Block => {
                let kind = c.byte().expect("sized");
                let id = c.int().expect("sized");
                match kind {
                    BLK_DATA => {
                        visit(v.begin(id, false))?;
                        self.state = State::ChunkLen { blob: false };
                    }
                    BLK_BLOBS => {
                        visit(v.begin(id, true))?;
                        self.state = State::BlobOid;
                    }
                    other => {
                        return Err(FeedError::Archive(ArchiveError::Malformed(format!(
                            "unknown data block type {other} (dump id {id})"
                        ))));
                    }
                }
            }
            State::ChunkLen { blob } => {
                let len = c.int().expect("sized");
                if len < 0 {
                    return Err(FeedError::Archive(ArchiveError::Malformed(format!("negative chunk length {len}"))));
                }
                self.state = match (len, blob) {
                    (0, false) => {
                        visit(self.end_block(v))?;
                        State::Block
                    }
                    (0, true) => State::BlobOid,
                    (n, blob) => State::Chunk { left: n as u64, blob },
                };
            }
            State::BlobOid => {
                let oid = c.int().expect("sized");
                self.state = if oid == 0 {
                    visit(v.end())?;
                    State::Block
                } else {
                    State::ChunkLen { blob: true }
                };
            }
            State::Head | State::Chunk { .. } | State::Failed => unreachable!("not a small item"),
        }
        Ok(())
    }

    /// Parse as many whole head items (header, entry count, entries) as `buf` holds; returns
    /// the bytes used.
    fn parse_head(&mut self) -> Result<usize, ArchiveError> {
        let mut used = 0;
        while !self.past_toc_parsed() {
            let mut c = Cursor { buf: &self.buf[used..], pos: 0, int_size: self.int_size() };
            let Some(header) = &self.header else {
                let Ok(header) = read_header(&mut c) else { return Ok(used) };
                let pos = c.pos;
                self.header = Some(header?);
                used += pos;
                continue;
            };
            if self.toc_count.is_none() {
                let Some(n) = c.int() else { return Ok(used) };
                self.toc_count = Some(n.max(0));
                used += c.pos;
            } else {
                let Ok(entry) = read_entry(&mut c, header) else { return Ok(used) };
                used += c.pos;
                self.entries.push(entry);
            }
        }
        Ok(used)
    }
}

/// Not enough bytes yet.
struct Short;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    int_size: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A sign byte and `int_size` little-endian bytes.
    fn int(&mut self) -> Option<i64> {
        let sign = self.byte()?;
        let bytes = self.take(self.int_size)?;
        let mut v: u64 = 0;
        for (i, b) in bytes.iter().enumerate().take(8) {
            v |= u64::from(*b) << (8 * i);
        }
        let v = v as i64;
        Some(if sign != 0 { -v } else { v })
    }

    /// A length and bytes; `None` inside for a NULL string (negative length).
    fn string(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.int()?;
        if len < 0 {
            return Some(None);
        }
        self.take(len as usize).map(Some)
    }

    fn text(&mut self) -> Option<Option<String>> {
        self.string().map(|s| s.map(|b| String::from_utf8_lossy(b).into_owned()))
    }
}

trait ShortExt<T> {
    fn short(self) -> Result<T, Short>;
}
impl<T> ShortExt<T> for Option<T> {
    fn short(self) -> Result<T, Short> {
        self.ok_or(Short)
    }
}

/// The header, or why this reader does not handle the archive.
fn read_header(c: &mut Cursor<'_>) -> Result<Result<Header, ArchiveError>, Short> {
    let magic = c.take(5).short()?;
    if magic != b"PGDMP" {
        return Ok(Err(ArchiveError::Malformed("no PGDMP magic: not a pg_dump custom archive".into())));
    }
    let (maj, min, rev) = (c.byte().short()?, c.byte().short()?, c.byte().short()?);
    let int_size = c.byte().short()? as usize;
    let off_size = c.byte().short()? as usize;
    let format = c.byte().short()?;
    if maj != 1 || !(MIN_MINOR..=MAX_MINOR).contains(&min) {
        return Ok(Err(ArchiveError::Unsupported(format!("archive version {maj}.{min}.{rev}"))));
    }
    if !(1..=8).contains(&int_size) || !(1..=8).contains(&off_size) {
        return Ok(Err(ArchiveError::Unsupported(format!("integer size {int_size}, offset size {off_size}"))));
    }
    // 1 = custom (archCustom)
    if format != 1 {
        return Ok(Err(ArchiveError::Unsupported(format!("archive format {format} (not custom)"))));
    }
    c.int_size = int_size;
    let compressed = if min >= 15 {
        c.byte().short()? != 0 // compression algorithm: 0 = none
    } else {
        c.int().short()? != 0 // compression level
    };
    for _ in 0..7 {
        c.int().short()?; // creation time: sec, min, hour, mday, mon, year, isdst
    }
    c.string().short()?; // database name
    c.string().short()?; // server version
    c.string().short()?; // pg_dump version
    if compressed {
        return Ok(Err(ArchiveError::Unsupported("compressed data (drctl dumps with --compress=0)".into())));
    }
    Ok(Ok(Header { version: (maj, min, rev), int_size, off_size }))
}

/// One table-of-contents entry.
fn read_entry(c: &mut Cursor<'_>, h: &Header) -> Result<TocEntry, Short> {
    let min = h.version.1;
    let dump_id = c.int().short()?;
    let has_data = c.int().short()? != 0;
    c.string().short()?; // catalog tableoid
    c.string().short()?; // catalog oid
    let tag = c.text().short()?.unwrap_or_default();
    let desc = c.text().short()?.unwrap_or_default();
    let section = c.int().short()?; // written since 1.11
    let defn = c.string().short()?;
    let defn = match desc.as_str() {
        "ENCODING" | "STDSTRINGS" => defn.map(|b| String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    c.string().short()?; // drop statement
    let copy_stmt = c.text().short()?;
    let namespace = c.text().short()?;
    c.string().short()?; // tablespace
    if min >= 14 {
        c.string().short()?; // table access method
    }
    if min >= 16 {
        c.int().short()?; // relkind
    }
    c.string().short()?; // owner
    c.string().short()?; // "false": with oids
    // dependencies, ended by a NULL string
    while c.string().short()?.is_some() {}
    c.byte().short()?; // data offset: flag …
    c.take(h.off_size).short()?; // … and value
    Ok(TocEntry { dump_id, has_data, tag, desc, section, copy_stmt, namespace, defn })
}

/// Counts the rows of each table's `COPY` data (every row ends with one raw newline).
#[derive(Debug, Default)]
pub struct RowCounter {
    /// dump id → (schema, table) of the `TABLE DATA` entries.
    tables: HashMap<i64, (String, String)>,
    current: Option<i64>,
    counts: HashMap<i64, u64>,
}

impl RowCounter {
    /// (schema, table) → rows, for every table whose data the archive holds.
    pub fn counts(&self) -> HashMap<(String, String), u64> {
        self.tables.iter().map(|(id, name)| (name.clone(), self.counts.get(id).copied().unwrap_or(0))).collect()
    }
}

impl Visitor for RowCounter {
    type Error = std::convert::Infallible;

    fn toc(&mut self, _h: &Header, entries: &[TocEntry], _head: Option<Vec<u8>>) -> Result<(), Self::Error> {
        for e in entries.iter().filter(|e| e.is_copy_data()) {
            self.tables.insert(e.dump_id, (e.namespace.clone().unwrap_or_default(), e.tag.clone()));
        }
        Ok(())
    }

    fn begin(&mut self, dump_id: i64, blobs: bool) -> Result<(), Self::Error> {
        self.current = (!blobs && self.tables.contains_key(&dump_id)).then_some(dump_id);
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        if let Some(id) = self.current {
            *self.counts.entry(id).or_default() += memchr::memchr_iter(b'\n', bytes).count() as u64;
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), Self::Error> {
        self.current = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes archives the way pg_dump does (enough of them for the reader).
    pub(crate) struct Writer {
        pub out: Vec<u8>,
        minor: u8,
    }

    impl Writer {
        pub fn new(minor: u8) -> Writer {
            let mut w = Writer { out: b"PGDMP".to_vec(), minor };
            w.out.extend_from_slice(&[1, minor, 0, 4, 8, 1]);
            if minor >= 15 {
                w.out.push(0);
            } else {
                w.int(0);
            }
            for v in [1, 2, 3, 4, 5, 126, 0] {
                w.int(v);
            }
            for s in ["db", "15.1", "15.1"] {
                w.str(Some(s));
            }
            w
        }
        pub fn int(&mut self, v: i64) {
            self.out.push(u8::from(v < 0));
            self.out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        }
        pub fn str(&mut self, s: Option<&str>) {
            match s {
                Some(s) => {
                    self.int(s.len() as i64);
                    self.out.extend_from_slice(s.as_bytes());
                }
                None => self.int(-1),
            }
        }
        pub fn entry(&mut self, id: i64, desc: &str, tag: &str, copy: Option<&str>) {
            self.int(id);
            self.int(i64::from(copy.is_some()));
            self.str(Some("0"));
            self.str(Some("0"));
            self.str(Some(tag));
            self.str(Some(desc));
            self.int(if copy.is_some() { 3 } else { SECTION_PRE_DATA });
            self.str(Some("CREATE something;"));
            self.str(Some(""));
            self.str(copy);
            self.str(Some("public"));
            self.str(Some(""));
            if self.minor >= 14 {
                self.str(Some("heap"));
            }
            if self.minor >= 16 {
                self.int(114);
            }
            self.str(Some("postgres"));
            self.str(Some("false"));
            self.str(Some("1"));
            self.str(None);
            self.out.push(1);
            self.out.extend_from_slice(&[0; 8]);
        }
        pub fn data(&mut self, id: i64, chunks: &[&str]) {
            self.out.push(BLK_DATA);
            self.int(id);
            for c in chunks {
                self.int(c.len() as i64);
                self.out.extend_from_slice(c.as_bytes());
            }
            self.int(0);
        }
    }

    fn sample(minor: u8) -> Vec<u8> {
        let mut w = Writer::new(minor);
        w.int(3);
        w.entry(1, "TABLE", "t", None);
        w.entry(2, "TABLE DATA", "t", Some("COPY public.t (a) FROM stdin;\n"));
        w.entry(3, "TABLE DATA", "u", Some("COPY public.u (a) FROM stdin;\n"));
        w.data(2, &["1\n2\n", "a\\nb\n\\", ".\n\n", "\n"]);
        // large objects between the tables
        w.out.push(BLK_BLOBS);
        w.int(9);
        w.int(16400);
        w.int(3);
        w.out.extend_from_slice(b"x\ny");
        w.int(0);
        w.int(0);
        w.data(3, &["\\.\n\n\n"]);
        w.out
    }

    fn count(bytes: &[u8], piece: usize) -> Result<HashMap<(String, String), u64>, ArchiveError> {
        let mut r = Reader::new(false);
        let mut v = RowCounter::default();
        for p in bytes.chunks(piece) {
            r.feed(p, &mut v).map_err(|e| match e {
                FeedError::Archive(a) => a,
                FeedError::Visitor(never) => match never {},
            })?;
        }
        r.finish()?;
        Ok(v.counts())
    }

    #[test]
    fn counts_rows_in_any_piece_size() {
        for minor in [12, 14, 15, 16] {
            let bytes = sample(minor);
            for piece in [1, 2, 3, 7, 64, bytes.len()] {
                let c = count(&bytes, piece).unwrap();
                assert_eq!(c[&("public".into(), "t".into())], 3, "1.{minor}, pieces of {piece}");
                assert_eq!(c[&("public".into(), "u".into())], 0);
                assert_eq!(c.len(), 2);
            }
        }
    }

    #[test]
    fn keeps_the_head_exactly() {
        struct Head(Option<Vec<u8>>, Vec<u8>);
        impl Visitor for Head {
            type Error = ();
            fn toc(&mut self, _: &Header, _: &[TocEntry], head: Option<Vec<u8>>) -> Result<(), ()> {
                self.0 = head;
                Ok(())
            }
            fn begin(&mut self, _: i64, _: bool) -> Result<(), ()> {
                Ok(())
            }
            fn data(&mut self, b: &[u8]) -> Result<(), ()> {
                self.1.extend_from_slice(b);
                Ok(())
            }
            fn end(&mut self) -> Result<(), ()> {
                Ok(())
            }
        }
        let bytes = sample(14);
        for piece in [1, 5, 4096] {
            let mut r = Reader::new(true);
            let mut v = Head(None, Vec::new());
            for p in bytes.chunks(piece) {
                r.feed(p, &mut v).unwrap();
            }
            r.finish().unwrap();
            let head = v.0.unwrap();
            assert!(bytes.starts_with(&head));
            assert_eq!(bytes[head.len()], BLK_DATA, "the head ends where the first block starts");
            assert_eq!(v.1, b"1\n2\na\\nb\n", "blob data is not table data");
        }
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let mut bytes = sample(14);
        bytes[6] = 17; // version 1.17
        assert!(matches!(count(&bytes, 4096), Err(ArchiveError::Unsupported(_))));
        assert!(matches!(count(b"PGDMQ and more bytes", 4096), Err(ArchiveError::Malformed(_))));
        let bytes = sample(14);
        // cut inside a data block
        assert!(matches!(count(&bytes[..bytes.len() - 3], 4096), Err(ArchiveError::Malformed(_))));
        // an unknown block type
        let mut bad = sample(14);
        let n = bad.len();
        bad.truncate(n - 21); // drop the last (empty) data block
        bad.push(7);
        bad.extend_from_slice(&[0; 5]);
        assert!(matches!(count(&bad, 4096), Err(ArchiveError::Malformed(_))));
    }
}
