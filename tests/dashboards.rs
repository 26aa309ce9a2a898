//! The alert rules and the Grafana dashboard against the metrics the code defines.
//!
//! - `promtool check rules` and `promtool test rules` on `dashboards/prometheus/` (the real promtool,
//!   installed by `scripts/services.sh`; a missing promtool fails, it never skips);
//! - every alert is unit-tested, has a summary, a description and a runbook link whose anchor exists;
//! - the Grafana dashboard is valid JSON, its queries use only metric names from
//!   `drctl::metrics::METRIC_NAMES` (plus the Pushgateway's own) and are valid PromQL (promtool
//!   checks them as recording rules), and it shows every metric drctl exposes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use drctl::metrics::{METRIC_NAMES, PUSHGATEWAY_METRIC_NAMES};

const ALERTS: &[&str] = &[
    "BackupMissing",
    "BackupFailed",
    "VerifyFailed",
    "VerifyMissing",
    "Rule321Broken",
    "BackupSizeDrop",
    "BackupSuspicious",
    "PushgatewayStale",
    "BackupTargetStale",
    "BackupDiskFull",
    "DrctlDaemonDown",
    "WalArchivingStalled",
    "WalGap",
    "WalSlotRetaining",
];

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// `promtool ARGS…` in the repository root; (exit code, stdout + stderr).
fn promtool(args: &[&str]) -> (i32, String) {
    let bin = std::env::var("DRCTL_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(&bin).args(args).current_dir(repo(".")).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{bin}` ({e}): install it with `scripts/services.sh start` (apt package `prometheus`), \
             or point DRCTL_TEST_PROMTOOL at it"
        )
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

// ---------------------------------------------------------------- PromQL: which metrics does a query use?

const KEYWORDS: &[&str] =
    &["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "atan2"];
const AGGREGATIONS: &[&str] =
    &["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"];

/// The metric names a PromQL expression selects (label names, functions, keywords, numbers,
/// strings, ranges and Grafana variables left out).
fn metric_names(expr: &str) -> BTreeSet<String> {
    // blank out strings, label matchers, ranges and Grafana variables
    let mut clean = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut quote: Option<char> = None;
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
            clean.push(' ');
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            '$' => {
                // $var, ${var}, $__range
                if chars.peek() == Some(&'{') {
                    for c in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                    }
                } else {
                    while chars.peek().is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
                        chars.next();
                    }
                }
                clean.push(' ');
                continue;
            }
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            c => {
                clean.push(c);
                continue;
            }
        }
        clean.push(' ');
    }
    // identifiers, with what follows them
    let bytes = clean.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len()
                && ((bytes[i] as char).is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &clean[start..i];
            let next = clean[i..].trim_start().chars().next();
            if KEYWORDS.contains(&word) {
                // by (a, b), on (a), group_left (a): label lists
                skip_list = matches!(word, "by" | "without" | "on" | "ignoring" | "group_left" | "group_right");
            } else if next == Some('(') || AGGREGATIONS.contains(&word) {
                // a function or an aggregation
            } else {
                names.insert(word.to_string());
            }
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            // numbers and durations (`0.5`, `8`, `1d`, `1e3`)
            while i < bytes.len() && ((bytes[i] as char).is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
            continue;
        }
        if c == '(' && skip_list {
            while i < bytes.len() && bytes[i] != b')' {
                i += 1;
            }
            skip_list = false;
        } else if !c.is_whitespace() {
            skip_list = false;
        }
        i += 1;
    }
    names
}

/// Prometheus' own series the rules use (the daemon's scrape target).
const PROMETHEUS_METRIC_NAMES: &[&str] = &["up"];

fn known_names() -> BTreeSet<String> {
    METRIC_NAMES.iter().chain(PUSHGATEWAY_METRIC_NAMES).chain(PROMETHEUS_METRIC_NAMES).map(|s| s.to_string()).collect()
}

/// The names in `expr` that the code does not define.
fn unknown_names(expr: &str) -> Vec<String> {
    let known = known_names();
    metric_names(expr).into_iter().filter(|n| !known.contains(n)).collect()
}

#[test]
fn the_promql_name_extractor_finds_metrics_only() {
    let cases: &[(&str, &[&str])] = &[
        (
            "time() - drctl_backup_last_success_timestamp_seconds > drctl_backup_rpo_seconds",
            &["drctl_backup_last_success_timestamp_seconds", "drctl_backup_rpo_seconds"],
        ),
        (
            r#"drctl_backup_bytes{stage="stored", drctl_job=~"$job"} < 0.5 * avg_over_time(drctl_backup_bytes{stage="stored"}[7d] offset 1d)"#,
            &["drctl_backup_bytes"],
        ),
        ("count by (version) (drctl_build_info)", &["drctl_build_info"]),
        ("sum by (drctl_job, result) (increase(drctl_backup_runs_total[$__range]))", &["drctl_backup_runs_total"]),
        ("a / on (drctl_job) group_left (stage) b unless c == bool 1e3", &["a", "b", "c"]),
        ("drctl_copies and drctl_rule_321_ok == 0", &["drctl_copies", "drctl_rule_321_ok"]),
        (r#"push_time_seconds{job="drctl"} > 8 * 86400"#, &["push_time_seconds"]),
    ];
    for (expr, want) in cases {
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(metric_names(expr), want, "{expr}");
    }
    assert_eq!(
        unknown_names("drctl_backup_last_sucess_timestamp_seconds"),
        ["drctl_backup_last_sucess_timestamp_seconds"]
    );
}

// ---------------------------------------------------------------- alert rules

/// `expr:` values of a rule file (one line, or a `|` / `>` block).
fn yaml_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let Some(v) = t.strip_prefix("expr:") else { continue };
        let indent = line.len() - t.len();
        let v = v.trim();
        if v.starts_with('|') || v.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            out.push(block.join(" "));
        } else {
            out.push(v.trim_matches(|c| c == '\'' || c == '"').to_string());
        }
    }
    out
}

/// The value of `key:` lines (quotes removed).
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"').to_string())
        .collect()
}

#[test]
fn promtool_checks_the_alert_rules() {
    let (code, out) = promtool(&["check", "rules", "dashboards/prometheus/alerts.yml"]);
    assert_eq!(code, 0, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    let (code, out) = promtool(&["test", "rules", "dashboards/prometheus/alerts.test.yml"]);
    assert_eq!(code, 0, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alerts_use_only_defined_metrics_and_are_all_tested() {
    let rules = read("dashboards/prometheus/alerts.yml");
    let exprs = yaml_exprs(&rules);
    assert!(exprs.len() >= ALERTS.len(), "{exprs:?}");
    for e in &exprs {
        assert!(!metric_names(e).is_empty(), "no metric in `{e}`");
        assert_eq!(unknown_names(e), Vec::<String>::new(), "in `{e}`");
    }
    let defined: BTreeSet<String> = yaml_values(&rules, "- alert").into_iter().collect();
    let wanted: BTreeSet<String> = ALERTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(defined, wanted, "the alerts of the issue, no more, no less");

    // every rule has the three annotations
    let rule_count = yaml_values(&rules, "- alert").len();
    for key in ["summary", "description", "runbook_url", "severity"] {
        assert_eq!(yaml_values(&rules, key).len(), rule_count, "each rule has `{key}`");
    }

    // every alert is unit-tested, firing (exp_labels) and quiet (exp_alerts: [])
    let tests = read("dashboards/prometheus/alerts.test.yml");
    for alert in ALERTS {
        let blocks: Vec<&str> =
            tests.split("- eval_time:").filter(|b| b.contains(&format!("alertname: {alert}\n"))).collect();
        assert!(blocks.iter().any(|b| b.contains("exp_labels")), "{alert} is never tested firing");
        assert!(blocks.iter().any(|b| b.contains("exp_alerts: []")), "{alert} is never tested quiet");
    }
    // the test series are metrics drctl (or the Pushgateway) exposes
    for series in yaml_values(&tests, "- series") {
        let series = series.trim_matches('\'');
        assert_eq!(unknown_names(series), Vec::<String>::new(), "test series `{series}`");
    }
}

#[test]
fn runbook_links_point_at_existing_sections() {
    let rules = read("dashboards/prometheus/alerts.yml");
    let links = yaml_values(&rules, "runbook_url");
    assert!(!links.is_empty());
    for link in links {
        let (file, anchor) = link.split_once('#').unwrap_or_else(|| panic!("`{link}` has no #anchor"));
        assert!(file.starts_with("runbooks/"), "{link}");
        let text = read(file);
        // GitHub/GitLab anchors: the heading, lowercased, punctuation dropped, spaces to dashes
        let anchors: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(|h| {
                h.trim()
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect()
            })
            .collect();
        assert!(
            anchors.iter().any(|a| a == anchor),
            "`{link}`: no `## ` heading with anchor `{anchor}` in {anchors:?}"
        );
    }
}

// ---------------------------------------------------------------- Grafana dashboard

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("dashboards/grafana/drctl.json")).expect("dashboards/grafana/drctl.json is valid JSON")
}

/// Every string under an `expr` key, anywhere in the document.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Grafana variables replaced by values PromQL accepts, for promtool.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m").replace("$__range", "1d").replace("$__interval", "1m").replace("$job", ".*")
}

#[test]
fn grafana_dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "drctl-backups");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "a current schema");
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id in `{title}`");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].as_u64().is_some(), "`{title}`: gridPos.{k}");
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "`{title}` uses the dashboard's data source variable");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("`{title}` has no targets"));
        assert!(!targets.is_empty(), "`{title}` has no queries");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "`{title}`: a target without expr");
            assert!(refs.insert(t["refId"].as_str().expect("refId").to_string()), "`{title}`: duplicate refId");
        }
    }
    // the job variable lists the jobs from a drctl metric
    let vars = d["templating"]["list"].as_array().expect("templating");
    let job = vars.iter().find(|v| v["name"] == "job").expect("a `job` variable");
    let q = job["query"]["query"].as_str().or(job["query"].as_str()).expect("job variable query");
    let metric =
        q.strip_prefix("label_values(").and_then(|r| r.split(',').next()).expect("label_values(METRIC, LABEL)");
    assert!(METRIC_NAMES.contains(&metric.trim()), "the job variable's metric `{metric}`");
    assert!(q.contains("drctl_job"), "{q}");
}

#[test]
fn grafana_queries_use_only_defined_metrics_and_show_them_all() {
    let mut all = Vec::new();
    exprs(&dashboard(), &mut all);
    assert!(!all.is_empty());
    let mut used = BTreeSet::new();
    for e in &all {
        let names = metric_names(e);
        assert!(!names.is_empty(), "no metric in `{e}`");
        assert_eq!(unknown_names(e), Vec::<String>::new(), "dashboard query `{e}`");
        used.extend(names);
    }
    let missing: Vec<&&str> = METRIC_NAMES.iter().filter(|n| !used.contains(**n)).collect();
    assert!(missing.is_empty(), "metrics the dashboard does not show: {missing:?}");
}

#[test]
fn grafana_queries_are_valid_promql() {
    let mut all = Vec::new();
    exprs(&dashboard(), &mut all);
    let mut rules = String::from("groups:\n  - name: drctl_dashboard_queries\n    rules:\n");
    for (i, e) in all.iter().enumerate() {
        // a JSON string is a valid YAML double-quoted scalar
        rules.push_str(&format!(
            "      - record: drctl_dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&substitute(e)).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, rules).unwrap();
    let (code, out) = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert_eq!(code, 0, "promtool check rules on the dashboard's queries:\n{out}");
    assert!(out.contains(&format!("SUCCESS: {} rules found", all.len())), "{out}");
}
