//! End to end: the HTTP API (`drctl::api::router`) served on 127.0.0.1 over a real catalog that
//! real `drctl run`s of volume jobs filled (fs targets), with a recording stand-in for the
//! scheduler ([`TestControl`]: the daemon implements the same [`Control`] trait). Every endpoint,
//! its status codes and JSON error codes; bearer auth (401, 403 without a token file); 404, 405,
//! 409, 503; and no configured secret in any response.
//!
//! `Fixture::serve` takes the config path and a `Control`, so a test against a running
//! `drctl daemon` only has to replace it with the daemon's address ([`Http`] works on any base URL).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use drctl::api::{Accepted, ApiState, Control, ControlError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "api-token-0123456789abcdef-do-not-leak";
const DAV_PASSWORD: &str = "webdav-pa55word-never-shown";
const REDIS_PASSWORD: &str = "redis-pa55word-never-shown";
const NEXT_RUN: &str = "2030-01-02T03:04:00Z";

/// The scheduler, as the API sees it: records what it was asked, answers like the daemon.
#[derive(Default)]
struct TestControl {
    jobs: Vec<String>,
    calls: Mutex<Vec<(String, &'static str)>>,
    running: Mutex<HashSet<String>>,
    shutting_down: AtomicBool,
    not_ready: Mutex<Option<String>>,
}

impl TestControl {
    fn queue(&self, job: &str, accepted: Accepted) -> Result<Accepted, ControlError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ControlError::ShuttingDown);
        }
        if !self.jobs.iter().any(|j| j == job) {
            return Err(ControlError::UnknownJob);
        }
        if !self.running.lock().unwrap().insert(job.to_string()) {
            return Err(ControlError::AlreadyRunning);
        }
        self.calls.lock().unwrap().push((job.to_string(), accepted.kind));
        Ok(accepted)
    }
}

impl Control for TestControl {
    fn run_now(&self, job: &str) -> Result<Accepted, ControlError> {
        self.queue(job, Accepted::backup(job))
    }
    fn verify_now(&self, job: &str) -> Result<Accepted, ControlError> {
        self.queue(job, Accepted::verify(job))
    }
    fn next_run(&self, job: &str) -> Option<jiff::Timestamp> {
        (job == "good").then(|| NEXT_RUN.parse().unwrap())
    }
    fn running(&self, job: &str) -> bool {
        self.running.lock().unwrap().contains(job)
    }
    fn ready(&self) -> Result<(), String> {
        match self.not_ready.lock().unwrap().clone() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// A scratch config with four jobs and real backups:
/// - `good`: volume job on `local` (disk) and `offsite` (usb, offsite): 3-2-1 met → green
/// - `single`: volume job on `local` only: 3-2-1 broken → amber
/// - `broken`: volume job whose `before` hook fails: its last run failed → red
/// - `cache`: a redis job that never ran → red
///
/// plus secrets the API must never show: a WebDAV target's password, a password in the redis
/// URL, and the API token.
struct Fixture {
    scratch: Scratch,
    ids: std::collections::BTreeMap<String, Vec<String>>,
}

impl Fixture {
    fn new(with_token: bool) -> Fixture {
        let s = Scratch::new();
        let data = s.path("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a.txt"), "hello api\n".repeat(100)).unwrap();
        std::fs::write(data.join("sub/b.bin"), vec![7u8; 50_000]).unwrap();
        std::fs::write(s.path("api_token"), format!("{TOKEN}\n")).unwrap();
        let api = if with_token {
            format!("[api]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\n", s.path("api_token").display())
        } else {
            "[api]\nlisten = \"127.0.0.1:0\"\n\n".to_string()
        };
        let config = format!(
            "{head}{api}\
             [targets.offsite]\ntype = \"fs\"\npath = \"{offsite}\"\nmedium = \"usb\"\noffsite = true\n\n\
             [targets.dav]\ntype = \"webdav\"\nurl = \"http://127.0.0.1:9/dav\"\nuser = \"u1\"\npassword = \"{DAV_PASSWORD}\"\n\n\
             [jobs.good]\nkind = \"volume\"\ntargets = [\"local\", \"offsite\"]\npath = \"{data}\"\nschedule = \"*/5 * * * *\"\nrpo = \"1h\"\n\
             verify = {{ schedule = \"0 6 * * *\" }}\n\n\
             [jobs.single]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{data}\"\n\n\
             [jobs.broken]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{data}\"\nbefore = [\"echo cannot pause the app >&2; exit 1\"]\n\n\
             [jobs.cache]\nkind = \"redis\"\ntargets = [\"local\"]\nurl = \"redis://:{REDIS_PASSWORD}@127.0.0.1:9\"\n",
            head = s.head(),
            offsite = s.path("offsite").display(),
            data = data.display(),
        );
        s.write_config(&config);
        let mut ids = std::collections::BTreeMap::<String, Vec<String>>::new();
        for job in ["good", "single", "good"] {
            let r = run(s.drctl().args(["run", job]));
            assert_eq!(r.code, 0, "drctl run {job}: {r:?}");
            ids.entry(job.to_string()).or_default().push(r.stdout.trim().to_string());
        }
        let r = run(s.drctl().args(["run", "broken"]));
        assert_eq!(r.code, 1, "the `before` hook fails the run: {r:?}");
        Fixture { scratch: s, ids }
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.scratch.config_path()
    }

    fn control(&self) -> Arc<TestControl> {
        Arc::new(TestControl {
            jobs: ["good", "single", "broken", "cache"].map(String::from).to_vec(),
            ..TestControl::default()
        })
    }

    /// Serve the API for this config on 127.0.0.1:0; returns the base URL and the shutdown token.
    async fn serve(&self, control: Arc<dyn Control>) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
        serve(&self.config_path(), control).await.unwrap()
    }
}

/// Build the API state the way the daemon does (config, catalog, metrics from the catalog, the
/// token from `[api] token_file`) and serve it on 127.0.0.1:0.
async fn serve(
    config_path: &Path,
    control: Arc<dyn Control>,
) -> drctl::Result<(String, CancellationToken, tokio::task::JoinHandle<()>)> {
    let config = Arc::new(drctl::config::load(config_path)?);
    let engine = drctl::engine::Engine::new((*config).clone());
    let catalog = engine.catalog().await?;
    let metrics = Arc::new(drctl::metrics::Metrics::new());
    let outcomes: Vec<_> = config
        .jobs
        .keys()
        .map(|j| drctl::metrics::RunOutcome {
            job: j.clone(),
            result: drctl::metrics::RunResult::Ok,
            report: None,
            finished_at: jiff::Timestamp::now(),
        })
        .collect();
    for state in drctl::metrics::job_states(&engine, &outcomes).await {
        metrics.set_job(&state);
    }
    let state = ApiState::new(config, catalog, Arc::new(move || metrics.encode()), control)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { drctl::api::serve_on(listener, state, token).await.unwrap() });
    Ok((base, shutdown, task))
}

/// A response as the tests look at it.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    }
    /// Asserts `{"error": {"code": code, "message": …}}` with this status.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{self:?}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{self:?}");
        assert!(self.header("content-type").starts_with("application/json"), "{self:?}");
    }
}

/// A small HTTP client on a base URL that keeps every response (for the secrets check).
struct Http {
    base: String,
    client: reqwest::Client,
    seen: Mutex<Vec<String>>,
}

impl Http {
    fn new(base: &str) -> Http {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http { base: base.to_string(), client: reqwest::Client::new(), seen: Mutex::new(Vec::new()) }
    }

    async fn send(&self, method: reqwest::Method, path: &str, auth: Option<&str>) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        self.seen.lock().unwrap().push(format!("{path} {status} {headers:?}\n{body}"));
        Resp { status, headers, body }
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, auth: Option<&str>) -> Resp {
        self.send(reqwest::Method::POST, path, auth).await
    }

    /// Fails when any response so far contained one of `secrets`.
    fn assert_no_secrets(&self, secrets: &[&str]) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty());
        for resp in seen.iter() {
            for s in secrets {
                assert!(!resp.contains(s), "a response contains the secret `{s}`:\n{resp}");
            }
        }
    }
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let fx = Fixture::new(true);
    let control = fx.control();
    let (base, shutdown, task) = fx.serve(control.clone()).await;
    let http = Http::new(&base);

    let r = http.get("/healthz").await;
    assert_eq!((r.status, r.body.trim()), (200, "ok"), "{r:?}");
    let r = http.get("/readyz").await;
    assert_eq!(r.status, 200, "{r:?}");

    *control.not_ready.lock().unwrap() = Some("catalog unreachable: database is locked".into());
    let r = http.get("/readyz").await;
    r.assert_error(503, "not_ready");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("catalog unreachable"), "{r:?}");
    let r = http.get("/healthz").await;
    assert_eq!(r.status, 200, "healthz stays 200 while not ready: {r:?}");
    *control.not_ready.lock().unwrap() = None;

    let r = http.get("/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(r.body.trim_end().ends_with("# EOF"), "{}", r.body);
    for needle in [
        "drctl_backup_last_status{drctl_job=\"good\"} 1",
        "drctl_copies{drctl_job=\"good\"} 3",
        "drctl_rule_321_ok{drctl_job=\"good\"} 1",
        "drctl_rule_321_ok{drctl_job=\"single\"} 0",
        "drctl_backup_last_success_timestamp_seconds{drctl_job=\"good\"}",
    ] {
        assert!(r.body.contains(needle), "/metrics lacks `{needle}`:\n{}", r.body);
    }

    // graceful shutdown: the server task ends when the token is cancelled
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), task).await.expect("serve ends on cancel").unwrap();
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err(), "nothing listens after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_backups_come_from_the_catalog() {
    let fx = Fixture::new(true);
    let (base, _shutdown, _task) = fx.serve(fx.control()).await;
    let http = Http::new(&base);

    let r = http.get("/api/v1/jobs").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").starts_with("application/json"));
    let v = r.json();
    let jobs = v["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["broken", "cache", "good", "single"], "every configured job, by name");
    let job = |n: &str| jobs.iter().find(|j| j["name"] == n).unwrap().clone();

    let good = job("good");
    assert_eq!(good["kind"], "volume");
    assert_eq!(good["schedule"], "*/5 * * * *");
    assert_eq!(good["targets"], serde_json::json!(["local", "offsite"]));
    assert_eq!(good["rpo_seconds"], 3600);
    assert_eq!(good["running"], false);
    assert_eq!(good["next_run"], NEXT_RUN);
    let newest_good = fx.ids["good"].last().unwrap();
    assert_eq!(good["last_backup"]["id"], newest_good.as_str());
    assert_eq!(good["last_backup"]["status"], "ok");
    assert_eq!(good["last_backup"]["targets"], serde_json::json!(["local", "offsite"]));
    assert!(good["last_success"]["age_seconds"].as_i64().unwrap() < 600, "{good}");
    assert!(good["last_success"]["finished_at"].as_str().unwrap().ends_with('Z'), "{good}");
    assert_eq!(good["size"]["source_bytes"], good["last_backup"]["plaintext_bytes"]);
    assert!(good["size"]["stored_bytes"].as_u64().unwrap() > 0);
    assert_eq!(good["copies"], 3);
    assert_eq!(good["rule_321_ok"], true);
    assert_eq!(good["health"], "green", "{good}");
    assert_eq!(good["reasons"], serde_json::json!([]));
    // no drill has run: the fields are there, empty
    let drill = &good["drill"];
    assert_eq!(drill["schedule"], "0 6 * * *");
    for k in ["last_passed", "last_success", "last_success_age_seconds", "duration_seconds"] {
        assert!(drill.get(k).is_some_and(Value::is_null), "drill.{k} present and null: {drill}");
    }

    let single = job("single");
    assert_eq!((single["copies"].as_u64(), single["rule_321_ok"].as_bool()), (Some(2), Some(false)));
    assert_eq!(single["health"], "amber", "{single}");
    assert!(single["reasons"][0].as_str().unwrap().contains("3-2-1"), "{single}");
    assert_eq!(single["next_run"], Value::Null);

    let broken = job("broken");
    assert_eq!(broken["health"], "red", "{broken}");
    assert_eq!(broken["last_backup"]["status"], "failed");
    assert_eq!(broken["last_success"], Value::Null);
    assert_eq!(broken["size"], Value::Null);
    assert!(broken["reasons"].to_string().contains("the last backup failed"), "{broken}");

    let cache = job("cache");
    assert_eq!((cache["kind"].as_str(), cache["health"].as_str()), (Some("redis"), Some("red")));
    assert_eq!(cache["last_backup"], Value::Null);
    assert!(cache["reasons"][0].as_str().unwrap().contains("no backup yet"), "{cache}");

    // backups: newest first, exactly what `drctl list --json good` prints
    let r = http.get("/api/v1/jobs/good/backups").await;
    assert_eq!(r.status, 200, "{r:?}");
    let api: Value = r.json();
    let cli = run(fx.scratch.drctl().args(["--json", "list", "good"]));
    assert_eq!(cli.code, 0, "{cli:?}");
    let cli: Value = serde_json::from_str(&cli.stdout).unwrap();
    assert_eq!(api, cli, "same JSON as `drctl list --json`");
    let ids: Vec<&str> = api.as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = fx.ids["good"].iter().map(String::as_str).collect();
    want.reverse();
    assert_eq!(ids, want, "newest first");

    let r = http.get("/api/v1/jobs/broken/backups").await;
    let failed = r.json();
    assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed[0]["status"], "failed");
    assert!(failed[0]["error"].as_str().unwrap().contains("before"), "{failed}");

    let r = http.get("/api/v1/jobs/cache/backups").await;
    assert_eq!((r.status, r.json()), (200, serde_json::json!([])));
    http.get("/api/v1/jobs/nope/backups").await.assert_error(404, "unknown_job");
    http.get("/api/v1/nothing").await.assert_error(404, "not_found");
    http.post("/api/v1/jobs", Some(&bearer())).await.assert_error(405, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_verify_need_the_bearer_token() {
    let fx = Fixture::new(true);
    let control = fx.control();
    let (base, _shutdown, _task) = fx.serve(control.clone()).await;
    let http = Http::new(&base);

    // no token, a wrong one, a prefix of the right one, another scheme: 401 with a challenge
    for auth in [None, Some("Bearer wrong"), Some("Bearer api-token-0123"), Some("Basic YWRtaW46YWRtaW4=")] {
        for path in ["/api/v1/jobs/good/run", "/api/v1/jobs/good/verify", "/api/v1/jobs/nope/run"] {
            let r = http.post(path, auth).await;
            r.assert_error(401, "unauthorized");
            assert!(r.header("www-authenticate").starts_with("Bearer"), "{r:?}");
        }
    }
    assert!(control.calls.lock().unwrap().is_empty(), "nothing queued without the token");

    let r = http.post("/api/v1/jobs/good/run", Some(&bearer())).await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json(), serde_json::json!({"job": "good", "kind": "backup"}));
    let r = http.post("/api/v1/jobs/good/run", Some(&bearer())).await;
    r.assert_error(409, "already_running");
    let r = http.post("/api/v1/jobs/good/verify", Some(&bearer())).await;
    r.assert_error(409, "already_running");

    // the jobs list shows the run in progress
    let jobs = http.get("/api/v1/jobs").await.json();
    let good = jobs["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "good").unwrap().clone();
    assert_eq!(good["running"], true);

    let r = http.post("/api/v1/jobs/single/verify", Some(&bearer())).await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json(), serde_json::json!({"job": "single", "kind": "verify"}));

    http.post("/api/v1/jobs/nope/run", Some(&bearer())).await.assert_error(404, "unknown_job");
    http.post("/api/v1/jobs/nope/verify", Some(&bearer())).await.assert_error(404, "unknown_job");
    http.get("/api/v1/jobs/good/run").await.assert_error(405, "method_not_allowed");

    control.shutting_down.store(true, Ordering::SeqCst);
    http.post("/api/v1/jobs/broken/run", Some(&bearer())).await.assert_error(503, "shutting_down");

    assert_eq!(
        *control.calls.lock().unwrap(),
        vec![("good".to_string(), "backup"), ("single".to_string(), "verify")],
        "exactly the accepted requests reached the scheduler"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_post_is_disabled() {
    let fx = Fixture::new(false);
    let control = fx.control();
    let (base, _shutdown, _task) = fx.serve(control.clone()).await;
    let http = Http::new(&base);
    for auth in [None, Some(bearer()), Some("Bearer ".to_string())] {
        for path in ["/api/v1/jobs/good/run", "/api/v1/jobs/good/verify"] {
            http.post(path, auth.as_deref()).await.assert_error(403, "token_not_configured");
        }
    }
    assert!(control.calls.lock().unwrap().is_empty());
    // the read-only endpoints still work
    assert_eq!(http.get("/api/v1/jobs").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_token_file_is_a_configuration_error() {
    let fx = Fixture::new(true);
    std::fs::write(fx.scratch.path("api_token"), "\n").unwrap();
    let err = serve(&fx.config_path(), fx.control()).await.expect_err("an empty token is refused");
    let text = err.to_string();
    assert_eq!(err.exit_code(), 2, "{text}");
    assert!(format!("{err:?}").contains("api.token_file"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_response() {
    let fx = Fixture::new(true);
    let control = fx.control();
    let (base, _shutdown, _task) = fx.serve(control.clone()).await;
    let http = Http::new(&base);
    for path in [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/jobs",
        "/api/v1/jobs/good/backups",
        "/api/v1/jobs/broken/backups",
        "/api/v1/jobs/cache/backups",
        "/api/v1/jobs/nope/backups",
        "/nope",
    ] {
        http.get(path).await;
    }
    for auth in [None, Some("Bearer wrong".to_string()), Some(bearer())] {
        for path in ["/api/v1/jobs/good/run", "/api/v1/jobs/cache/verify", "/api/v1/jobs/nope/run"] {
            http.post(path, auth.as_deref()).await;
        }
    }
    *control.not_ready.lock().unwrap() = Some("not yet".into());
    http.get("/readyz").await;
    http.get("/").await;
    http.assert_no_secrets(&[TOKEN, DAV_PASSWORD, REDIS_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_over_plain_http() {
    let fx = Fixture::new(true);
    let (base, _shutdown, _task) = fx.serve(fx.control()).await;
    let http = Http::new(&base);
    let r = http.get("/").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    assert!(r.header("content-security-policy").contains("default-src 'none'"), "{r:?}");
    let html = &r.body;
    for (job, health) in [("good", "green"), ("single", "amber"), ("broken", "red"), ("cache", "red")] {
        let row = format!("<tr class=\"job {health}\" id=\"job-{job}\" data-job=\"{job}\" data-health=\"{health}\">");
        assert!(html.contains(&row), "no row `{row}` in:\n{html}");
    }
    assert!(!html.contains("<script"), "no script on the page");
    assert!(!html.contains("http://") && !html.contains("https://"), "no external assets:\n{html}");
    assert!(html.contains("2030-01-02 03:04 UTC"), "next run of `good`:\n{html}");
    assert!(html.contains(fx.ids["good"].last().unwrap()), "newest backup id of `good`");
}
