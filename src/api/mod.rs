//! The daemon's HTTP API (axum): health, readiness, `/metrics`, a JSON API over the jobs and
//! their backups, two POST endpoints that queue work, and a status page at `/`.
//!
//! This module is a thin adapter (STYLE 1): it reads the catalog and asks the scheduler, it never
//! runs a backup itself. The scheduler is behind the [`Control`] trait, so the API is built and
//! tested without a daemon, and the daemon (`src/cli/daemon.rs`, `src/scheduler/`) only has to
//! implement five methods and call [`serve`].
//!
//! # Contract with the daemon
//!
//! ```text
//! let state = ApiState::new(config, catalog, metrics, control)?;   // reads `[api] token_file`
//! api::serve(&api::listen_addr(&state.config), state, shutdown_token).await?;
//! ```
//!
//! - [`Control::run_now`] / [`Control::verify_now`] queue a run and return at once; the POST
//!   endpoints answer 202 with the [`Accepted`] JSON, or 404/409/503 for the [`ControlError`]s.
//! - [`Control::next_run`] and [`Control::running`] feed `GET /api/v1/jobs` and the page.
//! - [`Control::ready`] is `/readyz`; it is called on every probe and must not block: cache the
//!   result of the last catalog check.
//! - [`serve`] returns when `shutdown` is cancelled, after in-flight requests finish (graceful);
//!   [`serve_on`] does the same on a listener the caller bound (tests bind `127.0.0.1:0`).
//!
//! # Endpoints
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 `ok` while the process serves |
//! | `GET /readyz` | 200 when [`Control::ready`] is Ok, else 503 `not_ready` with the reason |
//! | `GET /metrics` | OpenMetrics text (the `metrics` closure, e.g. [`crate::metrics::Metrics::encode`]) |
//! | `GET /api/v1/jobs` | every job with its last backup, 3-2-1, drill, next run and health ([`jobs::JobSummary`]) |
//! | `GET /api/v1/jobs/{job}/backups` | the catalog's entries, newest first, as `drctl list --json` |
//! | `POST /api/v1/jobs/{job}/run` | 202 [`Accepted`]; needs `Authorization: Bearer TOKEN` |
//! | `POST /api/v1/jobs/{job}/verify` | 202 [`Accepted`]; needs `Authorization: Bearer TOKEN` |
//! | `GET /` | the status page (server-rendered HTML, no scripts, no external assets) |
//!
//! Every error is JSON `{"error": {"code": "…", "message": "…"}}` with a stable code
//! ([`error::ApiError`]). POST needs the token from `[api] token_file` (compared in constant
//! time); without a configured token the POST endpoints are disabled (403
//! `token_not_configured`), never open. Every response body passes through
//! [`crate::redact::scrub`]; config secrets are never serialized in the first place.

mod auth;
mod error;
pub mod jobs;
mod page;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::redact::Secret;

/// Default `[api] listen`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// What the API needs from the scheduler. Implemented by the daemon; tests use a recording double.
pub trait Control: Send + Sync + 'static {
    /// Queue a backup of `job` now, as the scheduler would.
    ///
    /// # Errors
    /// [`ControlError::UnknownJob`], [`ControlError::AlreadyRunning`] (a run of `job` is going or
    /// queued), [`ControlError::ShuttingDown`].
    fn run_now(&self, job: &str) -> Result<Accepted, ControlError>;
    /// Queue a restore drill (`drctl verify`) of `job` now. Errors as [`Control::run_now`].
    fn verify_now(&self, job: &str) -> Result<Accepted, ControlError>;
    /// Next scheduled backup of `job` (None: no schedule, or not scheduled by this daemon).
    fn next_run(&self, job: &str) -> Option<jiff::Timestamp>;
    /// Whether a run (backup or drill) of `job` is in progress.
    fn running(&self, job: &str) -> bool;
    /// Ready to serve (catalog reachable etc.); `Err(reason)` otherwise. Must not block: cache it.
    fn ready(&self) -> Result<(), String>;
}

/// A run queued by a POST: the 202 body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub job: String,
    /// `backup` or `verify`.
    pub kind: &'static str,
}

impl Accepted {
    pub fn backup(job: &str) -> Accepted {
        Accepted { job: job.to_string(), kind: "backup" }
    }
    pub fn verify(job: &str) -> Accepted {
        Accepted { job: job.to_string(), kind: "verify" }
    }
}

/// Why the scheduler refused to queue a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such job in the configuration (404 `unknown_job`).
    #[error("unknown job")]
    UnknownJob,
    /// A run of the job is in progress or queued (409 `already_running`).
    #[error("a run of the job is already in progress")]
    AlreadyRunning,
    /// The daemon is stopping and takes no new runs (503 `shutting_down`).
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// Renders the `/metrics` body.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Everything the handlers read. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub config: Arc<Config>,
    /// The catalog (shared with the scheduler; a SQLite pool inside).
    pub catalog: Arc<Catalog>,
    /// Renders `/metrics` (OpenMetrics text).
    pub metrics: MetricsFn,
    pub control: Arc<dyn Control>,
    /// The bearer token for POST; `None` disables the POST endpoints.
    pub token: Option<Secret>,
}

impl ApiState {
    /// State with the token read from `[api] token_file` ([`load_token`]).
    ///
    /// # Errors
    /// As [`load_token`].
    pub fn new(
        config: Arc<Config>,
        catalog: Arc<Catalog>,
        metrics: MetricsFn,
        control: Arc<dyn Control>,
    ) -> crate::Result<ApiState> {
        let token = load_token(&config)?;
        Ok(ApiState { config, catalog, metrics, control, token })
    }
}

/// The bearer token from `[api] token_file` (first line, trimmed), or `None` when none is
/// configured (the POST endpoints are then disabled).
///
/// # Errors
/// [`crate::Error::ReadFile`] when the file cannot be read; [`crate::Error::Config`] when it is
/// empty (an empty token would let anyone in).
pub fn load_token(config: &Config) -> crate::Result<Option<Secret>> {
    let Some(path) = config.api.as_ref().and_then(|a| a.token_file.as_ref()) else {
        return Ok(None);
    };
    let path = if path.is_relative() { config.base_dir().join(path) } else { path.clone() };
    let token = crate::config::secrets::read_secret_file(&path)?;
    if token.expose().is_empty() {
        return Err(config_problem(
            config,
            "api.token_file",
            format!("`{}` is empty", path.display()),
            "write a long random token into it, e.g. `openssl rand -hex 32 > FILE`",
        ));
    }
    Ok(Some(token))
}

/// `[api] listen`, default [`DEFAULT_LISTEN`].
pub fn listen_addr(config: &Config) -> String {
    config.api.as_ref().and_then(|a| a.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.to_string())
}

fn config_problem(config: &Config, path: &str, message: String, hint: &str) -> crate::Error {
    crate::Error::Config(vec![crate::config::Problem {
        severity: crate::config::Severity::Error,
        file: config.path.clone(),
        line: None,
        path: path.to_string(),
        message,
        hint: Some(hint.to_string()),
    }])
}

/// The router with every endpoint.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(page::status_page).fallback(error::method_not_allowed))
        .route("/healthz", get(healthz).fallback(error::method_not_allowed))
        .route("/readyz", get(readyz).fallback(error::method_not_allowed))
        .route("/metrics", get(metrics).fallback(error::method_not_allowed))
        .route("/api/v1/jobs", get(jobs_list).fallback(error::method_not_allowed))
        .route("/api/v1/jobs/{job}/backups", get(job_backups).fallback(error::method_not_allowed))
        .route("/api/v1/jobs/{job}/run", post(job_run).fallback(error::method_not_allowed))
        .route("/api/v1/jobs/{job}/verify", post(job_verify).fallback(error::method_not_allowed))
        .fallback(error::not_found)
        .with_state(state)
}

/// Bind `listen` and serve until `shutdown` is cancelled; in-flight requests finish first.
///
/// # Errors
/// [`crate::Error::Config`] about `api.listen` when the address cannot be bound.
pub async fn serve(listen: &str, state: ApiState, shutdown: CancellationToken) -> crate::Result<()> {
    let listener = bind(listen, &state.config).await?;
    serve_on(listener, state, shutdown).await
}

/// Bind `[api] listen` (the daemon does this before it schedules anything, so that a bad or busy
/// address is a configuration error at start, not a daemon that runs jobs without its API).
///
/// # Errors
/// A configuration error on `api.listen` naming the address and the reason.
pub async fn bind(listen: &str, config: &Config) -> crate::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        config_problem(
            config,
            "api.listen",
            format!("cannot listen on `{listen}`: {e}"),
            "choose a free `host:port` for `[api] listen` (default 0.0.0.0:8080)",
        )
    })
}

/// [`serve`] on a listener the caller bound (e.g. `127.0.0.1:0` in tests).
///
/// # Errors
/// As [`serve`] (serving itself does not fail: connection errors are per connection).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(addr = %addr, "api: listening");
    let config = state.config.clone();
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await.map_err(|e| {
        config_problem(&config, "api.listen", format!("serving on `{addr}` failed: {e}"), "check `[api] listen`")
    })?;
    tracing::info!(addr = %addr, "api: stopped");
    Ok(())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<ApiState>) -> Response {
    match s.control.ready() {
        Ok(()) => "ready\n".into_response(),
        Err(reason) => ApiError::NotReady(reason).into_response(),
    }
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let body = crate::redact::scrub(&(s.metrics)());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

async fn jobs_list(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let jobs = jobs::summaries(&s.config, &s.catalog, s.control.as_ref(), jiff::Timestamp::now()).await?;
    Ok(error::json(StatusCode::OK, &jobs::JobsResponse { jobs }))
}

async fn job_backups(State(s): State<ApiState>, Path(job): Path<String>) -> Result<Response, ApiError> {
    if !s.config.jobs.contains_key(&job) {
        return Err(ApiError::UnknownJob(job));
    }
    let rows = s.catalog.list_flagged(Some(&job), None).await?;
    Ok(error::json(StatusCode::OK, &rows))
}

async fn job_run(State(s): State<ApiState>, Path(job): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    queue(&s, &job, &headers, |c, j| c.run_now(j))
}

async fn job_verify(
    State(s): State<ApiState>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    queue(&s, &job, &headers, |c, j| c.verify_now(j))
}

fn queue(
    s: &ApiState,
    job: &str,
    headers: &HeaderMap,
    op: impl FnOnce(&dyn Control, &str) -> Result<Accepted, ControlError>,
) -> Result<Response, ApiError> {
    auth::authorize(s.token.as_ref(), headers)?;
    if !s.config.jobs.contains_key(job) {
        return Err(ApiError::UnknownJob(job.to_string()));
    }
    let accepted = op(s.control.as_ref(), job).map_err(|e| ApiError::from_control(e, job))?;
    tracing::info!(job = %accepted.job, kind = accepted.kind, "api: run queued");
    Ok(error::json(StatusCode::ACCEPTED, &accepted))
}
