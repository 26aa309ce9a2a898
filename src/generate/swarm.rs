//! A Docker Swarm stack file: the daemon as one service (it schedules every job itself), the config
//! as swarm configs, secret files as external swarm secrets, the engine socket where jobs use
//! `docker exec` or Docker volumes. Every `fs` target and the SQLite catalog are a named volume or
//! a bind mount (never the container's tmpfs), and since both are node-local the service is
//! placed on the node labelled `drctl.storage=true`, where they stay.

use serde_json::{Value, json};

use super::{
    CONFIG_DIR, DurablePaths, Options, STATE_DIR, Sources, UID, all_secrets, dns_name, host_path, identity_path,
    needs_docker, stream,
};
use crate::config::Config;

/// Directories deploy/Dockerfile creates owned by the image's user: a new named volume mounted
/// there starts writable for drctl (Docker copies the image's directory into it).
pub const IMAGE_DIRS: [&str; 2] = [STATE_DIR, "/var/backups/drctl"];

/// Render the stack file; the second value lists notes for the operator. A configuration error
/// (exit 2) when an `fs` target has no durable storage in `[deploy]` or the daemon would listen
/// on loopback.
pub fn render(config: &Config, sources: &Sources, opts: &Options) -> crate::Result<(String, Vec<String>)> {
    let (stack, files, notes) = document(config, sources, opts)?;
    let mut header = String::from(
        "# Rendered by `drctl generate swarm` from drctl.toml: edit the config and render again.\n\
         # Deploy beside drctl.toml and jobs/: docker stack deploy -c drctl-stack.yml drctl\n\
         # Create the secrets first:\n",
    );
    for f in &files {
        header.push_str(&format!(
            "#   docker secret create drctl_{} ./{}\n",
            dns_name(&f.key).replace('-', "_"),
            f.key
        ));
    }
    for n in &notes {
        header.push_str(&format!("# Note: {n}\n"));
    }
    Ok((stream(&header, &[stack]), notes))
}

/// The stack as a JSON value, the secret files it references, and notes.
pub fn document(
    config: &Config,
    sources: &Sources,
    opts: &Options,
) -> crate::Result<(Value, Vec<super::SecretFile>, Vec<String>)> {
    super::check_listen(config)?;
    let durable = DurablePaths::plan(config, config.jobs.values())?;
    let mut notes = Vec::new();
    let docker = config.jobs.values().any(needs_docker);
    let port = super::api_port(config);

    let mut configs = serde_json::Map::new();
    let mut service_configs =
        vec![json!({"source": "drctl_toml", "target": format!("{CONFIG_DIR}/drctl.toml"), "mode": 0o444})];
    configs.insert("drctl_toml".into(), json!({"file": "./drctl.toml"}));
    for (file, _) in &sources.jobs {
        let key = format!("drctl_job_{}", dns_name(file.trim_end_matches(".toml")).replace('-', "_"));
        service_configs.push(json!({"source": key, "target": format!("{CONFIG_DIR}/jobs/{file}"), "mode": 0o444}));
        configs.insert(key, json!({"file": format!("./jobs/{file}")}));
    }

    let mut secrets = serde_json::Map::new();
    let mut service_secrets = Vec::new();
    let mut files = all_secrets(config);
    if let Some(id) = identity_path(config) {
        // the daemon runs drills: it needs the identity (keep backup-only hosts on CronJobs or `drctl run`)
        files.push(super::SecretFile { key: "age.key".into(), path: id });
    }
    for f in &files {
        let name = format!("drctl_{}", dns_name(&f.key).replace('-', "_"));
        let mut secret = json!({"source": name, "target": f.path, "mode": 0o400});
        if !docker {
            // swarm mounts secrets owned by root unless told: 0400 root would be unreadable for
            // the image's user, and the daemon would not start
            secret["uid"] = Value::String(UID.to_string());
            secret["gid"] = Value::String(UID.to_string());
        }
        service_secrets.push(secret);
        secrets.insert(name, json!({"external": true}));
    }

    let mut volumes = Vec::new();
    let mut named = serde_json::Map::new();
    match &durable.catalog {
        Some((dir, s)) => {
            match &s.host_path {
                Some(hp) => {
                    volumes.push(json!({"type": "bind", "source": format!("{}/daemon", hp.display()), "target": dir}))
                }
                None => {
                    volumes.push(json!({"type": "volume", "source": "drctl_state", "target": dir}));
                    named.insert("drctl_state".into(), json!({}));
                }
            }
            if dir != STATE_DIR {
                volumes.push(json!({"type": "tmpfs", "target": STATE_DIR}));
            }
        }
        None => volumes.push(json!({"type": "tmpfs", "target": STATE_DIR})),
    }
    for (name, (path, s)) in &durable.targets {
        match &s.host_path {
            Some(hp) => volumes.push(json!({"type": "bind", "source": hp.display().to_string(), "target": path})),
            None => {
                let vol = format!("drctl_target_{}", dns_name(name).replace('-', "_"));
                volumes.push(json!({"type": "volume", "source": vol, "target": path}));
                named.insert(vol, json!({}));
                if !docker && !IMAGE_DIRS.contains(&path.as_str()) {
                    // a new named volume copies the image's directory there, owner included
                    notes.push(format!(
                        "fs target `{name}`: the image has no `{path}`, so its new named volume is owned by root and the daemon (uid {UID}) cannot write it: use `{}` or set `host_path` to a node directory owned by {UID}:{UID}",
                        IMAGE_DIRS[1]
                    ));
                }
            }
        }
        notes.push(format!(
            "fs target `{name}` (`{path}`) is {} on the node labelled `drctl.storage=true`: back that node's disk up elsewhere too (3-2-1)",
            match &s.host_path {
                Some(hp) => format!("bind mount `{}`", hp.display()),
                None => "a named volume".to_string(),
            }
        ));
    }
    let mut hosts: Vec<String> = config.jobs.values().filter_map(host_path).collect();
    hosts.sort();
    hosts.dedup();
    for p in hosts {
        volumes.push(json!({"type": "bind", "source": p, "target": p, "read_only": true}));
    }
    if docker {
        volumes.push(json!({"type": "bind", "source": "/var/run/docker.sock", "target": "/var/run/docker.sock"}));
        notes.push(
            "jobs use `docker exec` or Docker volumes: the service mounts the engine socket, runs as root (socket \
             access is root on the host anyway) and is placed on nodes labelled `drctl.docker=true`, which must be \
             the node(s) running those containers"
                .to_string(),
        );
    }
    let mut constraints = vec!["node.platform.os == linux".to_string()];
    if docker {
        constraints.push("node.labels.drctl.docker == true".into());
    }
    // named volumes and bind mounts are node-local: the task must come back where its data is
    constraints.push("node.labels.drctl.storage == true".into());
    let service = json!({
        "image": opts.image,
        "command": ["--config", format!("{CONFIG_DIR}/drctl.toml"), "daemon"],
        "user": if docker { "0:0".to_string() } else { format!("{UID}:{UID}") },
        "environment": {"HOME": "/tmp", "DRCTL_STATE_DIR": STATE_DIR},
        "configs": service_configs,
        "secrets": service_secrets,
        "volumes": volumes,
        "ports": [{"target": port, "published": port, "protocol": "tcp", "mode": "ingress"}],
        "read_only": true,
        "tmpfs": ["/tmp"],
        "healthcheck": {
            "test": ["CMD", "curl", "-fsS", format!("http://127.0.0.1:{port}/healthz")],
            "interval": "30s", "timeout": "5s", "retries": 3, "start_period": "20s",
        },
        "stop_grace_period": "5m30s",
        "deploy": {
            // one daemon: with a SQLite catalog a second one would run every job twice
            "replicas": 1,
            "placement": {"constraints": constraints},
            "restart_policy": {"condition": "any", "delay": "10s", "window": "60s"},
            "update_config": {"order": "stop-first", "parallelism": 1},
            "resources": {"limits": {"memory": "512M"}, "reservations": {"memory": "128M"}},
        },
    });
    let stack = json!({
        "version": "3.8",
        "services": {"drctl": service},
        "configs": configs,
        "secrets": secrets,
        "volumes": named,
    });
    notes.extend(super::physical_drill_notes(config));
    Ok((stack, files, notes))
}
