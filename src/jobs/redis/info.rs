//! The parts of `INFO` drctl reads: version, role, replication link, persistence, keyspace.
//! Pure parsing of the text a server returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Keys in one logical database (`db3:keys=10,expires=2,avg_ttl=0`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbKeys {
    pub db: u32,
    pub keys: u64,
    pub expires: u64,
}

/// What `INFO` says about a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    pub fields: BTreeMap<String, String>,
    pub keyspace: Vec<DbKeys>,
}

impl Info {
    pub fn parse(text: &str) -> Info {
        let mut fields = BTreeMap::new();
        let mut keyspace = Vec::new();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if let Some(n) = k.strip_prefix("db").and_then(|n| n.parse::<u32>().ok()) {
                let mut db = DbKeys { db: n, ..Default::default() };
                for part in v.split(',') {
                    match part.split_once('=') {
                        Some(("keys", x)) => db.keys = x.parse().unwrap_or(0),
                        Some(("expires", x)) => db.expires = x.parse().unwrap_or(0),
                        _ => {}
                    }
                }
                keyspace.push(db);
                continue;
            }
            fields.insert(k.to_string(), v.to_string());
        }
        keyspace.sort_by_key(|d| d.db);
        Info { fields, keyspace }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }

    fn num(&self, k: &str) -> Option<u64> {
        self.get(k).and_then(|v| v.trim().parse().ok())
    }

    pub fn version(&self) -> String {
        self.get("redis_version").unwrap_or("unknown").to_string()
    }

    /// `master` or `replica` (INFO says `slave`).
    pub fn role(&self) -> &'static str {
        match self.get("role") {
            Some("slave") => "replica",
            _ => "master",
        }
    }

    pub fn is_replica(&self) -> bool {
        self.get("role") == Some("slave")
    }

    /// The master a replica follows (`host:port`).
    pub fn master(&self) -> Option<String> {
        Some(format!("{}:{}", self.get("master_host")?, self.get("master_port")?))
    }

    /// A replica whose link to its master is up and not in the middle of a full sync.
    pub fn replica_in_sync(&self) -> bool {
        self.is_replica()
            && self.get("master_link_status") == Some("up")
            && self.num("master_sync_in_progress") == Some(0)
    }

    pub fn loading(&self) -> bool {
        self.num("loading") == Some(1)
    }

    pub fn total_keys(&self) -> u64 {
        self.keyspace.iter().map(|d| d.keys).sum()
    }

    pub fn bgsave_in_progress(&self) -> bool {
        self.num("rdb_bgsave_in_progress") == Some(1)
    }

    /// The last completed save: `(rdb_saves if the server counts them, rdb_last_save_time)`.
    pub fn save_marker(&self) -> (Option<u64>, u64) {
        (self.num("rdb_saves"), self.num("rdb_last_save_time").unwrap_or(0))
    }

    pub fn last_bgsave_ok(&self) -> bool {
        self.get("rdb_last_bgsave_status") != Some("err")
    }
}

/// The newest RDB format a server of this version loads (`REDIS0010` needs 7.0), or `None` when the
/// version is unknown or newer than this table (then it is assumed to load everything).
pub fn max_rdb_version(redis_version: &str) -> Option<u32> {
    let mut parts = redis_version.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next()??, parts.next().flatten().unwrap_or(0));
    Some(match (major, minor) {
        (0..=2, _) => 6,
        (3, 0..=1) => 6,
        (3, _) => 7,
        (4, _) => 8,
        (5..=6, _) => 9,
        (7, 0..=1) => 10,
        (7, 2..=3) => 11,
        (7, _) => 12,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\ntcp_port:16379\r\n\r\n\
        # Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:1795478072\r\n\
        rdb_last_bgsave_status:ok\r\nrdb_saves:3\r\n\r\n# Replication\r\nrole:slave\r\nmaster_host:10.0.0.5\r\n\
        master_port:6379\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\n\r\n\
        # Keyspace\r\ndb0:keys=1500,expires=300,avg_ttl=123\r\ndb3:keys=7,expires=0,avg_ttl=0\r\n";

    #[test]
    fn parses_info() {
        let i = Info::parse(SAMPLE);
        assert_eq!(i.version(), "7.0.15");
        assert_eq!(i.role(), "replica");
        assert!(i.replica_in_sync());
        assert_eq!(i.master().as_deref(), Some("10.0.0.5:6379"));
        assert!(!i.loading() && !i.bgsave_in_progress() && i.last_bgsave_ok());
        assert_eq!(i.save_marker(), (Some(3), 1795478072));
        assert_eq!(i.keyspace, vec![DbKeys { db: 0, keys: 1500, expires: 300 }, DbKeys { db: 3, keys: 7, expires: 0 }]);
        assert_eq!(i.total_keys(), 1507);
    }

    #[test]
    fn master_and_empty_keyspace() {
        let i = Info::parse("# Replication\nrole:master\nconnected_slaves:0\n# Keyspace\n");
        assert_eq!(i.role(), "master");
        assert!(!i.replica_in_sync());
        assert_eq!(i.total_keys(), 0);
        let syncing = Info::parse("role:slave\nmaster_link_status:up\nmaster_sync_in_progress:1\n");
        assert!(!syncing.replica_in_sync());
        let down = Info::parse("role:slave\nmaster_link_status:down\nmaster_sync_in_progress:0\n");
        assert!(!down.replica_in_sync());
    }

    #[test]
    fn rdb_versions_by_server() {
        assert_eq!(max_rdb_version("6.2.14"), Some(9));
        assert_eq!(max_rdb_version("7.0.15"), Some(10));
        assert_eq!(max_rdb_version("7.2.4"), Some(11));
        assert_eq!(max_rdb_version("7.4.1"), Some(12));
        assert_eq!(max_rdb_version("8.0.0"), None);
        assert_eq!(max_rdb_version(""), None);
        assert_eq!(max_rdb_version("unknown"), None);
    }
}
