//! Fault injectors for the integration tests, each a proxy on 127.0.0.1 in front of a real
//! service:
//!
//! * [`CuttingProxy`]: passes a byte budget, then cuts every connection (a network fault).
//! * [`StallProxy`]: accepts connections and then stops forwarding (at once, or after a byte
//!   budget) without closing anything: an endpoint that accepts TCP and never answers.
//! * [`ErrorProxy`]: an HTTP/1.1 proxy that answers `500` instead of forwarding the requests a
//!   deterministic [`Rule`] picks (every k-th, a seeded share, the first PUT of a manifest …).
//!
//! Each runs on plain threads (the tests are synchronous) and lives as long as its value.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn host_port(upstream: &str) -> String {
    let u = upstream.trim_start_matches("http://").trim_start_matches("https://");
    u.split('/').next().unwrap_or(u).to_string()
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` that passes `budget` bytes client→server and
/// then cuts every connection (and refuses new ones): a network fault in the middle of an upload.
pub struct CuttingProxy {
    pub addr: SocketAddr,
    _thread: std::thread::JoinHandle<()>,
}

impl CuttingProxy {
    pub fn start(upstream: &str, budget: u64) -> CuttingProxy {
        let upstream = host_port(upstream);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let left = Arc::new(AtomicI64::new(budget as i64));
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if left.load(Ordering::SeqCst) <= 0 {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                let left_up = left.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if left_up.fetch_sub(n as i64, Ordering::SeqCst) <= n as i64 {
                            break; // budget spent: cut the connection
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(Shutdown::Both);
                    let _ = c_read.shutdown(Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(Shutdown::Both);
                });
            }
        });
        CuttingProxy { addr, _thread: thread }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A TCP proxy that forwards `pass` bytes client→server (summed over all connections), then
/// stalls: it stops forwarding in both directions and stops reading, but keeps every connection
/// (and accepts new ones, which stall at once). `pass = 0`: an endpoint that accepts TCP and
/// never says a word. Everything is closed when the proxy is dropped.
pub struct StallProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Bytes forwarded client→server so far.
    pub forwarded: Arc<AtomicU64>,
}

impl StallProxy {
    pub fn start(upstream: &str, pass: u64) -> StallProxy {
        let upstream = host_port(upstream);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicBool::new(pass == 0));
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop2, fwd2) = (stop.clone(), forwarded.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    Err(_) => break,
                };
                client.set_nonblocking(false).unwrap();
                held.lock().unwrap().push(client.try_clone().unwrap());
                if stalled.load(Ordering::SeqCst) {
                    continue; // accepted, and never a word
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                held.lock().unwrap().push(server.try_clone().unwrap());
                let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                let (stalled_up, stalled_down, fwd) = (stalled.clone(), stalled.clone(), fwd2.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        if stalled_up.load(Ordering::SeqCst) {
                            return; // stop reading: the client's writes fill the socket buffers
                        }
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let before = fwd.fetch_add(n as u64, Ordering::SeqCst);
                        let allowed = pass.saturating_sub(before).min(n as u64) as usize;
                        if allowed < n {
                            stalled_up.store(true, Ordering::SeqCst);
                        }
                        if s_write.write_all(&buf[..allowed]).is_err() {
                            return;
                        }
                    }
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if stalled_down.load(Ordering::SeqCst) {
                            return; // swallow the answer; the connection stays open
                        }
                        if c_write.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
            for s in held.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        });
        StallProxy { addr, stop, forwarded }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Which requests an [`ErrorProxy`] answers with `500` (deterministic, so a failing test can be
/// run again and see the same faults).
#[derive(Clone)]
pub enum Rule {
    /// Every k-th request (the k-th, the 2k-th, …).
    EveryKth(u64),
    /// About `percent` % of the requests, chosen by a linear congruential generator from `seed`.
    Seeded { percent: u64, seed: u64 },
    /// The first `n` requests with this method whose path contains `path_contains`.
    First { method: &'static str, path_contains: &'static str, n: u64 },
    /// Like `First`, but each picked request is forwarded and done upstream before the client
    /// gets its 500: a write that landed while its answer was lost.
    FirstLanded { method: &'static str, path_contains: &'static str, n: u64 },
}

/// An HTTP/1.1 proxy that answers `500 Internal Server Error` to the requests its [`Rule`] picks
/// and forwards the others. Each forwarded request gets its own upstream connection
/// (`Connection: close`), so that every request is seen and counted.
pub struct ErrorProxy {
    pub addr: SocketAddr,
    /// Requests seen, and requests answered with 500.
    pub seen: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    /// `METHOD path` of every request answered with 500.
    pub failures: Arc<Mutex<Vec<String>>>,
}

impl ErrorProxy {
    pub fn start(upstream: &str, rule: Rule) -> ErrorProxy {
        let upstream = host_port(upstream);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let state = Arc::new(Mutex::new((rule, 0u64)));
        let (seen2, failed2, failures2) = (seen.clone(), failed.clone(), failures.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let (upstream, state, seen, failed, failures) =
                    (upstream.clone(), state.clone(), seen2.clone(), failed2.clone(), failures2.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, &state, &seen, &failed, &failures);
                });
            }
        });
        ErrorProxy { addr, seen, failed, failures }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Whether the request (`n`-th, 1-based) gets a 500.
fn pick(rule: &mut Rule, matched: &mut u64, n: u64, method: &str, path: &str) -> bool {
    match rule {
        Rule::EveryKth(k) => *k > 0 && n.is_multiple_of(*k),
        Rule::Seeded { percent, seed } => {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (*seed >> 33) % 100 < *percent
        }
        Rule::First { method: m, path_contains, n: first }
        | Rule::FirstLanded { method: m, path_contains, n: first } => {
            if method == *m && path.contains(*path_contains) && *matched < *first {
                *matched += 1;
                true
            } else {
                false
            }
        }
    }
}

/// One client connection: requests one after another (keep-alive), each either answered with
/// 500 (and the connection closed: its body is not read) or forwarded on a new upstream
/// connection with `Connection: close`.
fn serve(
    mut client: TcpStream,
    upstream: &str,
    state: &Mutex<(Rule, u64)>,
    seen: &AtomicU64,
    failed: &AtomicU64,
    failures: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    // the request head
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut first = text.lines().next().unwrap_or_default().split(' ');
    let (method, path) = (first.next().unwrap_or_default().to_string(), first.next().unwrap_or_default().to_string());
    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
    let (fail, landed) = {
        let mut st = state.lock().unwrap();
        let (rule, matched) = &mut *st;
        (pick(rule, matched, n, &method, &path), matches!(rule, Rule::FirstLanded { .. }))
    };
    if fail && landed {
        // forward the request and its body (Content-Length), wait for the upstream's answer, drop it
        let length: u64 = text
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut server = TcpStream::connect(upstream)?;
        server.write_all(close_after(&text).as_bytes())?;
        std::io::copy(&mut (&mut client).take(length), &mut server)?;
        std::io::copy(&mut server, &mut std::io::sink())?;
    }
    if fail {
        failed.fetch_add(1, Ordering::SeqCst);
        failures.lock().unwrap().push(format!("{method} {path}"));
        let body = "injected fault\n";
        let _ = write!(
            client,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.flush();
        // let the client read the answer before the connection goes (it may still be sending)
        let _ = client.shutdown(Shutdown::Write);
        let mut sink = [0u8; 65536];
        client.set_read_timeout(Some(Duration::from_secs(5)))?;
        while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        return Ok(());
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(close_after(&text).as_bytes())?;
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = up.join();
    Ok(())
}

/// The request head `text` with `Connection: close`: the upstream closes after its answer.
fn close_after(text: &str) -> String {
    let mut rewritten = String::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        rewritten.push_str(line);
        rewritten.push_str("\r\n");
    }
    rewritten.push_str("Connection: close\r\n\r\n");
    rewritten
}

/// A TCP proxy that can be switched off and on: while off it refuses new connections and cuts the
/// open ones (a target that goes away for a while, then comes back).
pub struct SwitchProxy {
    pub addr: SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<AtomicI64>,
    /// Bytes passed server → client, over all connections.
    served: Arc<AtomicI64>,
}

impl SwitchProxy {
    pub fn start(upstream: &str) -> SwitchProxy {
        let upstream = host_port(upstream);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = Arc::new(AtomicI64::new(0));
        let served = Arc::new(AtomicI64::new(0));
        let (up_l, gen_l, served_l) = (up.clone(), generation.clone(), served.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if !up_l.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let born = gen_l.load(Ordering::SeqCst);
                for (mut from, mut to, count) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap(), None),
                    (server.try_clone().unwrap(), client.try_clone().unwrap(), Some(served_l.clone())),
                ] {
                    let gen_c = gen_l.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // switched off since this connection was made: cut it
                            if gen_c.load(Ordering::SeqCst) != born || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            if let Some(c) = &count {
                                c.fetch_add(n as i64, Ordering::SeqCst);
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        SwitchProxy { addr, up, generation, served }
    }

    /// Bytes the upstream sent to clients so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst) as u64
    }

    /// Off: new connections are refused, open ones are cut at their next byte. On: as before.
    pub fn set_up(&self, up: bool) {
        if !up {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.up.store(up, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
