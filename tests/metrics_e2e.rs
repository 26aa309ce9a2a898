//! End to end: `drctl run` pushes each job's metrics to a real Prometheus Pushgateway
//! (`scripts/services.sh start` runs one), and a PostgreSQL job is backed up for real.
//!
//! What the Pushgateway exposes on `/metrics` afterwards is what Prometheus would scrape: the job's
//! group (`job="drctl"`, `drctl_job="<job>"`) with the right values, groups that do not overwrite
//! each other, a failed run that keeps the earlier last-success time, and a Pushgateway that is
//! down or refuses the push costing a warning, never the backup or its exit code.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use common::*;

// ---------------------------------------------------------------- the Pushgateway over plain HTTP

fn pushgateway() -> String {
    endpoint("DRCTL_TEST_PUSHGATEWAY_URL")
}

/// `METHOD path` against the Pushgateway: (status, body).
fn http(method: &str, path: &str) -> (u16, String) {
    let url = url::Url::parse(&pushgateway()).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port_or_known_default().unwrap());
    let mut s = std::net::TcpStream::connect(&addr).unwrap_or_else(|e| {
        panic!("the Pushgateway at {addr} is not reachable ({e}): run `scripts/services.sh start`")
    });
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse the text exposition (`name{k="v",…} value`), skipping comments.
fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            r = r.trim_start_matches(',');
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after_key) = r.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after_key.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => {
                        let (_, e) = chars.next()?;
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                    (i, '"') => break i + 1,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.to_string(), value);
            r = &after_key[end..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name: line[..name_end].to_string(), labels, value })
}

/// What the Pushgateway holds for one drctl job.
struct Group {
    job: String,
    samples: Vec<Sample>,
}

impl Group {
    fn fetch(job: &str) -> Group {
        let (status, body) = http("GET", "/metrics");
        assert_eq!(status, 200, "{body}");
        let samples = parse(&body)
            .into_iter()
            .filter(|s| {
                s.labels.get("job").map(String::as_str) == Some("drctl")
                    && s.labels.get("drctl_job").map(String::as_str) == Some(job)
            })
            .collect();
        Group { job: job.to_string(), samples }
    }

    fn get(&self, name: &str, extra: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && extra.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .collect();
        assert!(found.len() <= 1, "several `{name}` samples for job `{}`: {found:?}", self.job);
        found.first().map(|s| s.value)
    }

    fn value(&self, name: &str) -> f64 {
        self.value_with(name, &[])
    }

    fn value_with(&self, name: &str, extra: &[(&str, &str)]) -> f64 {
        self.get(name, extra)
            .unwrap_or_else(|| panic!("no `{name}` {extra:?} for job `{}` in {:#?}", self.job, self.samples))
    }

    fn names(&self) -> Vec<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }
}

/// Deletes the job's group from the shared Pushgateway when the test ends (also on failure).
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for job in &self.0 {
            let _ = http("DELETE", &format!("/metrics/job/drctl/drctl_job/{job}"));
        }
    }
}

// ---------------------------------------------------------------- config

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The scratch head plus a second, offsite fs target `far` (so 3-2-1 can be met) and the
/// Pushgateway at `pgw`.
fn head(s: &Scratch, pgw: &str) -> String {
    format!(
        "{}[targets.far]\ntype = \"fs\"\npath = \"{}\"\nmedium = \"remote-disk\"\noffsite = true\n\n[pushgateway]\nurl = \"{pgw}\"\n\n",
        s.head(),
        s.path("far").display()
    )
}

fn job(name: &str, db: &str, targets: &[&str], extra: &str) -> String {
    let t: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!("[jobs.{name}]\nkind = \"postgres\"\ntargets = [{}]\nurl = \"{}\"\n{extra}\n", t.join(", "), pg_url(db))
}

/// A job whose server does not answer: every run fails.
fn failing_job(name: &str) -> String {
    format!(
        "[jobs.{name}]\nkind = \"postgres\"\ntargets = [\"local\", \"far\"]\nurl = \"postgres://postgres@127.0.0.1:1/none\"\n"
    )
}

fn no_push_warning(r: &Ran) {
    assert!(!r.stderr.contains("Pushgateway"), "the push worked: {r:?}");
}

// ---------------------------------------------------------------- tests

#[test]
fn run_pushes_the_jobs_whole_state() {
    let db = unique("mstate");
    create_sample_db(&db, 300);
    let name = unique("mstate");
    let _cleanup = Cleanup(vec![name.clone()]);
    let s = Scratch::new();
    s.write_config(&format!("{}{}", head(&s, &pushgateway()), job(&name, &db, &["local", "far"], "rpo = \"12h\"")));

    let before = now();
    let r = run(s.drctl().args(["run", &name]));
    let after = now();
    assert_eq!(r.code, 0, "{r:?}");
    no_push_warning(&r);

    let g = Group::fetch(&name);
    assert_eq!(g.value("drctl_backup_last_status"), 1.0);
    assert_eq!(g.value("drctl_backup_partial"), 0.0);
    let last = g.value("drctl_backup_last_success_timestamp_seconds");
    assert!(before - 1.0 <= last && last <= after + 1.0, "{before} <= {last} <= {after}");
    assert!(g.value("drctl_backup_duration_seconds") > 0.0);
    assert_eq!(g.value("drctl_backup_rpo_seconds"), 12.0 * 3600.0, "the job's own RPO");
    let source = g.value_with("drctl_backup_bytes", &[("stage", "source")]);
    let stored = g.value_with("drctl_backup_bytes", &[("stage", "stored")]);
    assert!(source > 0.0 && stored > 0.0, "{source} {stored}");
    assert_eq!(g.value_with("drctl_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    // live data + local + far; 2 media, far is offsite
    assert_eq!(g.value("drctl_copies"), 3.0);
    assert_eq!(g.value("drctl_rule_321_ok"), 1.0);
    // added by the Pushgateway: this push, and no failed one
    let pushed = g.value("push_time_seconds");
    assert!(before - 1.0 <= pushed && pushed <= after + 1.0, "{pushed}");
    assert_eq!(g.value("push_failure_time_seconds"), 0.0);
    // no drill yet; event counters are never pushed
    assert!(!g.names().iter().any(|n| n.starts_with("drctl_verify_") || n.ends_with("_total")), "{:?}", g.names());

    // the same numbers as `drctl list` and `drctl check` (one computation for 3-2-1)
    let list = run(s.drctl().args(["--json", "list", &name]));
    assert_eq!(list.code, 0, "{list:?}");
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["stored_bytes"].as_f64(), Some(stored));
    assert_eq!(list[0]["plaintext_bytes"].as_f64(), Some(source));
    let check = run(s.drctl().args(["--json", "check"]));
    let check: serde_json::Value = serde_json::from_str(&check.stdout).unwrap_or_else(|e| panic!("{e}: {check:?}"));
    let finding = check["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == format!("3-2-1 {name}").as_str())
        .unwrap_or_else(|| panic!("no 3-2-1 finding: {check}"));
    assert_eq!(finding["detail"]["copies"].as_f64(), Some(3.0), "{finding}");
    assert_eq!(finding["detail"]["rule_321_ok"], true, "{finding}");
    drop_db(&db);
}

#[test]
fn two_jobs_do_not_overwrite_each_other() {
    let db = unique("mtwo");
    create_sample_db(&db, 100);
    let (a, b) = (unique("mtwo_a"), unique("mtwo_b"));
    let _cleanup = Cleanup(vec![a.clone(), b.clone()]);
    let s = Scratch::new();
    s.write_config(&format!(
        "{}{}{}",
        head(&s, &pushgateway()),
        job(&a, &db, &["local", "far"], ""),
        job(&b, &db, &["local"], "")
    ));

    let r = run(s.drctl().args(["run", &a]));
    assert_eq!(r.code, 0, "{r:?}");
    let a1 = Group::fetch(&a);
    assert!(Group::fetch(&b).samples.is_empty(), "b has not run yet");

    let r = run(s.drctl().args(["run", &b]));
    assert_eq!(r.code, 0, "{r:?}");
    no_push_warning(&r);
    let (a2, b2) = (Group::fetch(&a), Group::fetch(&b));
    for n in ["drctl_backup_last_success_timestamp_seconds", "push_time_seconds", "drctl_copies"] {
        assert_eq!(a2.value(n), a1.value(n), "{n}: pushing b left a alone");
    }
    assert_eq!(a2.value("drctl_copies"), 3.0);
    assert_eq!(b2.value("drctl_copies"), 2.0, "b has one target");
    assert_eq!(b2.value("drctl_rule_321_ok"), 0.0);
    assert_eq!(b2.value("drctl_backup_last_status"), 1.0);

    // one process, two jobs: each gets its own group
    let r = run(s.drctl().args(["run", &a, &b]));
    assert_eq!(r.code, 0, "{r:?}");
    let (a3, b3) = (Group::fetch(&a), Group::fetch(&b));
    assert!(
        a3.value("drctl_backup_last_success_timestamp_seconds")
            > a2.value("drctl_backup_last_success_timestamp_seconds")
    );
    assert!(
        b3.value("drctl_backup_last_success_timestamp_seconds")
            > b2.value("drctl_backup_last_success_timestamp_seconds")
    );
    assert_eq!((a3.value("drctl_copies"), b3.value("drctl_copies")), (3.0, 2.0));
    drop_db(&db);
}

#[test]
fn a_failed_run_pushes_status_0_and_keeps_the_earlier_success() {
    let db = unique("mfail");
    create_sample_db(&db, 100);
    let name = unique("mfail");
    let _cleanup = Cleanup(vec![name.clone()]);
    let s = Scratch::new();
    let pgw = pushgateway();
    s.write_config(&format!("{}{}", head(&s, &pgw), job(&name, &db, &["local", "far"], "")));
    let r = run(s.drctl().args(["run", &name]));
    assert_eq!(r.code, 0, "{r:?}");
    let ok = Group::fetch(&name);

    // the same job, now against a server that does not answer
    s.write_config(&format!("{}{}", head(&s, &pgw), failing_job(&name)));
    let r = run(s.drctl().args(["run", &name]));
    assert_eq!(r.code, 1, "{r:?}");
    no_push_warning(&r);
    let failed = Group::fetch(&name);
    assert_eq!(failed.value("drctl_backup_last_status"), 0.0);
    assert_eq!(failed.value("drctl_backup_partial"), 0.0, "failed, not partial");
    assert!(failed.value("push_time_seconds") > ok.value("push_time_seconds"), "pushed again");
    // what the catalog still knows: the earlier backup, its size and copies
    for n in ["drctl_backup_last_success_timestamp_seconds", "drctl_backup_duration_seconds", "drctl_copies"] {
        assert_eq!(failed.value(n), ok.value(n), "{n}");
    }
    assert_eq!(
        failed.value_with("drctl_backup_bytes", &[("stage", "stored")]),
        ok.value_with("drctl_backup_bytes", &[("stage", "stored")])
    );
    drop_db(&db);
}

#[test]
fn a_job_that_never_succeeded_has_no_last_success() {
    let name = unique("mnever");
    let _cleanup = Cleanup(vec![name.clone()]);
    let s = Scratch::new();
    s.write_config(&format!("{}{}", head(&s, &pushgateway()), failing_job(&name)));
    let r = run(s.drctl().args(["run", &name]));
    assert_eq!(r.code, 1, "{r:?}");
    let g = Group::fetch(&name);
    assert_eq!(g.value("drctl_backup_last_status"), 0.0);
    assert_eq!(g.value("drctl_backup_rpo_seconds"), 26.0 * 3600.0, "the default RPO");
    assert_eq!(g.value("drctl_copies"), 1.0, "the live data only");
    assert_eq!(g.value("drctl_rule_321_ok"), 0.0);
    for n in ["drctl_backup_last_success_timestamp_seconds", "drctl_backup_duration_seconds", "drctl_backup_bytes"] {
        assert_eq!(g.get(n, &[]), None, "{n}");
    }
}

#[test]
fn a_partial_run_is_status_0_and_partial_1() {
    let db = unique("mpart");
    create_sample_db(&db, 100);
    let name = unique("mpart");
    let _cleanup = Cleanup(vec![name.clone()]);
    let s = Scratch::new();
    // `far` lives below a regular file: nothing can be written there
    std::fs::write(s.path("blocker"), "not a directory").unwrap();
    let config = head(&s, &pushgateway()).replace(
        &format!("path = \"{}\"", s.path("far").display()),
        &format!("path = \"{}\"", s.path("blocker/far").display()),
    );
    s.write_config(&format!("{config}{}", job(&name, &db, &["local", "far"], "")));
    let r = run(s.drctl().args(["run", &name]));
    assert_eq!(r.code, 3, "{r:?}");
    no_push_warning(&r);
    let g = Group::fetch(&name);
    assert_eq!(g.value("drctl_backup_last_status"), 0.0);
    assert_eq!(g.value("drctl_backup_partial"), 1.0);
    // stored on `local` only: no backup is complete yet, but the partial one counts for copies
    assert_eq!(g.get("drctl_backup_last_success_timestamp_seconds", &[]), None);
    assert!(g.value_with("drctl_backup_bytes", &[("stage", "stored")]) > 0.0);
    assert_eq!(g.value("drctl_copies"), 2.0);
    assert_eq!(g.value("drctl_rule_321_ok"), 0.0);
    drop_db(&db);
}

#[test]
fn an_unreachable_pushgateway_is_a_warning_not_a_failure() {
    let db = unique("mdown");
    create_sample_db(&db, 100);
    let (good, bad) = (unique("mdown_good"), unique("mdown_bad"));
    // a port nobody listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = Scratch::new();
    let jobs = format!("{}{}", job(&good, &db, &["local", "far"], ""), failing_job(&bad));
    s.write_config(&format!("{}{jobs}", head(&s, &format!("http://127.0.0.1:{port}"))));

    let r = run(s.drctl().args(["run", &good]));
    assert_eq!(r.code, 0, "a backup that worked is a success: {r:?}");
    assert!(r.stdout.trim().len() > 10, "the backup id is printed: {r:?}");
    assert!(
        r.stderr.contains(&format!(
            "warning: metrics of job `{good}`: no answer from the Pushgateway at http://127.0.0.1:{port}"
        )),
        "{r:?}"
    );
    assert!(r.stderr.contains("hint:") && r.stderr.contains("the backup itself is not affected"), "{r:?}");
    let list = run(s.drctl().args(["--json", "list", &good]));
    assert!(list.stdout.contains("\"status\": \"ok\""), "{list:?}");

    // the exit code stays the runs' own: 1 when a job failed, with a warning per job
    let r = run(s.drctl().args(["--json", "run", &good, &bad]));
    assert_eq!(r.code, 1, "{r:?}");
    let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(out.as_array().map(Vec::len), Some(2), "stdout stays pure JSON: {r:?}");
    for j in [&good, &bad] {
        assert!(r.stderr.contains(&format!("warning: metrics of job `{j}`")), "{r:?}");
    }

    // a Pushgateway that answers but refuses (here: 404 below a path it does not serve)
    s.write_config(&format!("{}{jobs}", head(&s, &format!("{}/no-such-prefix", pushgateway()))));
    let r = run(s.drctl().args(["run", &good]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("warning: metrics of job `{good}`: the Pushgateway at")), "{r:?}");
    assert!(r.stderr.contains("refused the push: HTTP 404"), "{r:?}");
    assert!(Group::fetch(&good).samples.is_empty(), "nothing reached the real group");
    drop_db(&db);
}

/// The scheduler as the API sees it, for a test without a daemon: nothing scheduled or running.
struct Idle;

impl drctl::api::Control for Idle {
    fn run_now(&self, job: &str) -> Result<drctl::api::Accepted, drctl::api::ControlError> {
        Ok(drctl::api::Accepted::backup(job))
    }
    fn verify_now(&self, job: &str) -> Result<drctl::api::Accepted, drctl::api::ControlError> {
        Ok(drctl::api::Accepted::verify(job))
    }
    fn next_run(&self, _job: &str) -> Option<jiff::Timestamp> {
        None
    }
    fn running(&self, _job: &str) -> bool {
        false
    }
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// `GET /api/v1/jobs` of the API served over `config` (as the daemon serves it): the row of `job`.
fn api_row(config: &std::path::Path, job: &str) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let config = std::sync::Arc::new(drctl::config::load(config).unwrap());
        let engine = drctl::engine::Engine::new((*config).clone());
        let catalog = engine.catalog().await.unwrap();
        let state =
            drctl::api::ApiState::new(config, catalog, std::sync::Arc::new(String::new), std::sync::Arc::new(Idle))
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(drctl::api::serve_on(listener, state, shutdown.clone()));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::get(format!("{base}/api/v1/jobs")).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        shutdown.cancel();
        let _ = server.await;
        body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == job)
            .cloned()
            .unwrap_or_else(|| panic!("no `{job}` in {body:#}"))
    })
}

#[test]
fn an_emptied_volume_is_flagged_suspicious_in_the_metrics_and_the_api() {
    let name = unique("msusp");
    let _cleanup = Cleanup(vec![name.clone()]);
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.txt"), "suspicious?\n".repeat(2000)).unwrap();
    std::fs::write(data.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    s.write_config(&format!(
        "{}[jobs.{name}]\nkind = \"volume\"\ntargets = [\"local\", \"far\"]\npath = \"{}\"\n",
        head(&s, &pushgateway()),
        data.display()
    ));

    // a good backup: not suspicious, and the row is green
    let r = run(s.drctl().args(["--json", "run", &name]));
    assert_eq!(r.code, 0, "{r:?}");
    no_push_warning(&r);
    let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert!(out[0]["suspicious"].is_null(), "{out:#}");
    assert_eq!(Group::fetch(&name).value("drctl_backup_suspicious"), 0.0);
    let row = api_row(&s.config_path(), &name);
    assert_eq!((row["health"].as_str(), row["suspicious"].as_str()), (Some("green"), None), "{row:#}");

    // the volume emptied: the backup is committed (exit 0) but flagged, the same night
    std::fs::remove_dir_all(data.join("sub")).unwrap();
    std::fs::remove_file(data.join("a.txt")).unwrap();
    let r = run(s.drctl().args(["--json", "run", &name]));
    assert_eq!(r.code, 0, "a suspicious backup is still a backup: {r:?}");
    let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    let reason = out[0]["suspicious"].as_str().unwrap_or_else(|| panic!("no reason in {out:#}")).to_string();
    assert!(reason.contains("empty"), "{reason}");
    let g = Group::fetch(&name);
    assert_eq!(g.value("drctl_backup_suspicious"), 1.0, "{:#?}", g.samples);
    assert_eq!(g.value("drctl_backup_last_status"), 1.0, "committed on every target");
    let row = api_row(&s.config_path(), &name);
    assert_eq!(row["health"], "amber", "{row:#}");
    assert_eq!(row["suspicious"].as_str(), Some(reason.as_str()), "{row:#}");
    let reasons: Vec<&str> = row["reasons"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("suspicious") && r.contains(&reason)), "{reasons:?}");

    // without --json the run says so on stderr, with what to do
    let r = run(s.drctl().args(["run", &name]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("is committed but suspicious: empty"), "{r:?}");
    assert!(r.stderr.contains(&format!("`drctl verify {name}`")), "{r:?}");

    // the data is back: the next backup looks right, the gauge drops to 0 and the row is green
    std::fs::write(data.join("a.txt"), "suspicious?\n".repeat(2000)).unwrap();
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    let r = run(s.drctl().args(["run", &name]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("suspicious"), "{r:?}");
    assert_eq!(Group::fetch(&name).value("drctl_backup_suspicious"), 0.0);
    assert_eq!(api_row(&s.config_path(), &name)["health"], "green");
}

#[test]
fn a_backup_push_keeps_the_drill_gauges_and_the_api_shows_the_drill() {
    // `drctl run` replaces the job's Pushgateway group: the drill state must come with it (from the
    // catalog), or VerifyMissing would fire after every backup
    let name = unique("mdrill");
    let _cleanup = Cleanup(vec![name.clone()]);
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "drilled\n".repeat(500)).unwrap();
    s.write_config(&format!(
        "{}[jobs.{name}]\nkind = \"volume\"\ntargets = [\"local\", \"far\"]\npath = \"{}\"\n",
        head(&s, &pushgateway()),
        data.display()
    ));
    assert_eq!(run(s.drctl().args(["run", &name])).code, 0);
    let before = now();
    let r = run(s.drctl().args(["verify", &name]));
    assert_eq!(r.code, 0, "{r:?}");
    let drilled = Group::fetch(&name).value("drctl_verify_last_success_timestamp_seconds");
    assert!(drilled >= before - 1.0, "{drilled}");

    let r = run(s.drctl().args(["run", &name]));
    assert_eq!(r.code, 0, "{r:?}");
    let g = Group::fetch(&name);
    assert_eq!(g.value("drctl_verify_last_status"), 1.0, "{:#?}", g.samples);
    assert_eq!(g.value("drctl_verify_last_success_timestamp_seconds"), drilled, "the drill's time, kept");
    assert!(g.value("drctl_verify_duration_seconds") > 0.0);

    let row = api_row(&s.config_path(), &name);
    assert_eq!(row["drill"]["last_passed"], true, "{row:#}");
    assert_eq!(row["health"], "green", "{row:#}");
}
