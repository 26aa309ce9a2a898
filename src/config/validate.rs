//! Cross-field validation: what each table cannot check about itself.

use std::collections::{BTreeMap, BTreeSet};

use super::locate::Step;
use super::problems::{Problems, Section, Source, key};
use super::{Config, TargetKind};

/// A target's `root` is a relative directory below the account's home (or the WebDAV URL).
fn check_root(p: &mut Problems, src: &Source, path: &[Step], root: Option<&str>) {
    if let Some(r) = root
        && r.split('/').any(|c| c == ".." || c == ".")
    {
        p.error(
            src,
            path,
            format!("root `{r}` may not contain `.` or `..`"),
            Some("e.g. `drctl` or `backups/drctl`".into()),
        );
    }
}

/// Names become object-key components and metric labels: keep them plain.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 64
}

pub(super) fn validate(config: &Config, sources: &[Source], origin: &BTreeMap<String, usize>, p: &mut Problems) {
    let main = &sources[0];

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
        match config.targets.get(name).map(|t| &t.kind) {
            Some(TargetKind::Fs(_)) => {}
            Some(_) => p.error(
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
        match &t.kind {
            TargetKind::Fs(_) => {}
            TargetKind::S3(s3) => {
                let at = |k: &str| [key("targets"), key(name), key(k)];
                if s3.access_key_id.is_some() && s3.access_key_id_file.is_some() {
                    p.error(main, &at("access_key_id"), "set `access_key_id` or `access_key_id_file`, not both", None);
                }
                if s3.secret_access_key.is_some() && s3.secret_access_key_file.is_some() {
                    p.error(
                        main,
                        &at("secret_access_key"),
                        "set `secret_access_key` or `secret_access_key_file`, not both",
                        None,
                    );
                }
                if !(5..=5120).contains(&s3.part_size_mib) {
                    p.error(
                        main,
                        &at("part_size_mib"),
                        format!("part size {} MiB is outside S3's 5..=5120 MiB", s3.part_size_mib),
                        None,
                    );
                }
                if let Some(ep) = &s3.endpoint
                    && url::Url::parse(ep).is_err()
                {
                    p.error(
                        main,
                        &at("endpoint"),
                        format!("`{ep}` is not a URL"),
                        Some("e.g. `https://fsn1.your-objectstorage.com`".into()),
                    );
                }
                if s3.bucket.is_empty() {
                    p.error(main, &at("bucket"), "bucket is empty", None);
                }
                if let Some(lock) = &s3.object_lock
                    && lock.days == 0
                {
                    p.error(
                        main,
                        &[key("targets"), key(name), key("object_lock"), key("days")],
                        "object lock retention must be at least 1 day",
                        Some("e.g. `object_lock = { mode = \"compliance\", days = 30 }`".into()),
                    );
                }
                if let Some(class) = &s3.storage_class {
                    if class.is_empty() || class.contains(char::is_whitespace) {
                        p.error(
                            main,
                            &at("storage_class"),
                            format!("`{class}` is not a storage class"),
                            Some("e.g. `STANDARD`, `STANDARD_IA`, `GLACIER_IR`".into()),
                        );
                    } else if !aws_sdk_s3::types::StorageClass::values().contains(&class.as_str()) {
                        p.warn(
                            main,
                            &at("storage_class"),
                            format!("`{class}` is not an AWS storage class: it is passed to the store as is"),
                            Some(format!("AWS knows {}", aws_sdk_s3::types::StorageClass::values().join(", "))),
                        );
                    }
                }
                if s3.sse_kms_key_id.is_some() && s3.sse != Some(super::S3Sse::AwsKms) {
                    p.error(main, &at("sse_kms_key_id"), "`sse_kms_key_id` needs `sse = \"aws:kms\"`", None);
                }
            }
            TargetKind::Sftp(sftp) => {
                let at = |k: &str| [key("targets"), key(name), key(k)];
                if sftp.host.is_empty() || sftp.host.starts_with('-') || sftp.host.contains(char::is_whitespace) {
                    p.error(main, &at("host"), format!("`{}` is not a host name", sftp.host), None);
                }
                if sftp.user.is_empty() || sftp.user.starts_with('-') || sftp.user.contains(char::is_whitespace) {
                    p.error(main, &at("user"), format!("`{}` is not a user name", sftp.user), None);
                }
                if sftp.port == 0 {
                    p.error(main, &at("port"), "port 0", Some("a Storage Box listens on 23 (and 22)".into()));
                }
                if sftp.max_connections == 0 {
                    p.error(main, &at("max_connections"), "max_connections must be at least 1", None);
                } else if sftp.max_connections > 10 {
                    p.warn(
                        main,
                        &at("max_connections"),
                        format!("{} connections: a Storage Box allows about 10 per account", sftp.max_connections),
                        Some("4 (the default) is plenty: each connection streams at full speed".into()),
                    );
                }
                for (field, file) in [("key_file", &sftp.key_file), ("known_hosts_file", &sftp.known_hosts_file)] {
                    if !file.exists() {
                        p.warn(
                            main,
                            &at(field),
                            format!("`{}` does not exist: this target is unusable on this host", file.display()),
                            Some(if field == "key_file" {
                                "create a key with `ssh-keygen -t ed25519 -N '' -f FILE` and install its .pub on the server".into()
                            } else {
                                "get the host key with `ssh-keyscan -p PORT HOST > FILE` and check its fingerprint against the provider's".into()
                            }),
                        );
                    }
                }
                check_root(p, main, &at("root"), sftp.root.as_deref());
            }
            TargetKind::Webdav(dav) => {
                let at = |k: &str| [key("targets"), key(name), key(k)];
                match url::Url::parse(&dav.url) {
                    _ if dav.url.contains("${") => {}
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                        if let Some(pw) = u.password() {
                            crate::redact::register(pw);
                        }
                        let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                        if u.scheme() == "http" && !loopback {
                            p.warn(
                                main,
                                &at("url"),
                                "plain http: the password travels unencrypted",
                                Some("use https (a Storage Box serves WebDAV over https)".into()),
                            );
                        }
                    }
                    _ => p.error(
                        main,
                        &at("url"),
                        format!("`{}` is not an http(s) URL", crate::redact::url_for_display(&dav.url)),
                        Some("e.g. `https://u123456.your-storagebox.de`".into()),
                    ),
                }
                if dav.user.is_empty() {
                    p.error(main, &at("user"), "user is empty", None);
                }
                match (&dav.password, &dav.password_file) {
                    (Some(_), Some(_)) => {
                        p.error(main, &at("password"), "set `password` or `password_file`, not both", None)
                    }
                    (None, None) => p.error(
                        main,
                        &[key("targets"), key(name)],
                        "no `password` or `password_file`",
                        Some("a Storage Box's WebDAV needs the account (or sub-account) password".into()),
                    ),
                    (None, Some(f)) if !f.exists() => {
                        p.warn(main, &at("password_file"), format!("`{}` does not exist", f.display()), None)
                    }
                    _ => {}
                }
                check_root(p, main, &at("root"), dav.root.as_deref());
            }
        }
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
    if let Some(f) = config.api.as_ref().and_then(|a| a.token_file.as_ref()) {
        out.push((main, vec![key("api"), key("token_file")], f));
    }
    for (name, t) in &config.targets {
        let at = |k: &str| vec![key("targets"), key(name), key(k)];
        let files: Vec<(&str, &std::path::Path)> = match &t.kind {
            TargetKind::Fs(_) => vec![],
            TargetKind::S3(s3) => {
                [("access_key_id_file", &s3.access_key_id_file), ("secret_access_key_file", &s3.secret_access_key_file)]
                    .into_iter()
                    .filter_map(|(k, f)| f.as_deref().map(|f| (k, f)))
                    .collect()
            }
            TargetKind::Sftp(sftp) => {
                vec![("key_file", sftp.key_file.as_path()), ("known_hosts_file", sftp.known_hosts_file.as_path())]
            }
            TargetKind::Webdav(dav) => {
                dav.password_file.as_deref().map(|f| vec![("password_file", f)]).unwrap_or_default()
            }
        };
        out.extend(files.into_iter().map(|(k, f)| (main, at(k), f)));
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
