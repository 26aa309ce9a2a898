//! `drctl daemon` as a child process for the tests: [`Daemon`] starts the real binary with
//! `--seconds-schedules` (the hidden, test-only flag: 6-field schedules with seconds, so that no
//! test waits for a minute boundary), its log in a file of the scratch dir, and talks to its API
//! with plain HTTP. Included with `#[path]` by tests/daemon_e2e.rs and tests/status_page.rs.
//!
//! Every wait here polls with a deadline ([`wait_for`], [`Daemon::stop`]) and panics with what it
//! waited for when the deadline passes; nothing sleeps as synchronisation, the short sleeps are
//! only the interval between two polls.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Scratch, drctl_bare};

/// A running `drctl daemon`; killed (SIGKILL) if the test ends without stopping it, and its log
/// printed then.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    api: String,
}

impl Daemon {
    /// `drctl --config <scratch config> daemon --seconds-schedules`, logging to `<name>.log` in the
    /// scratch dir; `api` is the `[api] listen` address of that config.
    pub fn start(s: &Scratch, name: &str, api: &str) -> Daemon {
        Daemon::start_with(s, name, api, &s.config_path(), &[])
    }

    /// [`Daemon::start`] with another config file and `extra` global options (before `daemon`).
    pub fn start_with(s: &Scratch, name: &str, api: &str, config: &Path, extra: &[&str]) -> Daemon {
        let log = s.path(&format!("{name}.log"));
        let child = drctl_bare()
            .arg("--config")
            .arg(config)
            .args(extra)
            .args(["daemon", "--seconds-schedules"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("drctl daemon starts");
        Daemon { child: Some(child), log, api: api.to_string() }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Everything the daemon has logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// SIGTERM, then wait (polling, up to `limit`) for the exit code and how long the exit took (a
    /// drain with nothing half-done exits 0). Past `limit` the daemon is killed and the test fails.
    pub fn stop(&mut self, limit: Duration) -> (i32, Duration) {
        let started = Instant::now();
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (st.code().unwrap_or(-1), started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not stop within {limit:?}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A plain HTTP/1.0 GET on the daemon's API; (0, "") while nothing answers.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.api, path)
    }

    /// The value of the sample `name{labels}` on `/metrics`, 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric(&self.get("/metrics").1, sample)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            eprintln!("--- daemon log ({})\n{}", self.log.display(), self.log());
        }
    }
}

/// A free loopback port, as `127.0.0.1:PORT`.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A plain HTTP/1.0 GET; (0, "") when nothing answers yet.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    if s.read_to_string(&mut text).is_err() {
        return (0, String::new());
    }
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of the sample `name{labels}` (exactly as exposed) in a `/metrics` text, 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Poll `f` (every 100 ms) until it returns Some, or panic with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
