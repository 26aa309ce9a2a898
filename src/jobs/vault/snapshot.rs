//! Checking a Vault/OpenBao raft snapshot as it streams past, without holding it.
//!
//! The snapshot (`GET /v1/sys/storage/raft/snapshot`, `bao operator raft snapshot save`) is a
//! gzipped tar holding `meta.json` (the raft `SnapshotMeta`: Index, Term, Size …), `state.bin`
//! (the FSM's bolt database), `SHA256SUMS` (sha256sum format over the two) and
//! `SHA256SUMS.sealed` (the same sums encrypted with the cluster's seal, which only the cluster
//! can check). [`verify`] reads the archive once, hashes `meta.json` and `state.bin` while they
//! pass, and checks them against `SHA256SUMS`; the small members are held in memory (capped),
//! `state.bin` never is. Pure: no I/O besides the given reader.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub const META: &str = "meta.json";
pub const STATE: &str = "state.bin";
pub const SUMS: &str = "SHA256SUMS";
pub const SEALED: &str = "SHA256SUMS.sealed";

/// Largest `meta.json`, `SHA256SUMS` or `SHA256SUMS.sealed` accepted (real ones are a few hundred
/// bytes; a peer list of a large cluster stays far below this).
pub const SMALL_MEMBER_MAX: u64 = 1 << 20;

/// raft's `SnapshotMeta`, as Vault and OpenBao write it into `meta.json`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RaftMeta {
    #[serde(default)]
    pub version: i64,
    #[serde(default, rename = "ID")]
    pub id: String,
    pub index: u64,
    pub term: u64,
    #[serde(default)]
    pub configuration_index: u64,
    /// Bytes of `state.bin`.
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub configuration: Option<RaftConfiguration>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RaftConfiguration {
    #[serde(default)]
    pub servers: Option<Vec<RaftServer>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RaftServer {
    /// 0 voter, 1 nonvoter, 2 staging.
    #[serde(default)]
    pub suffrage: i64,
    #[serde(default, rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub address: String,
}

impl RaftServer {
    /// `node1 127.0.0.1:8201 (voter)`.
    pub fn describe(&self) -> String {
        let role = match self.suffrage {
            0 => "voter",
            1 => "nonvoter",
            _ => "staging",
        };
        format!("{} {} ({role})", self.id, self.address)
    }
}

/// What a verified snapshot holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    pub meta: RaftMeta,
    pub state_size: u64,
    pub state_sha256: String,
    pub meta_sha256: String,
    /// Bytes of the gzipped archive itself.
    pub archive_size: u64,
}

/// Why a snapshot is not usable.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the snapshot is empty")]
    Empty,
    #[error("the snapshot is not a readable gzipped tar archive: {0}")]
    Corrupt(String),
    #[error("`{0}` is missing from the snapshot")]
    Missing(&'static str),
    #[error("unexpected member `{0}` in the snapshot (a raft snapshot holds {META}, {STATE}, {SUMS}, {SEALED})")]
    Unexpected(String),
    #[error("`{0}` appears twice in the snapshot")]
    Duplicate(String),
    #[error("`{0}` is larger than {SMALL_MEMBER_MAX} bytes")]
    TooLarge(&'static str),
    #[error("{SUMS} is unreadable: {0}")]
    BadSums(String),
    #[error("{META} is unreadable: {0}")]
    BadMeta(String),
    #[error("checksum mismatch: {SUMS} lists sha256 {listed} for `{file}`, but its contents hash to {actual}")]
    Mismatch { file: &'static str, listed: String, actual: String },
    #[error("{META} says {STATE} holds {meta} bytes, but it holds {actual}")]
    SizeMismatch { meta: u64, actual: u64 },
    #[error("data follows the end of the gzip stream")]
    Trailing,
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

fn corrupt(e: io::Error) -> VerifyError {
    VerifyError::Corrupt(e.to_string())
}

fn read_small(entry: &mut impl Read, name: &'static str) -> Result<Vec<u8>, VerifyError> {
    let mut out = Vec::new();
    entry.take(SMALL_MEMBER_MAX + 1).read_to_end(&mut out).map_err(corrupt)?;
    if out.len() as u64 > SMALL_MEMBER_MAX {
        return Err(VerifyError::TooLarge(name));
    }
    Ok(out)
}

/// Parse sha256sum output (`<hex>  <name>`, `<hex> *<name>` for binary mode) into name → hex.
pub fn parse_sums(text: &[u8]) -> Result<BTreeMap<String, String>, VerifyError> {
    let text = std::str::from_utf8(text).map_err(|_| VerifyError::BadSums("not UTF-8".into()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (hash, name) = line
            .split_once(' ')
            .ok_or_else(|| VerifyError::BadSums(format!("line {}: expected `<sha256>  <file>`", i + 1)))?;
        let name = name.trim_start_matches(' ').trim_start_matches('*').trim_end_matches('\r');
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(VerifyError::BadSums(format!("line {}: `{hash}` is not a sha256", i + 1)));
        }
        if name.is_empty() {
            return Err(VerifyError::BadSums(format!("line {}: no file name", i + 1)));
        }
        if out.insert(name.to_string(), hash.to_ascii_lowercase()).is_some() {
            return Err(VerifyError::BadSums(format!("`{name}` is listed twice")));
        }
    }
    Ok(out)
}

/// Read a whole snapshot from `input` and check it: every member present once, nothing else,
/// `meta.json` and `state.bin` matching `SHA256SUMS`, `meta.json`'s Size matching `state.bin`,
/// an intact gzip stream (CRC and length) with nothing after it.
pub fn verify<R: Read>(input: R) -> Result<SnapshotInfo, VerifyError> {
    let mut source = BufReader::with_capacity(64 * 1024, Counting { inner: input, n: 0 });
    if source.fill_buf().map_err(corrupt)?.is_empty() {
        return Err(VerifyError::Empty);
    }
    let mut gz = flate2::bufread::GzDecoder::new(source);

    let mut meta_raw: Option<Vec<u8>> = None;
    let mut sums_raw: Option<Vec<u8>> = None;
    let mut sealed_seen = false;
    let mut state: Option<(u64, String)> = None;
    {
        let mut archive = tar::Archive::new(&mut gz);
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let name = entry.path().map_err(corrupt)?.to_string_lossy().into_owned();
            let name = name.trim_start_matches("./").to_string();
            if !entry.header().entry_type().is_file() {
                return Err(VerifyError::Unexpected(name));
            }
            let seen = match name.as_str() {
                META => meta_raw.is_some(),
                STATE => state.is_some(),
                SUMS => sums_raw.is_some(),
                SEALED => sealed_seen,
                _ => return Err(VerifyError::Unexpected(name)),
            };
            if seen {
                return Err(VerifyError::Duplicate(name));
            }
            match name.as_str() {
                META => meta_raw = Some(read_small(&mut entry, META)?),
                SUMS => sums_raw = Some(read_small(&mut entry, SUMS)?),
                SEALED => {
                    read_small(&mut entry, SEALED)?;
                    sealed_seen = true;
                }
                _ => {
                    let mut hasher = Sha256::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut size = 0u64;
                    loop {
                        let n = entry.read(&mut buf).map_err(corrupt)?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                        size += n as u64;
                    }
                    state = Some((size, hex::encode(hasher.finalize())));
                }
            }
        }
    }
    // tar stops at its end-of-archive blocks: read on to the end of the gzip member, where its
    // CRC and length are checked, then make sure nothing follows it
    io::copy(&mut gz, &mut io::sink()).map_err(corrupt)?;
    let mut source = gz.into_inner();
    if !source.fill_buf().map_err(corrupt)?.is_empty() {
        return Err(VerifyError::Trailing);
    }
    let archive_size = source.get_ref().n;

    let meta_raw = meta_raw.ok_or(VerifyError::Missing(META))?;
    let (state_size, state_sha256) = state.ok_or(VerifyError::Missing(STATE))?;
    let sums = parse_sums(&sums_raw.ok_or(VerifyError::Missing(SUMS))?)?;
    if !sealed_seen {
        return Err(VerifyError::Missing(SEALED));
    }
    if let Some(other) = sums.keys().find(|k| k.as_str() != META && k.as_str() != STATE) {
        return Err(VerifyError::BadSums(format!("lists `{other}`, which a raft snapshot does not hold")));
    }
    let meta_sha256 = hex::encode(Sha256::digest(&meta_raw));
    for (file, actual) in [(META, &meta_sha256), (STATE, &state_sha256)] {
        let listed = sums.get(file).ok_or_else(|| VerifyError::BadSums(format!("`{file}` is not listed")))?;
        if listed != actual {
            return Err(VerifyError::Mismatch { file, listed: listed.clone(), actual: actual.clone() });
        }
    }
    let meta: RaftMeta = serde_json::from_slice(&meta_raw).map_err(|e| VerifyError::BadMeta(e.to_string()))?;
    if meta.size != state_size {
        return Err(VerifyError::SizeMismatch { meta: meta.size, actual: state_size });
    }
    Ok(SnapshotInfo { meta, state_size, state_sha256, meta_sha256, archive_size })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    pub(crate) const META_JSON: &str = r#"{"Version":1,"ID":"bolt-snapshot","Index":34,"Term":3,"Peers":null,"Configuration":{"Servers":[{"Suffrage":0,"ID":"node1","Address":"127.0.0.1:18201"}]},"ConfigurationIndex":1,"Size":SIZE}"#;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    /// A snapshot archive built from members, gzipped.
    pub(crate) fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, *data).unwrap();
        }
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).unwrap();
        gz.finish().unwrap()
    }

    /// A well-formed snapshot around `state`, and its members.
    pub(crate) fn members(state: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let meta = META_JSON.replace("SIZE", &state.len().to_string()).into_bytes();
        let sums = format!("{}  meta.json\n{}  state.bin\n", sha(&meta), sha(state)).into_bytes();
        (meta, sums, b"sealed-sums-opaque".to_vec())
    }

    pub(crate) fn good(state: &[u8]) -> Vec<u8> {
        let (meta, sums, sealed) = members(state);
        archive(&[(META, &meta), (STATE, state), (SUMS, &sums), (SEALED, &sealed)])
    }

    fn state_bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn accepts_a_good_snapshot_and_reads_its_facts() {
        let state = state_bytes(300_000);
        let snap = good(&state);
        let info = verify(&snap[..]).unwrap();
        assert_eq!(info.meta.index, 34);
        assert_eq!(info.meta.term, 3);
        assert_eq!(info.meta.size, 300_000);
        assert_eq!(info.state_size, 300_000);
        assert_eq!(info.state_sha256, sha(&state));
        assert_eq!(info.archive_size, snap.len() as u64);
        let servers = info.meta.configuration.unwrap().servers.unwrap();
        assert_eq!(servers[0].describe(), "node1 127.0.0.1:18201 (voter)");
    }

    #[test]
    fn a_changed_state_bin_is_a_checksum_mismatch() {
        let state = state_bytes(5000);
        let (meta, sums, sealed) = members(&state);
        let mut bad = state.clone();
        bad[2500] ^= 1;
        let snap = archive(&[(META, &meta), (STATE, &bad), (SUMS, &sums), (SEALED, &sealed)]);
        match verify(&snap[..]) {
            Err(VerifyError::Mismatch { file, listed, actual }) => {
                assert_eq!(file, STATE);
                assert_eq!(listed, sha(&state));
                assert_eq!(actual, sha(&bad));
            }
            other => panic!("{other:?}"),
        }
        let msg = verify(&snap[..]).unwrap_err().to_string();
        assert!(msg.contains("checksum mismatch") && msg.contains("state.bin"), "{msg}");
    }

    #[test]
    fn a_changed_meta_json_is_a_checksum_mismatch() {
        let state = state_bytes(100);
        let (meta, sums, sealed) = members(&state);
        let changed = String::from_utf8(meta).unwrap().replace("\"Index\":34", "\"Index\":35").into_bytes();
        let snap = archive(&[(META, &changed), (STATE, &state), (SUMS, &sums), (SEALED, &sealed)]);
        assert!(matches!(verify(&snap[..]), Err(VerifyError::Mismatch { file: META, .. })));
    }

    #[test]
    fn every_member_is_required() {
        let state = state_bytes(100);
        let (meta, sums, sealed) = members(&state);
        let all: [(&str, &[u8]); 4] = [(META, &meta), (STATE, &state), (SUMS, &sums), (SEALED, &sealed)];
        for skip in 0..4 {
            let some: Vec<(&str, &[u8])> =
                all.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, m)| *m).collect();
            match verify(&archive(&some)[..]) {
                Err(VerifyError::Missing(name)) => assert_eq!(name, all[skip].0),
                other => panic!("without {}: {other:?}", all[skip].0),
            }
        }
    }

    #[test]
    fn members_in_another_order_are_fine_but_strangers_and_twins_are_not() {
        let state = state_bytes(100);
        let (meta, sums, sealed) = members(&state);
        let snap = archive(&[(SUMS, &sums), (SEALED, &sealed), (STATE, &state), (META, &meta)]);
        assert!(verify(&snap[..]).is_ok());
        let snap = archive(&[(META, &meta), (STATE, &state), (SUMS, &sums), (SEALED, &sealed), ("evil.sh", b"x")]);
        assert!(matches!(verify(&snap[..]), Err(VerifyError::Unexpected(n)) if n == "evil.sh"));
        let snap = archive(&[(META, &meta), (STATE, &state), (STATE, &state), (SUMS, &sums), (SEALED, &sealed)]);
        assert!(matches!(verify(&snap[..]), Err(VerifyError::Duplicate(n)) if n == STATE));
    }

    #[test]
    fn sums_must_list_both_files_and_nothing_else() {
        let state = state_bytes(100);
        let (meta, _, sealed) = members(&state);
        let only_meta = format!("{}  meta.json\n", sha(&meta)).into_bytes();
        let snap = archive(&[(META, &meta), (STATE, &state), (SUMS, &only_meta), (SEALED, &sealed)]);
        assert!(matches!(verify(&snap[..]), Err(VerifyError::BadSums(m)) if m.contains("state.bin")));
        let extra =
            format!("{}  meta.json\n{}  state.bin\n{}  other\n", sha(&meta), sha(&state), sha(b"")).into_bytes();
        let snap = archive(&[(META, &meta), (STATE, &state), (SUMS, &extra), (SEALED, &sealed)]);
        assert!(matches!(verify(&snap[..]), Err(VerifyError::BadSums(m)) if m.contains("other")));
        let garbage = b"not a sums file".to_vec();
        let snap = archive(&[(META, &meta), (STATE, &state), (SUMS, &garbage), (SEALED, &sealed)]);
        assert!(matches!(verify(&snap[..]), Err(VerifyError::BadSums(_))));
    }

    #[test]
    fn parses_sha256sum_formats() {
        let h = "a".repeat(64);
        let m = parse_sums(format!("{h}  meta.json\n{}  *state.bin\r\n\n", "B".repeat(64)).as_bytes()).unwrap();
        assert_eq!(m["meta.json"], h);
        assert_eq!(m["state.bin"], "b".repeat(64));
        assert!(parse_sums(format!("{h}  a\n{h}  a\n").as_bytes()).is_err());
        assert!(parse_sums(b"abc  meta.json").is_err());
    }

    #[test]
    fn meta_size_must_match_state_bin() {
        let state = state_bytes(100);
        let meta = META_JSON.replace("SIZE", "99").into_bytes();
        let sums = format!("{}  meta.json\n{}  state.bin\n", sha(&meta), sha(&state)).into_bytes();
        let snap = archive(&[(META, &meta), (STATE, &state), (SUMS, &sums), (SEALED, b"s")]);
        assert!(matches!(verify(&snap[..]), Err(VerifyError::SizeMismatch { meta: 99, actual: 100 })));
        let meta = b"{\"Index\": \"x\"}".to_vec();
        let sums = format!("{}  meta.json\n{}  state.bin\n", sha(&meta), sha(&state)).into_bytes();
        let snap = archive(&[(META, &meta), (STATE, &state), (SUMS, &sums), (SEALED, b"s")]);
        assert!(matches!(verify(&snap[..]), Err(VerifyError::BadMeta(_))));
    }

    #[test]
    fn damaged_truncated_or_foreign_streams_are_refused() {
        let snap = good(&state_bytes(200_000));
        assert!(matches!(verify(&b""[..]), Err(VerifyError::Empty)));
        assert!(matches!(verify(&b"{\"errors\":[]}"[..]), Err(VerifyError::Corrupt(_))));
        // cut anywhere, including inside the gzip trailer (which OpenBao itself does not check)
        for cut in [10, snap.len() / 2, snap.len() - 12, snap.len() - 4, snap.len() - 1] {
            assert!(verify(&snap[..cut]).is_err(), "cut at {cut} of {}", snap.len());
        }
        let mut flipped = snap.clone();
        let n = flipped.len();
        flipped[n - 6] ^= 0xff; // the CRC in the trailer
        assert!(matches!(verify(&flipped[..]), Err(VerifyError::Corrupt(_))), "{:?}", verify(&flipped[..]));
        let mut trailing = snap.clone();
        trailing.extend_from_slice(b"more");
        assert!(matches!(verify(&trailing[..]), Err(VerifyError::Trailing)));
    }

    #[test]
    fn a_huge_small_member_is_refused() {
        let state = state_bytes(10);
        let (meta, sums, _) = members(&state);
        let big = vec![0u8; SMALL_MEMBER_MAX as usize + 1];
        let snap = archive(&[(META, &meta), (STATE, &state), (SUMS, &sums), (SEALED, &big)]);
        assert!(matches!(verify(&snap[..]), Err(VerifyError::TooLarge(SEALED))));
    }
}
