//! End to end: `drctl run` / `restore` for `kind = "redis"` against real redis-server processes:
//! the shared test server, plus servers each test starts for itself (sources with a chosen
//! configuration, fresh destinations, password/ACL/TLS servers, a replica and a sentinel).
//! Every test compares real data: each key's type, value and absolute expiry time.

mod common;
#[path = "common/kubeapi.rs"]
mod kubeapi;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------- servers

/// A redis-server (or sentinel) of this test, killed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// Arguments redis-cli needs to reach it (auth, TLS).
    cli_args: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    /// A plain server on a free port in its own directory, no persistence unless `args` say so.
    fn start(args: &[&str]) -> Server {
        Server::start_with(args, Vec::new(), false)
    }

    fn start_with(args: &[&str], cli_args: Vec<String>, tls: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, args, cli_args, tls)
    }

    fn start_in(dir: tempfile::TempDir, args: &[&str], cli_args: Vec<String>, tls: bool) -> Server {
        Server::start_try(dir, args, cli_args, tls, 3)
    }

    fn start_try(dir: tempfile::TempDir, args: &[&str], cli_args: Vec<String>, tls: bool, tries: u32) -> Server {
        let port = free_port();
        let port_args: Vec<String> = if tls {
            vec!["--port".into(), "0".into(), "--tls-port".into(), port.to_string()]
        } else {
            vec!["--port".into(), port.to_string()]
        };
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new("redis-server")
            .args(&port_args)
            .args(["--bind", "127.0.0.1", "--daemonize", "no", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--repl-diskless-sync-delay", "0", "--logfile", ""])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let mut s = Server { child, port, dir, cli_args: cli_args.clone() };
        if s.wait_ready() {
            return s;
        }
        let _ = s.child.kill();
        let _ = s.child.wait();
        let log = s.log();
        // the port was taken between probing and binding: try another one
        assert!(tries > 1 && log.contains("Address already in use"), "redis-server did not start:\n{log}");
        let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
        drop(s);
        Server::start_try(dir, args, cli_args, tls, tries - 1)
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let out = self.cli_output(&["PING"]);
            if out.trim() == "PONG" || out.contains("NOAUTH") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn cli_output(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--no-auth-warning"])
            .args(&self.cli_args)
            .args(args)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// redis-cli ARGS; panics on an error reply.
    fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(!out.starts_with("ERR") && !out.contains("(error)"), "redis-cli {args:?}: {out}");
        out.trim().to_string()
    }

    fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info = self.cli(&["INFO", section]);
        info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
    }

    fn client(&self) -> Client {
        Client::connect(self.port, &self.cli_args)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- a tiny RESP client for the checks

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum V {
    S(String),
    E(String),
    I(i64),
    B(Option<Vec<u8>>),
    A(Option<Vec<V>>),
}

impl V {
    fn text(&self) -> String {
        match self {
            V::S(s) | V::E(s) => s.clone(),
            V::B(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            V::I(i) => i.to_string(),
            other => format!("{other:?}"),
        }
    }
    fn items(&self) -> Vec<V> {
        match self {
            V::A(Some(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn c(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

impl Client {
    /// Connect; `cli_args` may hold `-a PW` and `--user U` as given to redis-cli.
    fn connect(port: u16, cli_args: &[String]) -> Client {
        let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut client = Client { r: BufReader::new(w.try_clone().unwrap()), w };
        let get = |flag: &str| cli_args.iter().position(|a| a == flag).map(|i| cli_args[i + 1].clone());
        if let Some(pw) = get("-a") {
            let auth = match get("--user") {
                Some(u) => c(&["AUTH", &u, &pw]),
                None => c(&["AUTH", &pw]),
            };
            assert_eq!(client.cmd(auth), V::S("OK".into()));
        }
        client
    }

    fn read(&mut self) -> V {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line).unwrap();
        assert!(line.ends_with(b"\r\n"), "reply line {line:?}");
        let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        match line[0] {
            b'+' => V::S(body),
            b'-' => V::E(body),
            b':' => V::I(body.parse().unwrap()),
            b'$' => {
                let n: i64 = body.parse().unwrap();
                if n < 0 {
                    return V::B(None);
                }
                let mut buf = vec![0u8; n as usize + 2];
                self.r.read_exact(&mut buf).unwrap();
                buf.truncate(n as usize);
                V::B(Some(buf))
            }
            b'*' => {
                let n: i64 = body.parse().unwrap();
                if n < 0 {
                    return V::A(None);
                }
                V::A(Some((0..n).map(|_| self.read()).collect()))
            }
            b => panic!("reply type {b}"),
        }
    }

    fn cmd(&mut self, args: Vec<Vec<u8>>) -> V {
        self.w.write_all(&encode(&args)).unwrap();
        self.read()
    }

    /// Send commands in batches, return every reply; panics on an error reply.
    fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> Vec<V> {
        let mut out = Vec::with_capacity(cmds.len());
        for batch in cmds.chunks(500) {
            let mut buf = Vec::new();
            for cmd in batch {
                buf.extend_from_slice(&encode(cmd));
            }
            self.w.write_all(&buf).unwrap();
            for cmd in batch {
                let v = self.read();
                assert!(!matches!(v, V::E(_)), "{:?} -> {v:?}", String::from_utf8_lossy(&cmd.concat()));
                out.push(v);
            }
        }
        out
    }
}

// ---------------------------------------------------------------- data

/// `n` keys of each of string, hash, list, set, zset (small and large encodings), `n / 5` streams
/// with a consumer group and pending entries, a third of all keys with a TTL (1 h and more), and
/// keys in databases 1 and 9 too.
fn populate(cl: &mut Client, n: usize) -> usize {
    let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut keys = 0;
    let ttl = |cmds: &mut Vec<Vec<Vec<u8>>>, key: &str, i: usize| {
        if i.is_multiple_of(3) {
            cmds.push(vec![
                b"PEXPIRE".to_vec(),
                key.as_bytes().to_vec(),
                (3_600_000 + i * 1000).to_string().into_bytes(),
            ]);
        }
    };
    for i in 0..n {
        let k = format!("s:{i}");
        let v: Vec<u8> = match i % 10 {
            0 => (0..=255u8).cycle().skip(i % 256).take(300).collect(), // binary
            7 => i.to_string().into_bytes(),                            // int encoding
            _ => format!("value-{i}-{}", "x".repeat(i % 120)).into_bytes(),
        };
        cmds.push(vec![b"SET".to_vec(), k.clone().into_bytes(), v]);
        ttl(&mut cmds, &k, i);

        let k = format!("h:{i}");
        let fields = if i.is_multiple_of(100) { 300 } else { i % 5 + 1 };
        let mut cmd = c(&["HSET", &k]);
        for f in 0..fields {
            cmd.push(format!("f{f}").into_bytes());
            cmd.push(format!("v{}", f * i).into_bytes());
        }
        cmds.push(cmd);
        ttl(&mut cmds, &k, i + 1);

        let k = format!("l:{i}");
        let len = if i.is_multiple_of(100) { 1000 } else { i % 10 + 1 };
        let mut cmd = c(&["RPUSH", &k]);
        cmd.extend((0..len).map(|e| format!("e{e}-{}", i % 7).into_bytes()));
        cmds.push(cmd);
        ttl(&mut cmds, &k, i + 2);

        let k = format!("set:{i}");
        let members = if i.is_multiple_of(100) { 600 } else { i % 8 + 1 };
        let mut cmd = c(&["SADD", &k]);
        if i.is_multiple_of(2) {
            cmd.extend((0..members).map(|m| (m * 3).to_string().into_bytes())); // intset
        } else {
            cmd.extend((0..members).map(|m| format!("m{m}").into_bytes()));
        }
        cmds.push(cmd);
        ttl(&mut cmds, &k, i);

        let k = format!("z:{i}");
        let members = if i.is_multiple_of(100) { 300 } else { i % 6 + 1 };
        let mut cmd = c(&["ZADD", &k]);
        for m in 0..members {
            cmd.push(format!("{}", m as f64 * 1.5 - 3.0).into_bytes());
            cmd.push(format!("zm{m}").into_bytes());
        }
        cmds.push(cmd);
        ttl(&mut cmds, &k, i + 1);
        keys += 5;

        if i.is_multiple_of(5) {
            let k = format!("x:{i}");
            for e in 0..4 {
                cmds.push(c(&["XADD", &k, "*", "field", &format!("v{e}"), "n", &i.to_string()]));
            }
            cmds.push(c(&["XGROUP", "CREATE", &k, "g1", "0"]));
            cmds.push(c(&["XREADGROUP", "GROUP", "g1", "alice", "COUNT", "2", "STREAMS", &k, ">"]));
            ttl(&mut cmds, &k, i);
            keys += 1;
        }
    }
    cmds.push(c(&["SELECT", "1"]));
    for i in 0..200u32 {
        cmds.push(c(&["SET", &format!("db1:{i}"), &format!("one-{i}")]));
        if i.is_multiple_of(2) {
            cmds.push(c(&["EXPIRE", &format!("db1:{i}"), "86400"]));
        }
    }
    cmds.push(c(&["SELECT", "9"]));
    for i in 0..20 {
        cmds.push(c(&["HSET", &format!("db9:{i}"), "a", "1", "b", &i.to_string()]));
    }
    cmds.push(c(&["SELECT", "0"]));
    cl.pipeline(&cmds);
    keys + 220
}

/// Every key of every database: `db:key` → type, value and absolute expiry (PEXPIRETIME).
fn snapshot(client: &mut Client) -> BTreeMap<String, String> {
    let info = client.cmd(c(&["INFO", "keyspace"])).text();
    let dbs: Vec<String> = info
        .lines()
        .filter_map(|l| l.strip_prefix("db").and_then(|r| r.split(':').next()).map(str::to_string))
        .collect();
    let mut out = BTreeMap::new();
    for db in dbs {
        client.cmd(c(&["SELECT", &db]));
        let mut keys = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let r = client.cmd(c(&["SCAN", &cursor, "COUNT", "1000"])).items();
            cursor = r[0].text();
            keys.extend(r[1].items().iter().map(V::text));
            if cursor == "0" {
                break;
            }
        }
        let types = client.pipeline(&keys.iter().map(|k| c(&["TYPE", k])).collect::<Vec<_>>());
        let expiries = client.pipeline(&keys.iter().map(|k| c(&["PEXPIRETIME", k])).collect::<Vec<_>>());
        let mut value_cmds = Vec::new();
        for (k, t) in keys.iter().zip(&types) {
            let t = t.text();
            value_cmds.push(match t.as_str() {
                "string" => c(&["GET", k]),
                "hash" => c(&["HGETALL", k]),
                "list" => c(&["LRANGE", k, "0", "-1"]),
                "set" => c(&["SMEMBERS", k]),
                "zset" => c(&["ZRANGE", k, "0", "-1", "WITHSCORES"]),
                "stream" => c(&["XRANGE", k, "-", "+"]),
                other => panic!("unexpected type {other}"),
            });
        }
        let values = client.pipeline(&value_cmds);
        for ((k, t), (v, e)) in keys.iter().zip(&types).zip(values.iter().zip(&expiries)) {
            let t = t.text();
            let v = match (t.as_str(), v) {
                // unordered collections: compare sorted
                ("set", V::A(Some(items))) => {
                    let mut s = items.clone();
                    s.sort();
                    V::A(Some(s))
                }
                ("hash", V::A(Some(items))) => {
                    let mut pairs: Vec<Vec<V>> = items.chunks(2).map(|p| p.to_vec()).collect();
                    pairs.sort();
                    V::A(Some(pairs.concat()))
                }
                _ => v.clone(),
            };
            let mut extra = String::new();
            if t == "stream" {
                let groups = client.cmd(c(&["XINFO", "GROUPS", k]));
                let pending = client.cmd(c(&["XPENDING", k, "g1"]));
                extra = format!(" groups={groups:?} pending={pending:?}");
            }
            out.insert(format!("{db}:{k}"), format!("{t} exp={} {v:?}{extra}", e.text()));
        }
    }
    client.cmd(c(&["SELECT", "0"]));
    out
}

fn assert_same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) {
    assert_eq!(a.len(), b.len(), "key counts differ");
    for (k, v) in a {
        assert_eq!(Some(v), b.get(k), "key {k}");
    }
}

// ---------------------------------------------------------------- drctl

fn job(name: &str, url: &str, extra: &str) -> String {
    format!("[jobs.{name}]\nkind = \"redis\"\ntargets = [\"local\"]\nurl = \"{url}\"\n{extra}\n")
}

fn backup_id(r: &Ran) -> String {
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.trim().to_string()
}

/// The newest manifest on the fs target.
fn manifest(s: &Scratch) -> serde_json::Value {
    manifest_of(s, "")
}

/// The newest manifest of `job` (any job when empty).
fn manifest_of(s: &Scratch, job: &str) -> serde_json::Value {
    // newest by the manifest's own start time: two backups in one second have ids that sort by
    // their random suffix, not by time
    s.fs_files()
        .iter()
        .filter(|f| f.ends_with(".manifest.json") && f.contains(&format!("{job}/")))
        .map(|f| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(s.path("backups").join(f)).unwrap()).unwrap()
        })
        .max_by_key(|m| m["started_at"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()))
        .expect("a manifest")
}

fn rdb_ok(path: &Path) {
    let out = Command::new("redis-check-rdb").arg(path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("RDB looks OK"), "redis-check-rdb {}: {text}", path.display());
}

// ---------------------------------------------------------------- tests

#[test]
fn round_trip_of_every_type_with_ttls_by_replication() {
    let src = Server::start(&["--repl-diskless-sync", "yes"]);
    let n = populate(&mut src.client(), 1200);
    let before = snapshot(&mut src.client());
    assert_eq!(before.len(), n);

    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job("cache", &src.url(), "")));
    let id = backup_id(&run(s.drctl().args(["run", "cache"])));
    let files = s.fs_files();
    assert!(files.iter().any(|f| f.ends_with(&format!("{id}.dump.rdb.zst.age"))), "{files:?}");

    let m = manifest(&s);
    assert_eq!(m["kind"], "redis");
    assert_eq!(m["artifacts"][0]["format"], "rdb");
    let f = &m["facts"];
    assert_eq!(f["redis_version"].as_str().unwrap().split('.').next(), Some("7"));
    assert_eq!(f["transfer"], "diskless", "{f}");
    assert_eq!(f["role"], "master");
    assert_eq!(f["rdb_version"], 10);
    assert_eq!(f["rdb_checksum"], true);
    assert_eq!(f["keys"].as_u64(), Some(n as u64));
    let dbs: Vec<u64> = f["databases"].as_array().unwrap().iter().map(|d| d["db"].as_u64().unwrap()).collect();
    assert_eq!(dbs, vec![0, 1, 9]);
    assert_eq!(f["databases"][1]["keys"], 200);
    assert_eq!(f["databases"][1]["expires"], 100);

    let dest = Server::start(&[]);
    let r = run(s.drctl().args(["restore", "cache", "--latest", "--to", &dest.url()]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("restored dump -> {}", dest.url())), "{r:?}");
    let after = snapshot(&mut dest.client());
    assert_same(&before, &after);

    // promoted back, and its own settings as they were
    assert_eq!(dest.info_field("replication", "role").as_deref(), Some("master"));
    assert_eq!(dest.cli(&["CONFIG", "GET", "masterauth"]), "masterauth");
    // the source is untouched
    assert_same(&before, &snapshot(&mut src.client()));
}

#[test]
fn disk_based_transfer_and_to_dir_for_an_offline_restart() {
    // repl-diskless-sync no: the server saves to its disk first and sends `$<len>`
    let src = Server::start(&["--repl-diskless-sync", "no"]);
    populate(&mut src.client(), 300);
    let before = snapshot(&mut src.client());

    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job("cache", &src.url(), "")));
    backup_id(&run(s.drctl().args(["run", "cache"])));
    assert_eq!(manifest(&s)["facts"]["transfer"], "disk");

    let dir = s.path("restored");
    let r = run(s.drctl().args(["restore", "cache", "--latest", "--to-dir"]).arg(&dir));
    assert_eq!(r.code, 0, "{r:?}");
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["dump.rdb".to_string()], "no partial file is left");
    rdb_ok(&dir.join("dump.rdb"));

    // the file exists now: refused without --force, replaced with it
    let r = run(s.drctl().args(["restore", "cache", "--latest", "--to-dir"]).arg(&dir));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not empty") && r.stderr.contains("--force"), "{r:?}");
    let r = run(s.drctl().args(["restore", "cache", "--latest", "--force", "--to-dir"]).arg(&dir));
    assert_eq!(r.code, 0, "{r:?}");

    // a server started on that directory has the same data
    let tmp = tempfile::tempdir().unwrap();
    std::fs::rename(dir.join("dump.rdb"), tmp.path().join("dump.rdb")).unwrap();
    let restarted = Server::start_in(tmp, &["--dbfilename", "dump.rdb"], Vec::new(), false);
    assert_same(&before, &snapshot(&mut restarted.client()));
}

#[test]
fn output_to_stdout_and_file_is_a_valid_rdb_from_the_shared_server() {
    let url = endpoint("DRCTL_TEST_REDIS_URL");
    let port: u16 = url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
    let mut shared = Client::connect(port, &[]);
    let prefix = unique("drctl_e2e");
    let cmds: Vec<Vec<Vec<u8>>> = (0..500).map(|i| c(&["SET", &format!("{prefix}:{i}"), &"v".repeat(i)])).collect();
    shared.pipeline(&cmds);

    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job("shared", &url, "")));
    backup_id(&run(s.drctl().args(["run", "shared"])));

    let out = s.drctl().args(["restore", "shared", "--latest", "--output", "-"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.starts_with(b"REDIS"));
    let file = s.path("stdout.rdb");
    std::fs::write(&file, &out.stdout).unwrap();
    rdb_ok(&file);

    let file2 = s.path("out.rdb");
    let r = run(s.drctl().args(["restore", "shared", "--latest", "--output"]).arg(&file2));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(&file2).unwrap(), out.stdout);
    let m = manifest(&s);
    assert_eq!(m["artifacts"][0]["plaintext"]["size"].as_u64(), Some(out.stdout.len() as u64));

    let keys: Vec<Vec<Vec<u8>>> = (0..500).map(|i| c(&["DEL", &format!("{prefix}:{i}")])).collect();
    shared.pipeline(&keys);
}

#[test]
fn a_non_empty_destination_is_refused_without_force() {
    let src = Server::start(&[]);
    populate(&mut src.client(), 100);
    let before = snapshot(&mut src.client());
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job("cache", &src.url(), "")));
    backup_id(&run(s.drctl().args(["run", "cache"])));

    let dest = Server::start(&[]);
    dest.cli(&["-n", "3", "SET", "precious", "data"]);
    let r = run(s.drctl().args(["restore", "cache", "--latest", "--to", &dest.url()]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not empty") && r.stderr.contains("1 keys in 1 database"), "{r:?}");
    assert!(r.stderr.contains("--force"), "{r:?}");
    assert_eq!(dest.cli(&["-n", "3", "GET", "precious"]), "data", "a refused restore changes nothing");
    assert_eq!(dest.info_field("replication", "role").as_deref(), Some("master"));

    let dry = run(s.drctl().args(["restore", "cache", "--latest", "--force", "--dry-run", "--to", &dest.url()]));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("REPLICAOF") && dry.stdout.contains("replacing all 1 keys"), "{dry:?}");
    assert_eq!(dest.cli(&["-n", "3", "GET", "precious"]), "data", "a dry run changes nothing");

    let r = run(s.drctl().args(["restore", "cache", "--latest", "--force", "--to", &dest.url()]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_same(&before, &snapshot(&mut dest.client()));
    assert_eq!(dest.cli(&["-n", "3", "EXISTS", "precious"]), "0", "the restore replaced the whole dataset");
}

#[test]
fn password_and_acl_user_for_backup_and_restore() {
    let pw = "correct-horse-battery";
    let src = Server::start_with(&["--requirepass", pw], vec!["-a".into(), pw.into()], false);
    // an ACL user with only what a replication backup needs, and one that lacks SYNC
    src.cli(&["ACL", "SETUSER", "backup", "on", ">backup-secret-pw", "+ping", "+info", "+replconf", "+sync", "+psync"]);
    src.cli(&["ACL", "SETUSER", "nosync", "on", ">nosync-secret-pw", "+ping", "+info", "+replconf"]);
    populate(&mut src.client(), 100);
    let before = snapshot(&mut src.client());

    let s = Scratch::new();
    std::fs::write(s.path("acl_pw"), "backup-secret-pw\n").unwrap();
    std::fs::write(s.path("nosync_pw"), "nosync-secret-pw\n").unwrap();
    let with_pw = format!("redis://:{pw}@127.0.0.1:{}", src.port);
    s.write_config(&format!(
        "{}{}{}{}",
        s.head(),
        job("pw", &with_pw, ""),
        job("acl", &src.url(), &format!("username = \"backup\"\npassword_file = \"{}\"", s.path("acl_pw").display())),
        job(
            "nosync",
            &src.url(),
            &format!("username = \"nosync\"\npassword_file = \"{}\"", s.path("nosync_pw").display())
        ),
    ));
    for name in ["pw", "acl"] {
        let r = run(s.drctl().args(["run", name]));
        assert_eq!(r.code, 0, "{name}: {r:?}");
        assert!(!r.stderr.contains(pw) && !r.stderr.contains("backup-secret-pw"), "{r:?}");
    }
    let r = run(s.drctl().args(["check"]));
    assert!(!r.stdout.contains(pw) && !r.stderr.contains(pw), "{r:?}");
    assert!(r.stdout.contains("redis 7."), "{r:?}");

    let r = run(s.drctl().args(["run", "nosync"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("permission denied") && r.stderr.contains("ACL SETUSER"), "{r:?}");

    // into a fresh password-protected server: the --to URL carries its own password
    let dest_pw = "dest-password-42";
    let dest = Server::start_with(&["--requirepass", dest_pw], vec!["-a".into(), dest_pw.into()], false);
    let to = format!("redis://:{dest_pw}@127.0.0.1:{}", dest.port);
    let r = run(s.drctl().args(["restore", "pw", "--latest", "--to", &to]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains(dest_pw), "{r:?}");
    assert_same(&before, &snapshot(&mut dest.client()));
    // the destination's masterauth is what it was
    assert_eq!(dest.cli(&["CONFIG", "GET", "masterauth"]), "masterauth");

    // a fresh machine without the job's password file still restores elsewhere with `--to`
    std::fs::remove_file(s.path("acl_pw")).unwrap();
    let plain = Server::start(&[]);
    let r = run(s.drctl().args(["restore", "acl", "--latest", "--to", &plain.url()]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_same(&before, &snapshot(&mut plain.client()));

    // back into the job's own server (no --to): the job's credentials, and --force
    src.cli(&["SET", "s:1", "changed"]);
    let r = run(s.drctl().args(["restore", "pw", "--latest", "--force"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_same(&before, &snapshot(&mut src.client()));
}

#[test]
fn wrong_password_and_server_down_commit_nothing() {
    let src = Server::start_with(&["--requirepass", "the-right-one"], vec!["-a".into(), "the-right-one".into()], false);
    src.cli(&["SET", "k", "v"]);
    let s = Scratch::new();
    std::fs::write(s.path("pw"), "a-wrong-password\n").unwrap();
    let down = free_port();
    s.write_config(&format!(
        "{}{}{}{}",
        s.head(),
        job("wrong", &src.url(), &format!("password_file = \"{}\"", s.path("pw").display())),
        job("nopw", &src.url(), ""),
        job("down", &format!("redis://:hunter2-down-pw@127.0.0.1:{down}"), ""),
    ));
    let r = run(s.drctl().args(["run", "wrong"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("job `wrong`") && r.stderr.contains("authentication failed"), "{r:?}");
    assert!(r.stderr.contains("hint:") && r.stderr.contains("password"), "{r:?}");
    assert!(!r.stderr.contains("a-wrong-password"), "the password is never shown: {r:?}");

    let r = run(s.drctl().args(["run", "nopw"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("NOAUTH"), "{r:?}");

    let r = run(s.drctl().args(["run", "down"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot connect") && r.stderr.contains("is Redis running"), "{r:?}");
    assert!(!r.stderr.contains("hunter2-down-pw"), "{r:?}");

    assert!(s.fs_files().is_empty(), "nothing committed: {:?}", s.fs_files());
    let r = run(s.drctl().args(["--json", "list", "wrong"]));
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list[0]["status"], "failed", "{r:?}");

    let r = run(s.drctl().args(["check"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("FAIL  job down") && !r.stdout.contains("hunter2-down-pw"), "{r:?}");

    // a restore into a server that is down fails before anything happens
    std::fs::write(s.path("pw"), "the-right-one\n").unwrap();
    backup_id(&run(s.drctl().args(["run", "wrong"])));
    let r = run(s.drctl().args(["restore", "wrong", "--latest", "--to", &format!("redis://127.0.0.1:{down}")]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot connect"), "{r:?}");
}

/// A master, a replica of it and a sentinel watching both.
fn sentinel_setup() -> (Server, Server, Server) {
    let master = Server::start(&[]);
    populate(&mut master.client(), 200);
    let replica = Server::start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    wait_for("the replica to sync", || {
        replica.info_field("replication", "master_link_status").as_deref() == Some("up")
    });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds mymaster 1000\n",
            dir.path().display(),
            master.port
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut sentinel = Server { child, port, dir, cli_args: Vec::new() };
    assert!(sentinel.wait_ready(), "sentinel did not start: {}", sentinel.log());
    let replica_port = replica.port.to_string();
    wait_for("the sentinel to see a healthy replica", || {
        let out = sentinel.cli(&["SENTINEL", "replicas", "mymaster"]);
        let lines: Vec<&str> = out.lines().collect();
        let field = |k: &str| lines.iter().position(|l| *l == k).and_then(|i| lines.get(i + 1)).copied();
        field("port") == Some(replica_port.as_str())
            && field("flags") == Some("slave")
            && field("master-link-status") == Some("ok")
    });
    (master, replica, sentinel)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sentinel_picks_a_healthy_replica_else_the_master() {
    let (master, replica, sentinel) = sentinel_setup();
    let before = snapshot(&mut master.client());
    let full_syncs = |s: &Server| s.info_field("stats", "sync_full").unwrap();
    let master_syncs = full_syncs(&master);

    let s = Scratch::new();
    s.write_config(&format!(
        "{}[jobs.ha]\nkind = \"redis\"\ntargets = [\"local\"]\nsentinel = [\"127.0.0.1:{}\"]\nmaster_name = \"mymaster\"\n",
        s.head(),
        sentinel.port
    ));
    let r = run(s.drctl().args(["check"]));
    assert!(r.stdout.contains(&format!("replica at redis://127.0.0.1:{}", replica.port)), "{r:?}");
    backup_id(&run(s.drctl().args(["run", "ha"])));
    let f = manifest(&s)["facts"].clone();
    assert_eq!(f["role"], "replica", "{f}");
    assert_eq!(f["source"], format!("127.0.0.1:{}", replica.port));
    assert_eq!(f["sentinel_master"], "mymaster");
    assert_eq!(f["master"], format!("127.0.0.1:{}", master.port));
    // the replica served the snapshot, the master did not fork for it
    assert_eq!(full_syncs(&replica), "1");
    assert_eq!(full_syncs(&master), master_syncs);

    let dest = Server::start(&[]);
    let r = run(s.drctl().args(["restore", "ha", "--latest", "--to", &dest.url()]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_same(&before, &snapshot(&mut dest.client()));
    // without --to, a restore into the sentinel-managed master is refused
    let r = run(s.drctl().args(["restore", "ha", "--latest", "--force"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("Sentinel"), "{r:?}");
    // nor into a replica, which would lose the data to its master
    let r = run(s.drctl().args(["restore", "ha", "--latest", "--force", "--to", &replica.url()]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is a replica") && r.stderr.contains("REPLICAOF NO ONE"), "{r:?}");

    // the replica goes away: the backup comes from the master
    drop(replica);
    wait_for("the sentinel to mark the replica down", || {
        sentinel
            .cli(&["SENTINEL", "replicas", "mymaster"])
            .lines()
            .any(|l| l.contains("s_down") || l.contains("disconnected"))
    });
    backup_id(&run(s.drctl().args(["run", "ha"])));
    let f = manifest(&s)["facts"].clone();
    assert_eq!(f["role"], "master", "{f}");
    assert_eq!(f["source"], format!("127.0.0.1:{}", master.port));
}

#[test]
fn bgsave_mode_reads_the_local_dump() {
    let src = Server::start(&["--dbfilename", "snapshot.rdb"]);
    populate(&mut src.client(), 200);
    let before = snapshot(&mut src.client());
    let saves: u64 = src.info_field("persistence", "rdb_saves").unwrap().parse().unwrap();

    let s = Scratch::new();
    s.write_config(&format!(
        "{}{}{}",
        s.head(),
        job("snap", &src.url(), "mode = \"bgsave\""),
        job("docker", &src.url(), "mode = \"bgsave\"\nexec = { docker = \"redis\" }"),
    ));
    backup_id(&run(s.drctl().args(["run", "snap"])));
    let f = manifest(&s)["facts"].clone();
    assert_eq!(f["mode"], "bgsave");
    assert_eq!(f["transfer"], "file");
    assert_eq!(f["rdb_checksum"], true);
    let now: u64 = src.info_field("persistence", "rdb_saves").unwrap().parse().unwrap();
    assert_eq!(now, saves + 1, "one fresh BGSAVE");
    assert!(src.dir.path().join("snapshot.rdb").exists());

    let out = s.path("snap.rdb");
    let r = run(s.drctl().args(["restore", "snap", "--latest", "--output"]).arg(&out));
    assert_eq!(r.code, 0, "{r:?}");
    rdb_ok(&out);
    let dest = Server::start(&[]);
    let r = run(s.drctl().args(["restore", "snap", "--latest", "--to", &dest.url()]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_same(&before, &snapshot(&mut dest.client()));

    // through `docker exec` (the stand-in CLI runs it here; no engine on CI)
    let docker = |s: &Scratch| {
        let mut c = s.drctl();
        c.env("DRCTL_DOCKER", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/standins/docker"))
            .env("DRCTL_STANDIN_CONTAINERS", "redis")
            .env("DRCTL_STANDIN_LOG", s.path("docker.log"));
        c
    };
    let r = run(docker(&s).args(["run", "docker"]));
    assert_eq!(r.code, 0, "{r:?}");
    let log = std::fs::read_to_string(s.path("docker.log")).unwrap();
    let dump = src.dir.path().join("snapshot.rdb");
    assert!(log.contains(&format!("docker exec --interactive=false redis cat -- {}", dump.display())), "{log}");
    let f = manifest_of(&s, "docker")["facts"].clone();
    assert_eq!(f["transfer"], "docker exec");
    let dest = Server::start(&[]);
    let r = run(s.drctl().args(["restore", "docker", "--latest", "--to", &dest.url()]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_same(&before, &snapshot(&mut dest.client()));

    // a container that is not there: a clear error, nothing committed
    let listed = ok_backups(&s, "docker");
    let r = run(docker(&s).env("DRCTL_STANDIN_CONTAINERS", "other").args(["run", "docker"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("No such container: redis"), "{r:?}");
    assert!(r.stderr.contains("docker container `redis`"), "{r:?}");
    assert_eq!(ok_backups(&s, "docker"), listed, "nothing committed");
}

/// Ids of the job's committed backups.
fn ok_backups(s: &Scratch, job: &str) -> Vec<String> {
    let listed: serde_json::Value = serde_json::from_str(&run(s.drctl().args(["list", job, "--json"])).stdout).unwrap();
    listed.as_array().unwrap().iter().filter(|b| b["status"] == "ok").map(|b| b["id"].to_string()).collect()
}

#[test]
fn bgsave_through_kubernetes_pod_exec() {
    let src = Server::start(&["--dbfilename", "pod.rdb"]);
    populate(&mut src.client(), 300);
    let before = snapshot(&mut src.client());
    // the stand-in API server runs the exec'd command here: the "pod" sees the server's files
    let api = kubeapi::KubeApi::start(
        vec![kubeapi::FakePod::running("cache", "redis-0", &[("app", "redis")], &["redis"])],
        kubeapi::Behaviour::default(),
    );
    let s = Scratch::new();
    let kubeconfig = api.write_kubeconfig(&s.path(""), "cache");
    s.write_config(&format!(
        "{}{}",
        s.head(),
        job(
            "k8s",
            &src.url(),
            "mode = \"bgsave\"\nexec = { kubernetes = { selector = \"app=redis\", container = \"redis\" } }"
        ),
    ));
    let r = run(s.drctl().env("KUBECONFIG", &kubeconfig).args(["run", "k8s"]));
    assert_eq!(r.code, 0, "{r:?}");
    let f = manifest(&s)["facts"].clone();
    assert_eq!(f["transfer"], "kubernetes exec");
    assert_eq!(f["rdb_checksum"], true);
    let execs = api.execs();
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!(execs[0].pod, "redis-0");
    assert_eq!(execs[0].container.as_deref(), Some("redis"));
    assert_eq!(execs[0].command[0], "cat");

    let dest = Server::start(&[]);
    let r = run(s.drctl().args(["restore", "k8s", "--latest", "--to", &dest.url()]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_same(&before, &snapshot(&mut dest.client()));

    // a cut exec stream is never a backup
    let cut = kubeapi::KubeApi::start(
        vec![kubeapi::FakePod::running("cache", "redis-0", &[("app", "redis")], &["redis"])],
        kubeapi::Behaviour { cut_stdout_after: Some(100), ..Default::default() },
    );
    let cutconfig = s.path("cut");
    std::fs::create_dir_all(&cutconfig).unwrap();
    let cutconfig = cut.write_kubeconfig(&cutconfig, "cache");
    let listed = ok_backups(&s, "k8s");
    let r = run(s.drctl().env("KUBECONFIG", &cutconfig).args(["run", "k8s"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("without an exit status"), "{r:?}");
    assert_eq!(ok_backups(&s, "k8s"), listed, "nothing committed");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
fn make_certs(dir: &Path) -> PathBuf {
    let sh = |script: &str| {
        let out = Command::new("bash").arg("-ec").arg(script).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=drctl-test-ca 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext
        for who in server client; do
          openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
          openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $who.crt -days 2 -extfile san.ext 2>/dev/null
        done");
    dir.to_path_buf()
}

#[test]
fn tls_with_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let d = make_certs(certs.path());
    let p = |f: &str| d.join(f).display().to_string();
    let tls_cli: Vec<String> =
        ["--tls", "--cacert", &p("ca.crt"), "--cert", &p("client.crt"), "--key", &p("client.key")]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let src = Server::start_with(
        &[
            "--tls-cert-file",
            &p("server.crt"),
            "--tls-key-file",
            &p("server.key"),
            "--tls-ca-cert-file",
            &p("ca.crt"),
            "--tls-auth-clients",
            "yes",
        ],
        tls_cli,
        true,
    );
    for i in 0..50 {
        src.cli(&["SET", &format!("tls:{i}"), &format!("secure-{i}")]);
    }
    src.cli(&["EXPIRE", "tls:7", "7200"]);

    let s = Scratch::new();
    let tls = format!(
        "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        p("ca.crt"),
        p("client.crt"),
        p("client.key")
    );
    let url = format!("rediss://127.0.0.1:{}", src.port);
    s.write_config(&format!(
        "{}{}{}",
        s.head(),
        job("tls", &url, &tls),
        job("nocert", &url, &format!("tls_ca_file = \"{}\"", p("ca.crt")))
    ));
    backup_id(&run(s.drctl().args(["run", "tls"])));
    assert_eq!(manifest(&s)["facts"]["keys"], 50);
    let out = s.path("tls.rdb");
    let r = run(s.drctl().args(["restore", "tls", "--latest", "--output"]).arg(&out));
    assert_eq!(r.code, 0, "{r:?}");
    rdb_ok(&out);

    // the server wants a client certificate
    let r = run(s.drctl().args(["run", "nocert"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("wants a client certificate") && r.stderr.contains("tls_cert_file"), "{r:?}");
}

// ---------------------------------------------------------------- commit semantics through the library

/// The restore consumer applies nothing before `commit`: with every byte written but the commit
/// dropped (a failed check), the destination keeps its data and is a master again; with the
/// commit, it loads the backup.
#[test]
fn replication_restore_loads_only_after_commit() {
    use drctl::jobs::{Consumer, RestoreOptions, Sink};
    use tokio::io::AsyncWriteExt;

    let src = Server::start(&[]);
    populate(&mut src.client(), 150);
    let before = snapshot(&mut src.client());
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job("cache", &src.url(), "")));
    backup_id(&run(s.drctl().args(["run", "cache"])));
    let rdb_path = s.path("plain.rdb");
    assert_eq!(run(s.drctl().args(["restore", "cache", "--latest", "--output"]).arg(&rdb_path)).code, 0);
    let rdb = std::fs::read(&rdb_path).unwrap();

    let files = s.fs_files();
    let mkey = files.iter().find(|f| f.ends_with(".manifest.json")).unwrap();
    let m = drctl::manifest::Manifest::from_json(mkey, &std::fs::read(s.path("backups").join(mkey)).unwrap()).unwrap();
    let config = drctl::config::load(&s.config_path()).unwrap();
    let job = config.job("cache").unwrap();

    let dest = Server::start(&[]);
    dest.cli(&["SET", "old", "data"]);
    let opts = RestoreOptions { to: Some(dest.url()), force: true, ..Default::default() };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    for cut in [rdb.len() / 2, rdb.len()] {
        let Sink { mut writer, consumer, .. } =
            rt.block_on(drctl::jobs::open_sink(job, &m, &m.artifacts[0], &opts)).unwrap();
        let Consumer::Task { task, commit } = consumer else { panic!("a task consumer") };
        let result = rt.block_on(async {
            writer.write_all(&rdb[..cut]).await.unwrap();
            writer.shutdown().await.unwrap();
            drop(writer);
            // give the destination every chance to load what it got
            tokio::time::sleep(Duration::from_millis(700)).await;
            drop(commit);
            task.await.unwrap()
        });
        let e = result.expect_err("rolled back");
        assert!(e.to_string().contains("not every check passed"), "{e}");
        assert_eq!(dest.cli(&["GET", "old"]), "data", "cut at {cut}: nothing applied");
        assert_eq!(dest.cli(&["DBSIZE"]), "1");
        assert_eq!(dest.info_field("replication", "role").as_deref(), Some("master"));
    }

    let Sink { mut writer, consumer, .. } =
        rt.block_on(drctl::jobs::open_sink(job, &m, &m.artifacts[0], &opts)).unwrap();
    let Consumer::Task { task, commit } = consumer else { panic!("a task consumer") };
    rt.block_on(async {
        writer.write_all(&rdb).await.unwrap();
        writer.shutdown().await.unwrap();
        drop(writer);
        commit.send(()).unwrap();
        task.await.unwrap()
    })
    .unwrap();
    assert_same(&before, &snapshot(&mut dest.client()));
    assert_eq!(dest.info_field("replication", "role").as_deref(), Some("master"));
}

// ---------------------------------------------------------------- broken transfers

/// A scripted stand-in for a master: answers AUTH/INFO/REPLCONF like Redis 7.0, then answers SYNC
/// with `header` and `body` and closes the connection.
struct FakeMaster {
    port: u16,
}

impl FakeMaster {
    fn start(header: Vec<u8>, body: Vec<u8>) -> FakeMaster {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (header, body) = (header.clone(), body.clone());
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    loop {
                        // one array of bulk strings per command
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let n: usize = line.trim()[1..].parse().unwrap();
                        let mut args = Vec::new();
                        for _ in 0..n {
                            let mut len = String::new();
                            r.read_line(&mut len).unwrap();
                            let mut arg = vec![0u8; len.trim()[1..].parse::<usize>().unwrap() + 2];
                            r.read_exact(&mut arg).unwrap();
                            arg.truncate(arg.len() - 2);
                            args.push(String::from_utf8_lossy(&arg).to_uppercase());
                        }
                        match args[0].as_str() {
                            "INFO" => {
                                let info = "# Server\r\nredis_version:7.0.15\r\n# Replication\r\nrole:master\r\n\
                                            # Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n";
                                let _ = w.write_all(format!("${}\r\n{info}\r\n", info.len()).as_bytes());
                            }
                            "SYNC" => {
                                let _ = w.write_all(b"\n\n"); // keepalives while "saving"
                                let _ = w.write_all(&header);
                                let _ = w.write_all(&body);
                                let _ = w.flush();
                                return; // connection closes
                            }
                            _ => {
                                let _ = w.write_all(b"+OK\r\n");
                            }
                        }
                    }
                });
            }
        });
        FakeMaster { port }
    }
}

#[test]
fn cut_or_damaged_transfers_commit_nothing() {
    // a real RDB to cut and damage
    let src = Server::start(&[]);
    populate(&mut src.client(), 50);
    let tmp = tempfile::tempdir().unwrap();
    let rdb_path = tmp.path().join("real.rdb");
    let out = Command::new("redis-cli").args(["-p", &src.port.to_string(), "--rdb"]).arg(&rdb_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rdb = std::fs::read(&rdb_path).unwrap();
    let mark = b"0123456789abcdef0123456789abcdef01234567".to_vec();
    let len_header = |n: usize| format!("${n}\r\n").into_bytes();
    let mut flipped = rdb.clone();
    flipped[rdb.len() / 2] ^= 0x20;

    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        ("half", len_header(rdb.len()), rdb[..rdb.len() / 2].to_vec(), "transfer is incomplete"),
        ("nomark", [b"$EOF:".to_vec(), mark.clone(), b"\r\n".to_vec()].concat(), rdb.clone(), "transfer is incomplete"),
        ("flipped", len_header(rdb.len()), flipped, "checksum mismatch"),
        ("notrdb", len_header(11), b"HELLO WORLD".to_vec(), "not an RDB file"),
        ("short", len_header(rdb.len() - 9), rdb[..rdb.len() - 9].to_vec(), "is not usable"),
    ];
    let mut fakes = Vec::new();
    let s = Scratch::new();
    let mut config = s.head();
    for (name, header, body, _) in &cases {
        let fake = FakeMaster::start(header.clone(), body.clone());
        config.push_str(&job(name, &format!("redis://127.0.0.1:{}", fake.port), ""));
        fakes.push(fake);
    }
    // and the complete payload in both forms, as a control
    let good = FakeMaster::start(len_header(rdb.len()), rdb.clone());
    config.push_str(&job("good", &format!("redis://127.0.0.1:{}", good.port), ""));
    let marked =
        FakeMaster::start([b"$EOF:".to_vec(), mark.clone(), b"\r\n".to_vec()].concat(), [rdb.clone(), mark].concat());
    config.push_str(&job("marked", &format!("redis://127.0.0.1:{}", marked.port), ""));
    s.write_config(&config);

    for (name, _, _, expect) in &cases {
        let r = run(s.drctl().args(["run", name]));
        assert_eq!(r.code, 1, "{name}: {r:?}");
        assert!(r.stderr.contains(expect), "{name}: expected `{expect}`: {r:?}");
        assert!(s.fs_files().is_empty(), "{name}: nothing committed: {:?}", s.fs_files());
    }
    for name in ["good", "marked"] {
        backup_id(&run(s.drctl().args(["run", name])));
        let m = manifest(&s);
        assert_eq!(m["job"], name);
        assert_eq!(m["artifacts"][0]["plaintext"]["size"].as_u64(), Some(rdb.len() as u64));
        let out = s.path(&format!("{name}.rdb"));
        assert_eq!(run(s.drctl().args(["restore", name, "--latest", "--output"]).arg(&out)).code, 0);
        assert_eq!(std::fs::read(&out).unwrap(), rdb, "{name}: the exact payload, without header or mark");
    }
}
