//! Reading `drctl.toml` and `jobs/*.toml` into a validated [`Config`], collecting every problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::fields::struct_fields;
use super::locate::{self, Step};
use super::problems::{Problems, Source, key};
use super::{
    CatalogConfig, CompressionConfig, Config, DaemonConfig, DeployConfig, EncryptionConfig, Problem, Severity,
};
use crate::jobs::JobCommon;
use crate::jobs::JobConfig;
use crate::jobs::JobSpec;
use crate::targets::TargetCommon;
use crate::targets::TargetConfig;
use crate::targets::TargetKind;
use crate::{Error, Result};

/// Load the config at `path` and the job files in `jobs/` beside it.
///
/// # Errors
/// [`Error::ReadFile`] when a file cannot be read, [`Error::Config`] with every problem found.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile { path: path.to_path_buf(), source })?;
    load_str(path, &text, read_job_files(path)?)
}

/// The `jobs/*.toml` files beside the config at `path`, sorted by name, with their text.
///
/// # Errors
/// [`Error::ReadFile`] when a job file cannot be read (a missing `jobs/` is no error).
pub fn read_job_files(path: &Path) -> Result<Vec<(PathBuf, String)>> {
    let jobs_dir = path.parent().unwrap_or(Path::new(".")).join("jobs");
    let mut job_files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&jobs_dir) {
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            let t = std::fs::read_to_string(&p).map_err(|source| Error::ReadFile { path: p.clone(), source })?;
            job_files.push((p, t));
        }
    }
    Ok(job_files)
}

/// Load from already-read text (used by [`load`] and by tests).
pub fn load_str(path: &Path, text: &str, job_files: Vec<(PathBuf, String)>) -> Result<Config> {
    let mut problems = Problems::default();
    let main = Source { file: path.to_path_buf(), text: text.to_string(), prefix: vec![] };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

    let Some(mut root) = parse(&main, &mut problems) else {
        return Err(Error::Config(problems.0));
    };
    expand_env(&main, &mut vec![], &mut root, &mut problems);

    const SECTIONS: [&str; 10] =
        ["catalog", "encryption", "compression", "pushgateway", "api", "notify", "daemon", "deploy", "targets", "jobs"];
    for k in root.keys() {
        if !SECTIONS.contains(&k.as_str()) {
            problems.error(
                &main,
                &[key(k)],
                format!("unknown section `{k}`"),
                Some(format!("known sections: {}", SECTIONS.join(", "))),
            );
        }
    }

    let catalog: CatalogConfig = section(&main, &mut root, "catalog", &mut problems).unwrap_or_default();
    let encryption: EncryptionConfig = section(&main, &mut root, "encryption", &mut problems).unwrap_or_default();
    let compression: CompressionConfig = section(&main, &mut root, "compression", &mut problems).unwrap_or_default();
    let pushgateway = section(&main, &mut root, "pushgateway", &mut problems);
    let api = section(&main, &mut root, "api", &mut problems);
    let notify = section(&main, &mut root, "notify", &mut problems).unwrap_or_default();
    let daemon: DaemonConfig = section(&main, &mut root, "daemon", &mut problems).unwrap_or_default();
    let deploy: DeployConfig = section(&main, &mut root, "deploy", &mut problems).unwrap_or_default();

    // targets
    let mut targets = BTreeMap::new();
    if let Some(t) = root.remove("targets") {
        match t {
            toml::Value::Table(t) => {
                for (name, value) in t {
                    let path = vec![key("targets"), key(&name)];
                    if let Some(target) =
                        split_entry::<TargetCommon, TargetKind>(&main, &path, value, "type", &mut problems)
                    {
                        targets.insert(name, TargetConfig { common: target.0, kind: target.1 });
                    }
                }
            }
            _ => problems.error(&main, &[key("targets")], "`targets` must be a table of `[targets.NAME]` tables", None),
        }
    }

    // jobs: [jobs.NAME] in the main file, then jobs/NAME.toml
    let mut sources = vec![main];
    let mut raw_jobs: Vec<(String, usize, toml::Value)> = Vec::new();
    if let Some(j) = root.remove("jobs") {
        match j {
            toml::Value::Table(t) => raw_jobs.extend(t.into_iter().map(|(n, v)| (n, 0, v))),
            _ => problems.error(&sources[0], &[key("jobs")], "`jobs` must be a table of `[jobs.NAME]` tables", None),
        }
    }
    for (file, text) in job_files {
        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let src = Source { file, text, prefix: vec![key("jobs"), key(&name)] };
        if let Some(mut table) = parse(&src, &mut problems) {
            let mut prefix = src.prefix.clone();
            expand_env(&src, &mut prefix, &mut table, &mut problems);
            if raw_jobs.iter().any(|(n, _, _)| *n == name) {
                problems.error(
                    &src,
                    &src.prefix.clone(),
                    format!("job `{name}` is defined twice: in this file and as [jobs.{name}] in the main config"),
                    Some("keep one of them".into()),
                );
            } else {
                raw_jobs.push((name, sources.len(), toml::Value::Table(table)));
            }
        }
        sources.push(src);
    }
    let mut jobs = BTreeMap::new();
    let mut origin = BTreeMap::new();
    for (name, src_idx, value) in raw_jobs {
        let path = vec![key("jobs"), key(&name)];
        if let Some((common, spec)) =
            split_entry::<JobCommon, JobSpec>(&sources[src_idx], &path, value, "kind", &mut problems)
        {
            origin.insert(name.clone(), src_idx);
            jobs.insert(name.clone(), JobConfig { name, common, spec });
        }
    }

    let mut config = Config {
        path: path.to_path_buf(),
        catalog,
        encryption,
        compression,
        pushgateway,
        api,
        notify,
        daemon,
        deploy,
        targets,
        jobs,
        warnings: vec![],
        missing_secret_files: vec![],
        secret_file_modes: vec![],
    };
    resolve_paths(&mut config, &base_dir);
    default_storage(&mut config);
    super::validate::validate(&config, &sources, &origin, &mut problems);
    (config.missing_secret_files, config.secret_file_modes) =
        super::validate::secret_file_problems(&config, &sources, &origin);

    if problems.has_errors() {
        problems.0.sort_by_key(|p| std::cmp::Reverse(p.severity));
        return Err(Error::Config(problems.0));
    }
    config.warnings = problems.0;
    Ok(config)
}

fn parse(src: &Source, problems: &mut Problems) -> Option<toml::Table> {
    match toml::from_str::<toml::Table>(&src.text) {
        Ok(t) => Some(t),
        Err(e) => {
            let line = e.span().map(|s| src.text[..s.start].matches('\n').count() + 1);
            problems.0.push(Problem {
                severity: Severity::Error,
                file: src.file.clone(),
                line,
                path: locate::render(&src.prefix),
                message: format!("invalid TOML: {}", e.message().trim()),
                hint: None,
            });
            None
        }
    }
}

/// Replace `${VAR}` (and `${VAR:-default}`) in every string; `$${` stands for a literal `${`.
fn expand_env(src: &Source, path: &mut Vec<Step>, table: &mut toml::Table, problems: &mut Problems) {
    for (k, v) in table.iter_mut() {
        path.push(key(k));
        expand_value(src, path, v, problems);
        path.pop();
    }
}

fn expand_value(src: &Source, path: &mut Vec<Step>, v: &mut toml::Value, problems: &mut Problems) {
    match v {
        toml::Value::String(s) => match expand_str(s) {
            Ok(expanded) => *s = expanded,
            Err(var) => problems.error(
                src,
                path,
                format!("environment variable `{var}` is not set"),
                Some(format!("export {var}=…, or write `${{{var}:-default}}`")),
            ),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Step::Index(i));
                expand_value(src, path, item, problems);
                path.pop();
            }
        }
        toml::Value::Table(t) => expand_env(src, path, t, problems),
        _ => {}
    }
}

/// Expand `${VAR}` references; the error is the name of a missing variable.
pub(super) fn expand_str(s: &str) -> std::result::Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix("${") {
            let Some(end) = inner.find('}') else {
                out.push_str(after);
                rest = "";
                break;
            };
            let expr = &inner[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            // an empty variable counts as unset when a default is given, as in the shell
            let value = std::env::var(name).ok().filter(|v| !(v.is_empty() && default.is_some()));
            match (value, default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(name.to_string()),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn section<T: DeserializeOwned>(
    src: &Source,
    root: &mut toml::Table,
    name: &str,
    problems: &mut Problems,
) -> Option<T> {
    let value = root.remove(name)?;
    deserialize(src, &[key(name)], value, problems)
}

fn deserialize<T: DeserializeOwned>(
    src: &Source,
    base: &[Step],
    value: toml::Value,
    problems: &mut Problems,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut path = base.to_vec();
            path.extend(locate::parse_path(&e.path().to_string()));
            // toml appends "in `key`" lines: the path already says where
            let full = e.into_inner().to_string();
            let message = full.lines().next().unwrap_or_default().trim().to_string();
            // unknown field: point at the offending key itself
            if let Some(field) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
                path.push(key(field));
            }
            problems.error(src, &path, message, None);
            None
        }
    }
}

/// Deserialize a target or job table: shared fields into `C`, the rest (with the tag) into `K`.
fn split_entry<C: DeserializeOwned, K: DeserializeOwned>(
    src: &Source,
    path: &[Step],
    value: toml::Value,
    tag: &str,
    problems: &mut Problems,
) -> Option<(C, K)> {
    let toml::Value::Table(table) = value else {
        problems.error(src, path, "must be a table", None);
        return None;
    };
    if !table.contains_key(tag) {
        problems.error(src, path, format!("missing `{tag}`"), None);
        return None;
    }
    let shared = struct_fields::<C>();
    let (common, own): (toml::Table, toml::Table) = table.into_iter().partition(|(k, _)| shared.contains(&k.as_str()));
    let c = deserialize::<C>(src, path, toml::Value::Table(common), problems);
    let k = deserialize::<K>(src, path, toml::Value::Table(own), problems);
    Some((c?, k?))
}

fn resolve_paths(config: &mut Config, base: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if let Some(p) = config.encryption.identity_file.as_mut() {
        fix(p)
    }
    if let Some(p) = config.encryption.chunk_key_file.as_mut() {
        fix(p)
    }
    for t in config.targets.values_mut() {
        let mut fix = fix;
        t.kind.settings_mut().resolve_paths(&mut fix);
    }
    for c in config.notify.values_mut() {
        c.url_file.iter_mut().chain(c.token_file.iter_mut()).for_each(fix);
    }
    for j in config.jobs.values_mut() {
        let mut fix = fix;
        j.spec.settings_mut().resolve_paths(&mut fix);
    }
}

/// `storage` left out of a job: `chunked` for the kinds that deduplicate well
/// ([`crate::jobs::Kind::chunked_by_default`]) when a chunk key is configured; otherwise it stays
/// unset, which is `stream` (validation warns when only the missing key keeps such a job from
/// deduplicating).
fn default_storage(config: &mut Config) {
    if config.encryption.chunk_key_file.is_none() {
        return;
    }
    for job in config.jobs.values_mut() {
        if job.common.storage.is_none() && job.spec.kind().chunked_by_default() {
            job.common.storage = Some(crate::jobs::Storage::Chunked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        // SAFETY: test-only, single-threaded use of a unique variable name
        unsafe { std::env::set_var("DRCTL_TEST_EXPAND", "v1") };
        assert_eq!(expand_str("a${DRCTL_TEST_EXPAND}b").unwrap(), "av1b");
        assert_eq!(expand_str("${DRCTL_TEST_UNSET_X:-dflt}").unwrap(), "dflt");
        assert_eq!(expand_str("$${literal}").unwrap(), "${literal}");
        assert_eq!(expand_str("cost $5").unwrap(), "cost $5");
        assert_eq!(expand_str("${DRCTL_TEST_UNSET_Y}").unwrap_err(), "DRCTL_TEST_UNSET_Y");
    }

    #[test]
    fn storage_left_out_is_chunked_for_trees_and_gitlab_with_a_chunk_key_object_lock_or_not() {
        let head = "[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
                    {key}[targets.local]\ntype = \"fs\"\npath = \"/tmp/x\"\n\
                    [targets.locked]\ntype = \"s3\"\nbucket = \"b\"\nregion = \"r\"\n\
                    object_lock = { mode = \"governance\", days = 1 }\n";
        let jobs = "[jobs.vol]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"/srv\"\n\
                    [jobs.kept]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"/srv\"\nstorage = \"stream\"\n\
                    [jobs.locked]\nkind = \"volume\"\ntargets = [\"locked\"]\npath = \"/srv\"\n\
                    [jobs.db]\nkind = \"redis\"\ntargets = [\"local\"]\nurl = \"redis://r:6379\"\n";
        let load = |key: &str| {
            let text = format!("{}{jobs}", head.replace("{key}", key));
            load_str(Path::new("/tmp/drctl.toml"), &text, Vec::new()).unwrap()
        };
        use crate::jobs::Storage::{Chunked, Stream};
        let c = load("chunk_key_file = \"/tmp/chunk.key\"\n");
        let got: Vec<_> = ["vol", "kept", "locked", "db"].iter().map(|j| c.jobs[*j].common.storage()).collect();
        // Object Lock targets too: reused packs get their locks extended (chunked::retain)
        assert_eq!(got, vec![Chunked, Stream, Chunked, Stream]);
        assert!(!c.warnings.iter().any(|w| w.message.contains("full copy")), "{:?}", c.warnings);
        // without the key: stream, and a warning for the jobs that would deduplicate (not the one
        // that says stream, nor the other kinds)
        let c = load("");
        assert!(c.jobs.values().all(|j| j.common.storage() == Stream));
        let warned: Vec<String> =
            c.warnings.iter().filter(|w| w.message.contains("full copy")).map(|w| w.path.clone()).collect();
        assert_eq!(warned, vec!["jobs.locked".to_string(), "jobs.vol".to_string()]);
    }
}
