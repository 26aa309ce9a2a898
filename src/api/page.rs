//! The status page (`GET /`): one table row per job, red/amber/green at a glance.
//!
//! Server-rendered on purpose: it works without JavaScript (a `<meta refresh>` reloads it), it
//! renders the same [`JobSummary`] values the JSON API returns (one source of truth), every value
//! goes through [`escape`] (no client-side `innerHTML`), and a test can read it with a plain GET
//! as well as in a browser. The page is self-contained: inline CSS only, no script, no external
//! asset; the `Content-Security-Policy` header enforces that.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::ApiState;
use super::jobs::{JobSummary, human_duration};
use crate::units::bytes;

const CSS: &str = include_str!("page.css");

/// `GET /`.
pub async fn status_page(State(s): State<ApiState>) -> Response {
    let now = Timestamp::now();
    let (status, body) = match super::jobs::summaries(&s.config, &s.catalog, s.control.as_ref(), now).await {
        Ok(jobs) => (StatusCode::OK, render(&jobs, now, s.control.ready().err(), &s.config.timezone())),
        Err(e) => {
            let mut out = head();
            let _ = writeln!(
                out,
                "<main><p class=\"error\">catalog unavailable: {}</p></main></body></html>",
                escape(&e.to_string())
            );
            (StatusCode::SERVICE_UNAVAILABLE, out)
        }
    };
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
            ),
        ],
        crate::redact::scrub(&body),
    )
        .into_response()
}

fn head() -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>drctl status</title><style>{CSS}</style></head><body>\n"
    )
}

/// `t` in the configured time zone, to the minute, with the zone's abbreviation (`CET`, `UTC`).
fn local(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M %Z").to_string()
}

/// The whole page; times in `tz`, the zone schedules run in.
pub fn render(jobs: &[JobSummary], now: Timestamp, not_ready: Option<String>, tz: &TimeZone) -> String {
    let mut out = head();
    let count = |h: super::jobs::Health| jobs.iter().filter(|j| j.health == h).count();
    let _ = write!(
        out,
        "<header><h1>drctl</h1><p class=\"summary\">{} job(s): <span class=\"pill green\">{} green</span> \
         <span class=\"pill amber\">{} amber</span> <span class=\"pill red\">{} red</span></p>\
         <p class=\"meta\">drctl {} &middot; {}</p></header>\n<main>\n",
        jobs.len(),
        count(super::jobs::Health::Green),
        count(super::jobs::Health::Amber),
        count(super::jobs::Health::Red),
        escape(env!("CARGO_PKG_VERSION")),
        escape(&local(now, tz)),
    );
    if let Some(reason) = not_ready {
        let _ = writeln!(out, "<p class=\"error\">not ready: {}</p>", escape(&reason));
    }
    if jobs.is_empty() {
        out.push_str("<p>No jobs are configured.</p>\n");
    } else {
        out.push_str(
            "<table id=\"jobs\"><thead><tr><th>Job</th><th>Last success</th><th>Size</th><th>Last run</th>\
             <th>Copies / 3-2-1</th><th>Last drill</th><th>Next run</th></tr></thead><tbody>\n",
        );
        // the worst first: what needs attention is at the top
        let mut sorted: Vec<&JobSummary> = jobs.iter().collect();
        sorted.sort_by(|a, b| b.health.cmp(&a.health).then_with(|| a.name.cmp(&b.name)));
        for j in sorted {
            row(&mut out, j, tz);
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</main></body></html>\n");
    out
}

fn row(out: &mut String, j: &JobSummary, tz: &TimeZone) {
    let h = j.health.as_str();
    let _ = write!(
        out,
        "<tr class=\"job {h}\" id=\"job-{id}\" data-job=\"{name}\" data-health=\"{h}\">",
        id = escape(&j.name),
        name = escape(&j.name)
    );
    // job
    let _ = write!(
        out,
        "<td class=\"name\"><span class=\"dot {h}\" title=\"{h}\"></span><strong>{}</strong> <span class=\"kind\">{}</span>{}",
        escape(&j.name),
        escape(j.kind),
        if j.running { " <span class=\"running\">running</span>" } else { "" }
    );
    if let Some(w) = &j.recoverable {
        let to = w.to.map(|t| local(t, tz)).unwrap_or_else(|| "(receiver elsewhere)".into());
        let _ = write!(
            out,
            "<div class=\"window\" title=\"point-in-time recovery reaches any moment in this window\">recoverable {} .. {}</div>",
            escape(&local(w.from, tz)),
            escape(&to)
        );
    }
    if !j.reasons.is_empty() {
        out.push_str("<ul class=\"reasons\">");
        for r in &j.reasons {
            let _ = write!(out, "<li>{}</li>", escape(r));
        }
        out.push_str("</ul>");
    }
    out.push_str("</td>");
    // last backup age
    match &j.last_success {
        Some(s) => {
            let _ = write!(
                out,
                "<td class=\"age\" data-label=\"Last success\" title=\"{}\">{} ago</td>",
                escape(&s.finished_at.to_string()),
                escape(&human_duration(s.age_seconds))
            );
        }
        None => out.push_str("<td class=\"age\" data-label=\"Last success\">never</td>"),
    }
    // size
    match &j.size {
        Some(s) => {
            let _ = write!(
                out,
                "<td class=\"size\" data-label=\"Size\" title=\"stored (compressed, encrypted) / source\">{} <span class=\"muted\">/ {}</span>{}</td>",
                bytes(s.stored_bytes),
                bytes(s.source_bytes),
                j.suspicious
                    .as_deref()
                    .map(|r| format!(
                        " <span class=\"badge warn suspicious\" title=\"{}\">suspicious</span>",
                        escape(r)
                    ))
                    .unwrap_or_default()
            );
        }
        None => out.push_str("<td class=\"size\" data-label=\"Size\">&ndash;</td>"),
    }
    // status of the newest run
    match &j.last_backup {
        Some(b) => {
            let status = match b.status {
                crate::catalog::BackupStatus::Ok => "ok",
                crate::catalog::BackupStatus::Partial => "partial",
                crate::catalog::BackupStatus::Failed => "failed",
            };
            let _ = write!(
                out,
                "<td class=\"status\" data-label=\"Last run\"><span class=\"badge {status}\">{status}</span> <span class=\"muted\" title=\"backup id\">{}</span></td>",
                escape(&b.id)
            );
        }
        None => out
            .push_str("<td class=\"status\" data-label=\"Last run\"><span class=\"badge none\">no backup</span></td>"),
    }
    // copies and 3-2-1
    let rule = match j.rule_321_ok {
        Some(true) => "<span class=\"badge ok\">3-2-1 ok</span>",
        Some(false) => "<span class=\"badge warn\">3-2-1 broken</span>",
        None => "<span class=\"badge none\">3-2-1 unknown</span>",
    };
    let _ = write!(
        out,
        "<td class=\"copies\" data-label=\"Copies / 3-2-1\">{} {rule}</td>",
        j.copies.map(|c| format!("{c} cop{}", if c == 1 { "y" } else { "ies" })).unwrap_or_else(|| "&ndash;".into())
    );
    // last drill
    let d = &j.drill;
    match d.last_passed {
        None => out.push_str("<td class=\"drill\" data-label=\"Last drill\">never</td>"),
        Some(passed) => {
            let _ = write!(
                out,
                "<td class=\"drill\" data-label=\"Last drill\"><span class=\"badge {}\">{}</span>{}{}</td>",
                if passed { "ok" } else { "failed" },
                if passed { "passed" } else { "failed" },
                d.duration_seconds.map(|s| format!(" in {}", escape(&seconds(s)))).unwrap_or_default(),
                d.last_success_age_seconds
                    .map(|a| format!(" <span class=\"muted\">(last pass {} ago)</span>", escape(&human_duration(a))))
                    .unwrap_or_default()
            );
        }
    }
    // schedule and next run, in the zone the schedule runs in
    let schedule = match &j.schedule {
        Some(s) => format!("<code>{}</code>", escape(s)),
        None => "not scheduled".to_string(),
    };
    let _ = write!(
        out,
        "<td class=\"next\" data-label=\"Next run\" title=\"{}\">{schedule}{}</td>",
        escape(j.schedule.as_deref().unwrap_or("")),
        j.next_run.map(|t| format!("<div class=\"when\">{}</div>", escape(&local(t, tz)))).unwrap_or_default()
    );
    out.push_str("</tr>\n");
}

/// HTML-escape text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn seconds(s: f64) -> String {
    if s < 120.0 { format!("{s:.1}s") } else { human_duration(s as i64) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }
}
