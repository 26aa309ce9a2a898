//! A PostgreSQL cluster of the test's own (initdb'd in a temporary directory, run as `postgres`
//! when the tests run as root), for what the shared test server cannot do: physical backups of
//! a whole cluster, and starting a server on a restored data directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::pg_bin;

pub struct Cluster {
    pub data: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    running: bool,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `tool args…` as the postgres user when root.
pub fn as_postgres(tool: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    }
}

/// Give `path` (recursively) to the postgres user when root.
pub fn give_to_postgres(path: &Path) {
    if is_root() {
        let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).status().unwrap().success();
        assert!(ok, "chown {}", path.display());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    /// initdb into `dir/data` and start.
    pub fn init(dir: &Path) -> Cluster {
        std::fs::create_dir_all(dir).unwrap();
        give_to_postgres(dir);
        let data = dir.join("data");
        let out = as_postgres(&pg_bin().join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--no-locale"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        Cluster::start_on(dir, &data)
    }

    /// Start a server on an existing data directory (a restored one). Panics if it does not
    /// come up; see [`Cluster::try_start_on`].
    pub fn start_on(dir: &Path, data: &Path) -> Cluster {
        Cluster::try_start_on(dir, data).unwrap_or_else(|log| panic!("pg_ctl start failed:\n{log}"))
    }

    /// Start a server on `data`; the server log on failure.
    pub fn try_start_on(dir: &Path, data: &Path) -> Result<Cluster, String> {
        let port = free_port();
        let log = dir.join(format!("postgres-{port}.log"));
        let out = as_postgres(&pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "-s", "-o"])
            .arg(format!("-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off", dir.display()))
            .arg("start")
            .output()
            .unwrap();
        let c = Cluster { data: data.to_path_buf(), dir: dir.to_path_buf(), port, running: out.status.success() };
        if c.running { Ok(c) } else { Err(format!("{}\n{}", String::from_utf8_lossy(&out.stderr), c.log())) }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn log(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// psql against this cluster; panics on failure; the last line of output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(pg_bin().join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", &self.url(db), "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or_default().to_string()
    }

    pub fn stop(&mut self) {
        if self.running {
            self.running = false;
            let _ = as_postgres(&pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-s", "-w", "stop"])
                .output();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
