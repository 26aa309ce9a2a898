//! Cross-field validation: what each table cannot check about itself.

use std::collections::{BTreeMap, BTreeSet};

use super::Config;
use super::locate::Step;
use super::problems::{Problems, Section, Source, key};

/// Names become object-key components and metric labels: keep them plain.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 64
}

/// `[notify.NAME]`: a URL (one of `url`, `url_file`), http(s), and jobs that exist.
fn validate_notify(config: &Config, main: &Source, p: &mut Problems) {
    for (name, c) in &config.notify {
        let at = |k: &str| vec![key("notify"), key(name), key(k)];
        match (&c.url, &c.url_file) {
            (None, None) => p.error(
                main,
                &[key("notify"), key(name)],
                "a notification channel needs `url` or `url_file`",
                Some(
                    "e.g. `url_file = \"/secrets/ntfy-topic-url\"` (a file holding https://ntfy.sh/your-topic)".into(),
                ),
            ),
            (Some(_), Some(_)) => p.error(main, &at("url_file"), "give `url` or `url_file`, not both", None),
            (Some(u), None) => {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    p.error(
                        main,
                        &at("url"),
                        format!("`{}` is not an http(s) URL", crate::redact::url_for_display(u)),
                        None,
                    );
                }
            }
            (None, Some(_)) => {}
        }
        for (i, job) in c.jobs.iter().enumerate() {
            if !config.jobs.contains_key(job) {
                p.error(
                    main,
                    &[key("notify"), key(name), key("jobs"), Step::Index(i)],
                    format!("unknown job `{job}`"),
                    Some(format!("known jobs: {}", config.jobs.keys().cloned().collect::<Vec<_>>().join(", "))),
                );
            }
        }
        if c.events.as_ref().is_some_and(Vec::is_empty) {
            p.warn(main, &at("events"), "no events: this channel never sends anything", None);
        }
    }
}

pub(super) fn validate(config: &Config, sources: &[Source], origin: &BTreeMap<String, usize>, p: &mut Problems) {
    let main = &sources[0];

    validate_notify(config, main, p);
    if config.jobs.values().next().is_some() && config.encryption.recipients.is_empty() {
        p.error(
            main,
            &[key("encryption"), key("recipients")],
            "no age recipients: backups cannot be encrypted",
            Some("run `drctl keygen --output age.key` and put the printed `age1…` recipient here".into()),
        );
    }
    for (i, r) in config.encryption.recipients.iter().enumerate() {
        if r.parse::<age::x25519::Recipient>().is_err() {
            p.error(
                main,
                &[key("encryption"), key("recipients"), Step::Index(i)],
                format!("`{r}` is not an age X25519 recipient"),
                Some("recipients look like `age1…`; `drctl keygen` prints one".into()),
            );
        }
    }
    if let Some(id) = &config.encryption.identity_file
        && !id.exists()
    {
        p.warn(
            main,
            &[key("encryption"), key("identity_file")],
            format!("`{}` does not exist: restore and verify will fail on this host", id.display()),
            None,
        );
    }
    if !(1..=19).contains(&config.compression.level) {
        p.error(
            main,
            &[key("compression"), key("level")],
            format!("zstd level {} is out of range", config.compression.level),
            Some("use 1..=19 (3 is the default)".into()),
        );
    }

    if let Some(tz) = &config.daemon.timezone
        && jiff::tz::TimeZone::get(tz).is_err()
    {
        p.error(
            main,
            &[key("daemon"), key("timezone")],
            format!("unknown time zone `{tz}`"),
            Some("an IANA name such as `Europe/Berlin` or `UTC`".into()),
        );
    }
    for (field, value) in [("jitter", &config.daemon.jitter), ("grace", &config.daemon.grace)] {
        if let Some(v) = value
            && humantime::parse_duration(v).is_err()
        {
            p.error(
                main,
                &[key("daemon"), key(field)],
                format!("`{v}` is not a duration"),
                Some("e.g. `30s`, `10m`".into()),
            );
        }
    }
    if config.daemon.max_concurrent == Some(0) {
        p.error(main, &[key("daemon"), key("max_concurrent")], "max_concurrent must be at least 1", None);
    }
    for (name, storage) in &config.deploy.targets {
        let path = [key("deploy"), key("targets"), key(name)];
        match config.targets.get(name).map(|t| t.kind.settings().local_path()) {
            Some(Some(_)) => {}
            Some(None) => p.error(
                main,
                &path,
                format!("target `{name}` is not an `fs` target: only `fs` targets need deploy storage"),
                Some(format!("remove `[deploy.targets.{name}]`")),
            ),
            None => p.error(
                main,
                &path,
                format!("unknown target `{name}`"),
                Some(format!("known targets: {}", config.targets.keys().cloned().collect::<Vec<_>>().join(", "))),
            ),
        }
        deploy_storage(main, &path, storage, true, p);
    }
    if let Some(storage) = &config.deploy.catalog {
        deploy_storage(main, &[key("deploy"), key("catalog")], storage, false, p);
    }
    for (name, t) in &config.targets {
        let path = [key("targets"), key(name)];
        if let Some(w) = t.common.keep.as_ref().and_then(|k| k.within.as_ref())
            && humantime::parse_duration(w).is_err()
        {
            p.error(
                main,
                &[key("targets"), key(name), key("keep"), key("within")],
                format!("`{w}` is not a duration"),
                Some("e.g. `7d`, `36h`, `2weeks`".into()),
            );
        }
        if let Some(t) = &t.common.timeouts {
            for (field, value) in [("connect", &t.connect), ("idle", &t.idle), ("request", &t.request)] {
                if let Some(v) = value
                    && humantime::parse_duration(v).map_or(true, |d| d.is_zero())
                {
                    p.error(
                        main,
                        &[key("targets"), key(name), key("timeouts"), key(field)],
                        format!("`{v}` is not a positive duration"),
                        Some("e.g. `10s`, `2m`".into()),
                    );
                }
            }
        }
        if !valid_name(name) {
            p.error(main, &path, format!("target name `{name}` may only use letters, digits, `-` and `_`"), None);
        }
        t.kind.validate(&Section { src: main, path: path.to_vec() }, p);
    }

    for (name, job) in &config.jobs {
        let src = &sources[*origin.get(name).unwrap_or(&0)];
        let at = |k: &str| [key("jobs"), key(name), key(k)];
        if !valid_name(name) {
            p.error(
                src,
                &[key("jobs"), key(name)],
                format!("job name `{name}` may only use letters, digits, `-` and `_`"),
                None,
            );
        }
        if job.common.targets.is_empty() {
            p.error(
                src,
                &at("targets"),
                "a job needs at least one target",
                Some(format!("known targets: {}", known(config))),
            );
        }
        if let Some(expr) = &job.common.schedule
            && let Err(e) = crate::scheduler::Schedule::parse(expr)
        {
            p.error(src, &at("schedule"), e.message, Some(e.hint.into()));
        }
        if let Some(expr) = job.common.verify.as_ref().and_then(|v| v.schedule.as_ref())
            && let Err(e) = crate::scheduler::Schedule::parse(expr)
        {
            p.error(src, &[key("jobs"), key(name), key("verify"), key("schedule")], e.message, Some(e.hint.into()));
        }
        if let Some(rpo) = &job.common.rpo
            && humantime::parse_duration(rpo).is_err()
        {
            p.error(src, &at("rpo"), format!("`{rpo}` is not a duration"), Some("e.g. `26h`, `8d`".into()));
        }
        if let Some(t) = &job.common.hook_timeout
            && humantime::parse_duration(t).map_or(true, |d| d.is_zero())
        {
            p.error(
                src,
                &at("hook_timeout"),
                format!("`{t}` is not a duration above zero"),
                Some("e.g. `2m`, `30s`".into()),
            );
        }
        for (field, list) in
            [("before", &job.common.before), ("after", &job.common.after), ("on_failure", &job.common.on_failure)]
        {
            for (i, cmd) in list.iter().enumerate() {
                if cmd.trim().is_empty() {
                    let path = [key("jobs"), key(name), key(field), Step::Index(i)];
                    p.error(src, &path, "empty hook command", None);
                }
            }
        }
        let placements: Vec<_> =
            job.common.targets.iter().filter_map(|t| config.targets.get(t).map(|c| c.placement(t))).collect();
        if placements.len() == job.common.targets.len() && !placements.is_empty() {
            let best = crate::retention::rule321::achievable(&placements);
            if !best.ok {
                p.warn(
                    src,
                    &at("targets"),
                    format!("these targets can never satisfy 3-2-1: {}", best.missing.join("; ")),
                    Some("add a target on another medium, with `offsite = true`".into()),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (i, t) in job.common.targets.iter().enumerate() {
            let path = [key("jobs"), key(name), key("targets"), Step::Index(i)];
            if !config.targets.contains_key(t) {
                p.error(src, &path, format!("unknown target `{t}`"), Some(format!("known targets: {}", known(config))));
            }
            if !seen.insert(t) {
                p.error(src, &path, format!("target `{t}` is listed twice"), None);
            }
        }
        if job.common.storage.is_none()
            && job.spec.kind().chunked_by_default()
            && config.encryption.chunk_key_file.is_none()
        {
            p.warn(
                src,
                &[key("jobs"), key(name)],
                format!(
                    "this {} job stores a full copy every time: it would be deduplicated (`storage = \"chunked\"`, the default for its kind) but no chunk key is configured",
                    job.spec.kind_name()
                ),
                Some("run `drctl keygen --chunk-key chunk.key` and set `chunk_key_file = \"chunk.key\"` under [encryption], or set `storage = \"stream\"` on the job to keep full copies".into()),
            );
        }
        if job.common.storage() == crate::jobs::Storage::Chunked && config.encryption.chunk_key_file.is_none() {
            p.error(
                src,
                &at("storage"),
                "`storage = \"chunked\"` needs a chunk key: `encryption.chunk_key_file` is not set",
                Some("run `drctl keygen --chunk-key chunk.key` and set `chunk_key_file = \"chunk.key\"` under [encryption] (every host writing to these targets needs the same file), or use `storage = \"stream\"`".into()),
            );
        }
        job.spec.validate(&Section { src, path: vec![key("jobs"), key(name)] }, p);
    }
}

fn known(config: &Config) -> String {
    if config.targets.is_empty() {
        "none (add a [targets.NAME] table)".into()
    } else {
        config.targets.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// The secret (and key) files the configuration names, with where each is configured: the path of
/// its key and the source file that holds it.
fn secret_files<'a>(
    config: &'a Config,
    sources: &'a [Source],
    origin: &BTreeMap<String, usize>,
) -> Vec<(&'a Source, Vec<Step>, &'a std::path::Path)> {
    let main = &sources[0];
    let mut out: Vec<(&Source, Vec<Step>, &std::path::Path)> = Vec::new();
    if let Some(f) = &config.encryption.identity_file {
        out.push((main, vec![key("encryption"), key("identity_file")], f));
    }
    if let Some(f) = &config.encryption.chunk_key_file {
        out.push((main, vec![key("encryption"), key("chunk_key_file")], f));
    }
    if let Some(f) = config.api.as_ref().and_then(|a| a.token_file.as_ref()) {
        out.push((main, vec![key("api"), key("token_file")], f));
    }
    for (name, c) in &config.notify {
        for (k, f) in [("url_file", &c.url_file), ("token_file", &c.token_file)] {
            if let Some(f) = f {
                out.push((main, vec![key("notify"), key(name), key(k)], f));
            }
        }
    }
    for (name, t) in &config.targets {
        let at = |k: &str| vec![key("targets"), key(name), key(k)];
        let files = t.kind.settings().secret_files();
        out.extend(files.into_iter().filter_map(|(k, f)| f.map(|f| (main, at(k), f))));
    }
    for (name, j) in &config.jobs {
        let src = &sources[*origin.get(name).unwrap_or(&0)];
        let at = |k: &str| vec![key("jobs"), key(name), key(k)];
        let files = j.spec.settings().secret_files();
        out.extend(files.into_iter().filter_map(|(k, f)| f.map(|f| (src, at(k), f))));
    }
    out
}

/// Secret files that are missing, and secret files others can read, each located (file:line,
/// key) like every other configuration problem.
///
/// * `missing`: errors. Loading keeps them as warnings (a host may legitimately lack the secrets
///   of jobs it never runs, e.g. a restore-only machine), but `drctl run` refuses to start a job
///   whose own or whose targets' secret file is missing (exit 2) and `drctl check` reports them
///   as configuration errors (exit 2).
/// * `modes`: for `drctl check`. A secret file readable by every user is a warning; an age
///   identity readable by anyone but its owner is an error, as ssh refuses such a private key.
pub(super) fn secret_file_problems(
    config: &Config,
    sources: &[Source],
    origin: &BTreeMap<String, usize>,
) -> (Vec<super::Problem>, Vec<super::Problem>) {
    use std::os::unix::fs::PermissionsExt;
    let (mut missing, mut modes) = (Problems::default(), Problems::default());
    for (src, path, file) in secret_files(config, sources, origin) {
        let is_identity = path == [key("encryption"), key("identity_file")];
        // host keys are public: required, but nobody's secret
        let is_secret = path.last() != Some(&key("known_hosts_file"));
        match std::fs::metadata(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.error(
                src,
                &path,
                format!("`{}` does not exist", file.display()),
                Some("create the file (its first line is the secret), or fix the path; relative paths are resolved against the config's directory".into()),
            ),
            Err(e) => missing.error(src, &path, format!("`{}` cannot be read: {e}", file.display()), None),
            Ok(m) => {
                let mode = m.permissions().mode() & 0o777;
                if is_identity && mode & 0o077 != 0 {
                    modes.error(
                        src,
                        &path,
                        format!("`{}` is accessible by others (mode {mode:04o}): the age identity decrypts every backup", file.display()),
                        Some(format!("`chmod 600 {}` (as ssh requires for a private key)", file.display())),
                    );
                } else if is_secret && mode & 0o004 != 0 {
                    modes.warn(
                        src,
                        &path,
                        format!("`{}` is readable by every user (mode {mode:04o})", file.display()),
                        Some(format!("`chmod 600 {}` (or 640 with a group only drctl is in)", file.display())),
                    );
                }
            }
        }
    }
    (missing.0, modes.0)
}

/// `[deploy.targets.NAME]` / `[deploy.catalog]`: exactly one of `size` and `host_path` (for the
/// catalog, neither means the default claim), a Kubernetes quantity, an absolute host path.
fn deploy_storage(src: &Source, path: &[Step], s: &super::DeployStorage, required: bool, p: &mut Problems) {
    match (&s.size, &s.host_path) {
        (Some(_), Some(_)) => p.error(
            src,
            path,
            "both `size` and `host_path` are set",
            Some("choose one: `size` renders a PersistentVolumeClaim, `host_path` mounts a node directory".into()),
        ),
        (None, None) if required => p.error(
            src,
            path,
            "neither `size` nor `host_path` is set",
            Some("set `size = \"50Gi\"` (a PersistentVolumeClaim) or `host_path = \"/srv/drctl\"`".into()),
        ),
        _ => {}
    }
    if s.host_path.is_some() && s.storage_class.is_some() {
        p.error(src, path, "`storage_class` is for claims: it does nothing with `host_path`", None);
    }
    if let Some(size) = &s.size
        && !is_quantity(size)
    {
        let mut at = path.to_vec();
        at.push(key("size"));
        p.error(src, &at, format!("`{size}` is not a storage size"), Some("e.g. `1Gi`, `50Gi`, `1Ti`".into()));
    }
    if let Some(h) = &s.host_path
        && !h.is_absolute()
    {
        let mut at = path.to_vec();
        at.push(key("host_path"));
        p.error(src, &at, format!("host_path `{}` is not absolute", h.display()), None);
    }
}

/// A Kubernetes storage quantity with a binary or decimal suffix: `512Mi`, `50Gi`, `1T`.
fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && ["Ki", "Mi", "Gi", "Ti", "Pi", "k", "M", "G", "T", "P"].contains(&suffix)
}
