//! RESP2, the Redis wire protocol, as far as drctl needs it, and the framing of an RDB payload
//! sent over the replication protocol. Pure functions over byte slices (no I/O), so every edge
//! case is unit-tested here and the async layers stay thin.
//!
//! * [`parse`] reads one reply (`+`, `-`, `:`, `$`, `*`) from the front of a buffer, or says it
//!   needs more bytes; [`parse_command`] reads one command a replica sends (an array of bulk
//!   strings, or an inline command).
//! * [`parse_sync_preamble`] reads what a master answers to `SYNC`: keepalive newlines, then
//!   `$<len>\r\n` (the RDB was written to the master's disk first) or `$EOF:<40-byte mark>\r\n`
//!   (diskless: the payload ends with the same mark).
//! * [`Framer`] cuts the payload out of the bytes that follow, in either form.

use std::fmt;

/// Longest status/error/length line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Largest bulk reply kept in memory (INFO, CONFIG GET …; never data).
pub const MAX_BULK: usize = 64 * 1024 * 1024;
/// Deepest array nesting accepted.
const MAX_DEPTH: usize = 8;
/// Length of the end mark of a diskless payload (`RDB_EOF_MARK_SIZE`).
pub const MARK_LEN: usize = 40;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None` is the nil bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` is the nil array (`*-1`).
    Array(Option<Vec<Value>>),
}

impl Value {
    /// A status or bulk reply as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Simple(s) => Some(s.clone()),
            Value::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Bulk(None) | Value::Array(None))
    }

    /// The elements of an array reply (a nil array is empty).
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(Some(v)) => v,
            _ => &[],
        }
    }

    /// A flat `[k1, v1, k2, v2 …]` array (CONFIG GET, SENTINEL replicas) as pairs of text.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.items().chunks_exact(2).filter_map(|kv| Some((kv[0].text()?, kv[1].text().unwrap_or_default()))).collect()
    }
}

/// The peer did not speak RESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn perr(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

/// `*N\r\n$len\r\narg\r\n…`: a command as clients send it.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn find_crlf(buf: &[u8], from: usize) -> Result<Option<usize>, ProtocolError> {
    match buf[from..].windows(2).position(|w| w == b"\r\n") {
        Some(p) => Ok(Some(from + p)),
        None if buf.len() - from > MAX_LINE => Err(perr("line too long")),
        None => Ok(None),
    }
}

fn parse_int(line: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| perr(format!("expected an integer, got `{}`", String::from_utf8_lossy(line))))
}

/// Parse one reply from the front of `buf`: `Ok(None)` when more bytes are needed, else the reply
/// and how many bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Value, usize)>, ProtocolError> {
    if pos >= buf.len() {
        return Ok(None);
    }
    if depth > MAX_DEPTH {
        return Err(perr("reply nested too deeply"));
    }
    let Some(end) = find_crlf(buf, pos)? else {
        return Ok(None);
    };
    let line = &buf[pos + 1..end];
    let next = end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    match buf[pos] {
        b'+' => Ok(Some((Value::Simple(text()), next))),
        b'-' => Ok(Some((Value::Error(text()), next))),
        b':' => Ok(Some((Value::Int(parse_int(line)?), next))),
        b'$' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some((Value::Bulk(None), next)));
            }
            let n = n as usize;
            if n > MAX_BULK {
                return Err(perr(format!("bulk reply of {n} bytes is larger than expected")));
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(perr("bulk reply not terminated by CRLF"));
            }
            Ok(Some((Value::Bulk(Some(buf[next..next + n].to_vec())), next + n + 2)))
        }
        b'*' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some((Value::Array(None), next)));
            }
            if n as usize > MAX_BULK / 2 {
                return Err(perr("array reply too long"));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            let mut at = next;
            for _ in 0..n {
                match parse_at(buf, at, depth + 1)? {
                    Some((v, after)) => {
                        items.push(v);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), at)))
        }
        b => Err(perr(format!("unexpected reply type byte 0x{b:02x}"))),
    }
}

/// A command's arguments and the bytes it used.
pub type Command = (Vec<Vec<u8>>, usize);

/// Parse one command from the front of `buf` (what a replica sends its master): an array of bulk
/// strings, or an inline command (`PING\r\n`). `Ok(None)` when more bytes are needed.
pub fn parse_command(buf: &[u8]) -> Result<Option<Command>, ProtocolError> {
    // a bare newline between commands is allowed (and ignored) by Redis too
    let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    if skip == buf.len() {
        return Ok(None);
    }
    if buf[skip] != b'*' {
        let Some(end) = buf[skip..].iter().position(|b| *b == b'\n') else {
            return if buf.len() - skip > MAX_LINE { Err(perr("inline command too long")) } else { Ok(None) };
        };
        let line = String::from_utf8_lossy(&buf[skip..skip + end]);
        let args = line.split_whitespace().map(|s| s.as_bytes().to_vec()).collect();
        return Ok(Some((args, skip + end + 1)));
    }
    match parse_at(buf, skip, 0)? {
        None => Ok(None),
        Some((Value::Array(Some(items)), used)) => {
            let mut args = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Bulk(Some(b)) => args.push(b),
                    other => return Err(perr(format!("command argument is not a bulk string: {other:?}"))),
                }
            }
            Ok(Some((args, used)))
        }
        Some((other, _)) => Err(perr(format!("a command must be an array, got {other:?}"))),
    }
}

/// How the RDB payload of a `SYNC` is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncHeader {
    /// `$<len>`: exactly this many bytes follow (disk-based transfer).
    Length(u64),
    /// `$EOF:<mark>`: the payload ends with the mark (diskless transfer).
    Mark([u8; MARK_LEN]),
}

/// What went wrong before the payload started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// The master answered with an error (`-NOPERM …`, `-NOMASTERLINK …`).
    Server(String),
    Protocol(String),
}

/// Read the master's answer to `SYNC` from the front of `buf`: skips keepalive newlines (sent
/// while the master prepares the RDB) and `+FULLRESYNC`/`+CONTINUE` lines, then reads the
/// payload header. `Ok(None)` when more bytes are needed; else the header and the bytes used
/// (the payload starts right after).
pub fn parse_sync_preamble(buf: &[u8]) -> Result<Option<(SyncHeader, usize)>, SyncError> {
    let mut pos = 0;
    loop {
        while pos < buf.len() && (buf[pos] == b'\n' || buf[pos] == b'\r') {
            pos += 1;
        }
        if pos >= buf.len() {
            return Ok(None);
        }
        let Some(end) = buf[pos..].windows(2).position(|w| w == b"\r\n").map(|p| pos + p) else {
            if buf.len() - pos > MAX_LINE {
                return Err(SyncError::Protocol("header line too long".into()));
            }
            return Ok(None);
        };
        let line = &buf[pos..end];
        let next = end + 2;
        match line.first() {
            Some(b'-') => return Err(SyncError::Server(String::from_utf8_lossy(&line[1..]).into_owned())),
            Some(b'+') => {
                pos = next; // +FULLRESYNC <replid> <offset>: not sent for SYNC, tolerated
                continue;
            }
            Some(b'$') => {
                let rest = &line[1..];
                if let Some(mark) = rest.strip_prefix(b"EOF:") {
                    let mark: [u8; MARK_LEN] = mark.try_into().map_err(|_| {
                        SyncError::Protocol(format!("EOF mark of {} bytes, expected {MARK_LEN}", mark.len()))
                    })?;
                    return Ok(Some((SyncHeader::Mark(mark), next)));
                }
                let len = std::str::from_utf8(rest).ok().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
                    SyncError::Protocol(format!("bad payload length `{}`", String::from_utf8_lossy(rest)))
                })?;
                return Ok(Some((SyncHeader::Length(len), next)));
            }
            _ => {
                return Err(SyncError::Protocol(format!(
                    "unexpected answer to SYNC: `{}`",
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                )));
            }
        }
    }
}

/// Cuts the RDB payload out of the bytes that follow the header.
#[derive(Debug)]
pub struct Framer {
    mode: Mode,
    done: bool,
    /// Payload bytes emitted so far.
    emitted: u64,
}

#[derive(Debug)]
enum Mode {
    Length {
        remaining: u64,
    },
    /// Bytes not yet emitted because they may be the start of the mark.
    Mark {
        mark: [u8; MARK_LEN],
        held: Vec<u8>,
    },
}

impl Framer {
    pub fn new(header: &SyncHeader) -> Framer {
        let mode = match header {
            SyncHeader::Length(n) => Mode::Length { remaining: *n },
            SyncHeader::Mark(m) => Mode::Mark { mark: *m, held: Vec::with_capacity(MARK_LEN) },
        };
        let done = matches!(mode, Mode::Length { remaining: 0 });
        Framer { mode, done, emitted: 0 }
    }

    /// Whether the whole payload was seen (length reached, or the mark found).
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Payload bytes still expected, when the length is known.
    pub fn remaining(&self) -> Option<u64> {
        match &self.mode {
            Mode::Length { remaining } => Some(*remaining),
            Mode::Mark { .. } => None,
        }
    }

    /// Take bytes read from the connection; appends the payload bytes they complete to `out`.
    /// Bytes after the end of the payload (a pre-7.0 master goes on with the replication stream)
    /// are ignored.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let before = out.len();
        match &mut self.mode {
            Mode::Length { remaining } => {
                let n = (*remaining).min(input.len() as u64) as usize;
                out.extend_from_slice(&input[..n]);
                *remaining -= n as u64;
                self.done = *remaining == 0;
            }
            Mode::Mark { mark, held } => {
                held.extend_from_slice(input);
                if let Some(p) = find_mark(held, mark) {
                    out.extend_from_slice(&held[..p]);
                    held.clear();
                    self.done = true;
                } else {
                    // the last MARK_LEN-1 bytes may be the start of the mark
                    let keep = held.len().min(MARK_LEN - 1);
                    let emit = held.len() - keep;
                    out.extend_from_slice(&held[..emit]);
                    held.drain(..emit);
                }
            }
        }
        self.emitted += (out.len() - before) as u64;
    }
}

/// Where `mark` starts in `data`, jumping between occurrences of its first byte.
fn find_mark(data: &[u8], mark: &[u8; MARK_LEN]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = data[from..].iter().position(|b| *b == mark[0]) {
        let p = from + i;
        if p + MARK_LEN > data.len() {
            return None;
        }
        if data[p..p + MARK_LEN] == mark[..] {
            return Some(p);
        }
        from = p + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Some((Value::Simple("OK".into()), 5)));
        assert_eq!(parse(b"-ERR bad\r\n").unwrap(), Some((Value::Error("ERR bad".into()), 10)));
        assert_eq!(parse(b":-42\r\n").unwrap(), Some((Value::Int(-42), 6)));
        assert_eq!(parse(b"$3\r\nfoo\r\n").unwrap(), Some((Value::Bulk(Some(b"foo".to_vec())), 9)));
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), Some((Value::Bulk(Some(Vec::new())), 6)));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Value::Bulk(None), 5)));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Some((Value::Array(None), 5)));
        let (v, n) = parse(b"*2\r\n$2\r\nip\r\n*1\r\n:7\r\nEXTRA").unwrap().unwrap();
        assert_eq!(n, 20);
        assert_eq!(
            v,
            Value::Array(Some(vec![Value::Bulk(Some(b"ip".to_vec())), Value::Array(Some(vec![Value::Int(7)]))]))
        );
    }

    #[test]
    fn bulk_may_hold_crlf_and_binary() {
        let (v, _) = parse(b"$4\r\n\r\n\x00\xff\r\n").unwrap().unwrap();
        assert_eq!(v, Value::Bulk(Some(vec![b'\r', b'\n', 0, 0xff])));
    }

    #[test]
    fn incomplete_input_asks_for_more_at_every_cut() {
        let full = b"*3\r\n$3\r\nabc\r\n:1\r\n+x y\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse(full).unwrap().is_some());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b":12a\r\n").is_err());
        assert!(parse(b"$3\r\nfooXX").is_err());
        assert!(parse(format!("${}\r\n", MAX_BULK + 1).as_bytes()).is_err());
        assert!(parse(&vec![b'+'; MAX_LINE + 10]).is_err());
        let deep = "*1\r\n".repeat(20);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn value_helpers() {
        let (v, _) = parse(b"*4\r\n$3\r\ndir\r\n$4\r\n/var\r\n$4\r\nsave\r\n$0\r\n\r\n").unwrap().unwrap();
        assert_eq!(v.pairs(), vec![("dir".into(), "/var".into()), ("save".into(), String::new())]);
        assert!(Value::Bulk(None).is_nil());
        assert_eq!(Value::Int(1).text(), None);
    }

    #[test]
    fn encodes_commands_that_parse_back() {
        let enc = encode_command(&["AUTH", "user", "p a\r\nss"]);
        assert_eq!(&enc[..4], b"*3\r\n");
        let (args, n) = parse_command(&enc).unwrap().unwrap();
        assert_eq!(n, enc.len());
        assert_eq!(args, vec![b"AUTH".to_vec(), b"user".to_vec(), b"p a\r\nss".to_vec()]);
    }

    #[test]
    fn parses_replica_commands() {
        assert_eq!(parse_command(b"PING\r\n").unwrap(), Some((vec![b"PING".to_vec()], 6)));
        assert_eq!(parse_command(b"\nPING\n").unwrap(), Some((vec![b"PING".to_vec()], 6)));
        assert_eq!(parse_command(b"\r\n").unwrap(), None);
        assert_eq!(parse_command(b"*2\r\n$5\r\nPSYNC").unwrap(), None);
        let (args, _) = parse_command(b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n").unwrap().unwrap();
        assert_eq!(args, vec![b"PSYNC".to_vec(), b"?".to_vec(), b"-1".to_vec()]);
        assert!(parse_command(b"*1\r\n:1\r\n").is_err());
    }

    #[test]
    fn sync_preamble_forms() {
        assert_eq!(parse_sync_preamble(b"").unwrap(), None);
        assert_eq!(parse_sync_preamble(b"\n\n\n").unwrap(), None);
        assert_eq!(parse_sync_preamble(b"\n\n$12").unwrap(), None);
        assert_eq!(parse_sync_preamble(b"\n\n$1234\r\nREDIS").unwrap(), Some((SyncHeader::Length(1234), 9)));
        let mark = "0123456789abcdef0123456789abcdef01234567";
        let text = format!("\n$EOF:{mark}\r\nREDIS");
        let (h, n) = parse_sync_preamble(text.as_bytes()).unwrap().unwrap();
        assert_eq!(h, SyncHeader::Mark(mark.as_bytes().try_into().unwrap()));
        assert_eq!(&text.as_bytes()[n..], b"REDIS");
        // a PSYNC-style status line before the header is tolerated
        let text = "+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n$3\r\nabc";
        assert_eq!(parse_sync_preamble(text.as_bytes()).unwrap(), Some((SyncHeader::Length(3), text.len() - 3)));
    }

    #[test]
    fn sync_preamble_errors() {
        assert_eq!(
            parse_sync_preamble(b"\n-NOPERM this user has no permissions to run the 'sync' command\r\n"),
            Err(SyncError::Server("NOPERM this user has no permissions to run the 'sync' command".into()))
        );
        assert!(matches!(parse_sync_preamble(b"$EOF:short\r\n"), Err(SyncError::Protocol(_))));
        assert!(matches!(parse_sync_preamble(b"$12x\r\n"), Err(SyncError::Protocol(_))));
        assert!(matches!(parse_sync_preamble(b"*1\r\n"), Err(SyncError::Protocol(_))));
    }

    fn frame(header: SyncHeader, input: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut f = Framer::new(&header);
        let mut out = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            f.feed(chunk, &mut out);
        }
        assert_eq!(f.emitted(), out.len() as u64);
        (out, f.is_done())
    }

    #[test]
    fn length_framing_stops_at_the_length() {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut input = payload.clone();
        input.extend_from_slice(b"*1\r\n$4\r\nPING\r\n"); // replication stream of an old master
        for step in [1, 7, 100, 5000] {
            let (out, done) = frame(SyncHeader::Length(1000), &input, step);
            assert!(done);
            assert_eq!(out, payload);
        }
        let (out, done) = frame(SyncHeader::Length(1000), &payload[..999], 64);
        assert!(!done, "one byte short is not complete");
        assert_eq!(out.len(), 999);
        assert!(Framer::new(&SyncHeader::Length(0)).is_done());
    }

    #[test]
    fn mark_framing_finds_the_mark_across_reads() {
        let mark: [u8; MARK_LEN] = *b"a1b2c3d4e5f6a7b8c9d0a1b2c3d4e5f6a7b8c9d0";
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut input = payload.clone();
        input.extend_from_slice(&mark);
        for step in [1, 3, 39, 40, 41, 64, 4999, 10_000] {
            let (out, done) = frame(SyncHeader::Mark(mark), &input, step);
            assert!(done, "step {step}");
            assert_eq!(out, payload, "step {step}");
        }
        // bytes after the mark are ignored
        let mut more = input.clone();
        more.extend_from_slice(b"\n*1\r\n$4\r\nPING\r\n");
        let (out, done) = frame(SyncHeader::Mark(mark), &more, 100);
        assert!(done);
        assert_eq!(out, payload);
        // without the mark (connection cut), the last bytes are held back and it is not done
        let (out, done) = frame(SyncHeader::Mark(mark), &input[..input.len() - 1], 100);
        assert!(!done);
        assert_eq!(out, payload, "the mark's first 39 bytes are held back");
        // near misses (the mark's first 39 bytes, its first byte repeated) are payload; this
        // mark has no border (no prefix that is also a suffix), unlike the periodic one above
        let mark: [u8; MARK_LEN] = *b"0123456789abcdefghijklmnopqrstuvwxyzABCD";
        let mut tricky = mark[..MARK_LEN - 1].to_vec();
        tricky.extend_from_slice(&[mark[0]; 100]);
        tricky.extend_from_slice(&mark[..20]);
        let mut input = tricky.clone();
        input.extend_from_slice(&mark);
        for step in [1, 13, 39, 40, 64, 1000] {
            let (out, done) = frame(SyncHeader::Mark(mark), &input, step);
            assert!(done, "step {step}");
            assert_eq!(out, tricky, "step {step}");
        }
        // an empty payload is just the mark
        let (out, done) = frame(SyncHeader::Mark(mark), &mark, 5);
        assert!(done && out.is_empty());
    }
}
