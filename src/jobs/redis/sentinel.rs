//! Finding the server to back up through Redis Sentinel: the master's address, and its replicas
//! with their health as the sentinels see it. A healthy replica is preferred (the snapshot's fork
//! then happens away from the master); the freshest of them (highest replication offset) first,
//! and each is checked with its own INFO before it is used. Without one, the master.

use super::conn::{Endpoint, Failure};
use super::resp::Value;
use super::{Node, SentinelSettings, Settings, failed};
use crate::Error;
use crate::Result;

/// One replica as `SENTINEL replicas` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEntry {
    pub endpoint: Endpoint,
    pub healthy: bool,
    pub offset: u64,
    /// Why it is not healthy (flags, link status), for messages.
    pub state: String,
}

/// Read `SENTINEL replicas` entries (flat key/value lists).
pub fn replica_entries(replies: &[Vec<(String, String)>]) -> Vec<ReplicaEntry> {
    let mut out: Vec<ReplicaEntry> = replies
        .iter()
        .filter_map(|kv| {
            let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            let endpoint = Endpoint { host: get("ip")?.to_string(), port: get("port")?.parse().ok()? };
            let flags = get("flags").unwrap_or("");
            let link = get("master-link-status").unwrap_or("");
            let bad_flag = flags.split(',').any(|f| matches!(f, "s_down" | "o_down" | "disconnected"));
            let healthy = !bad_flag && flags.split(',').any(|f| f == "slave") && link == "ok";
            let offset = get("slave-repl-offset").and_then(|o| o.parse().ok()).unwrap_or(0);
            Some(ReplicaEntry { endpoint, healthy, offset, state: format!("flags={flags}, master-link-status={link}") })
        })
        .collect();
    // healthy first, freshest first
    out.sort_by(|a, b| b.healthy.cmp(&a.healthy).then(b.offset.cmp(&a.offset)));
    out
}

/// Ask the sentinels, in order, for the master and its replicas.
async fn ask(job: &str, s: &Settings, sent: &SentinelSettings) -> Result<(Endpoint, Vec<ReplicaEntry>)> {
    let mut problems = Vec::new();
    for addr in &sent.addrs {
        let at = format!("sentinel {addr}");
        let mut conn = match s.dial.connect(addr, &sent.auth).await {
            Ok(c) => c,
            Err(f) => {
                problems.push(format!("{at}: {f}"));
                continue;
            }
        };
        let master = match conn.cmd(&["SENTINEL", "get-master-addr-by-name", &sent.master_name]).await {
            Ok(v) if v.is_nil() => {
                problems.push(format!("{at}: does not know master `{}`", sent.master_name));
                continue;
            }
            Ok(v) => {
                let items = v.items();
                let host = items.first().and_then(|h| h.text());
                let port = items.get(1).and_then(|p| p.text()).and_then(|p| p.parse::<u16>().ok());
                match (host, port) {
                    (Some(host), Some(port)) => Endpoint { host, port },
                    _ => {
                        problems.push(format!("{at}: unexpected answer {v:?}"));
                        continue;
                    }
                }
            }
            Err(f) => {
                problems.push(format!("{at}: {f}"));
                continue;
            }
        };
        let replicas = match conn.cmd(&["SENTINEL", "replicas", &sent.master_name]).await {
            Ok(v) => v,
            // before 5.0 the subcommand is `slaves`
            Err(Failure::Server(_)) => {
                conn.cmd(&["SENTINEL", "slaves", &sent.master_name]).await.unwrap_or(Value::Array(None))
            }
            Err(f) => {
                problems.push(format!("{at}: {f}"));
                continue;
            }
        };
        let entries: Vec<Vec<(String, String)>> = replicas.items().iter().map(|r| r.pairs()).collect();
        return Ok((master, replica_entries(&entries)));
    }
    Err(Error::source_failed(
        job,
        format!("no sentinel could name the master `{}`: {}", sent.master_name, problems.join("; ")),
        Some("check `sentinel` (host:port of each sentinel), `master_name` and `sentinel_password`".into()),
    ))
}

/// The server to back up: a healthy in-sync replica, else the master.
pub async fn choose(job: &str, s: &Settings, sent: &SentinelSettings) -> Result<Node> {
    let (master, replicas) = ask(job, s, sent).await?;
    let mut passed_over = Vec::new();
    for r in replicas.iter() {
        if !r.healthy {
            passed_over.push(format!("{} ({})", r.endpoint, r.state));
            continue;
        }
        match s.dial.connect(&r.endpoint, &s.auth).await {
            Ok(mut conn) => match conn.info().await {
                Ok(info) if info.replica_in_sync() => {
                    return Ok(Node {
                        endpoint: r.endpoint.clone(),
                        conn,
                        info,
                        why: Some(format!(
                            "a replica of `{}` (master {master}) chosen by the sentinels",
                            sent.master_name
                        )),
                        sentinel_master: Some(sent.master_name.clone()),
                    });
                }
                Ok(_) => passed_over.push(format!("{} (not in sync with its master)", r.endpoint)),
                Err(f) => passed_over.push(format!("{} ({f})", r.endpoint)),
            },
            Err(f @ (Failure::Auth(_) | Failure::Tls(_))) => {
                // the same credentials serve the master: say so now rather than fail there
                return Err(failed(job, &s.display(&r.endpoint), "cannot log in to replica", f));
            }
            Err(f) => passed_over.push(format!("{} ({f})", r.endpoint)),
        }
    }
    let shown = s.display(&master);
    let mut conn =
        s.dial.connect(&master, &s.auth).await.map_err(|f| failed(job, &shown, "cannot connect to master", f))?;
    let info = conn.info().await.map_err(|f| failed(job, &shown, "INFO failed on", f))?;
    if info.is_replica() {
        return Err(Error::source_failed(
            job,
            format!("the sentinels name {shown} as master `{}`, but it is a replica", sent.master_name),
            Some("a failover is probably in progress: run the job again in a minute".into()),
        ));
    }
    let why = if replicas.is_empty() {
        format!("the master of `{}` (it has no replicas)", sent.master_name)
    } else {
        format!("the master of `{}` (no healthy replica: {})", sent.master_name, passed_over.join(", "))
    };
    tracing::info!(job, master = %master, "{why}");
    Ok(Node { endpoint: master, conn, info, why: Some(why), sentinel_master: Some(sent.master_name.clone()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(port: u16, flags: &str, link: &str, offset: u64) -> Vec<(String, String)> {
        [
            ("name", format!("127.0.0.1:{port}")),
            ("ip", "127.0.0.1".into()),
            ("port", port.to_string()),
            ("flags", flags.into()),
            ("master-link-status", link.into()),
            ("slave-repl-offset", offset.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn healthy_freshest_replica_first() {
        let e = replica_entries(&[
            entry(7001, "slave", "ok", 100),
            entry(7002, "s_down,slave", "err", 900),
            entry(7003, "slave", "ok", 500),
            entry(7004, "slave,disconnected", "ok", 999),
            entry(7005, "slave", "err", 999),
        ]);
        let ports: Vec<u16> = e.iter().map(|r| r.endpoint.port).collect();
        assert_eq!(&ports[..2], &[7003, 7001]);
        assert!(e[0].healthy && e[1].healthy);
        assert!(e[2..].iter().all(|r| !r.healthy));
        assert!(e.iter().find(|r| r.endpoint.port == 7002).unwrap().state.contains("s_down"));
    }

    #[test]
    fn skips_malformed_entries() {
        let bad = vec![("ip".to_string(), "h".to_string())];
        assert!(replica_entries(&[bad]).is_empty());
    }
}
