use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::catalog::{BackupEntry, BackupStatus};

fn full_state() -> JobState {
    JobState {
        job: "pg".into(),
        complete: true,
        rpo_seconds: 93600.0,
        last_run: Some(RunResult::Ok),
        last_success: Some(1795400000.25),
        newest: Some(BackupSize { duration_seconds: 12.5, source_bytes: 1000, stored_bytes: 400 }),
        copies: Some(3),
        rule_321_ok: Some(true),
        suspicious: Some(None),
        verify: VerifyState {
            last_passed: Some(false),
            last_success: Some(1795300000.0),
            duration_seconds: Some(42.0),
        },
        targets: vec![
            TargetState { target: "local".into(), last_success: Some(1795400000.25), stored_bytes: Some(400) },
            TargetState { target: "s3".into(), last_success: None, stored_bytes: None },
        ],
        free_bytes: vec![("local".into(), 5_000_000)],
    }
}

/// The sample lines of an exposition, sorted (families keep their label sets in a hash map).
fn samples(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect()
}

fn set(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

#[test]
fn push_body_is_prometheus_text_with_every_state_sample() {
    let m = Metrics::new();
    m.set_job(&full_state());
    let text = m.encode_state();
    assert!(text.ends_with('\n'), "the Pushgateway needs a final newline");
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "OpenMetrics-only lines: {text}");
    for l in text.lines().filter(|l| l.starts_with("# TYPE")) {
        assert!(l.ends_with(" gauge"), "only gauges are pushed: {l}");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        samples(&text),
        set(&[
            &format!("drctl_build_info{{version=\"{version}\"}} 1"),
            "drctl_backup_last_success_timestamp_seconds{drctl_job=\"pg\"} 1795400000.25",
            "drctl_backup_last_status{drctl_job=\"pg\"} 1",
            "drctl_backup_partial{drctl_job=\"pg\"} 0",
            "drctl_backup_duration_seconds{drctl_job=\"pg\"} 12.5",
            "drctl_backup_bytes{drctl_job=\"pg\",stage=\"source\"} 1000",
            "drctl_backup_bytes{drctl_job=\"pg\",stage=\"stored\"} 400",
            "drctl_backup_suspicious{drctl_job=\"pg\"} 0",
            "drctl_target_last_success_timestamp_seconds{drctl_job=\"pg\",target=\"local\"} 1795400000.25",
            "drctl_target_last_success_timestamp_seconds{drctl_job=\"pg\",target=\"s3\"} 0.0",
            "drctl_target_bytes{drctl_job=\"pg\",target=\"local\"} 400",
            "drctl_target_free_bytes{target=\"local\"} 5000000",
            "drctl_backup_rpo_seconds{drctl_job=\"pg\"} 93600.0",
            "drctl_verify_last_success_timestamp_seconds{drctl_job=\"pg\"} 1795300000.0",
            "drctl_verify_last_status{drctl_job=\"pg\"} 0",
            "drctl_verify_duration_seconds{drctl_job=\"pg\"} 42.0",
            "drctl_copies{drctl_job=\"pg\"} 3",
            "drctl_rule_321_ok{drctl_job=\"pg\"} 1",
        ])
    );
    assert!(
        text.contains("# HELP drctl_backup_last_status 1 when the job's last backup run committed on every target"),
        "{text}"
    );
}

#[test]
fn a_job_that_never_succeeded_has_no_last_success_sample() {
    let m = Metrics::new();
    m.set_job(&JobState {
        job: "new".into(),
        complete: true,
        rpo_seconds: 3600.0,
        last_run: Some(RunResult::Failed),
        copies: Some(1),
        rule_321_ok: Some(false),
        ..JobState::default()
    });
    let text = m.encode_state();
    let s = samples(&text);
    assert!(s.contains("drctl_backup_last_status{drctl_job=\"new\"} 0"), "{text}");
    assert!(s.contains("drctl_backup_partial{drctl_job=\"new\"} 0"), "{text}");
    for absent in [BACKUP_LAST_SUCCESS, BACKUP_DURATION, BACKUP_BYTES, BACKUP_SUSPICIOUS, VERIFY_LAST_STATUS] {
        assert!(!s.iter().any(|l| l.starts_with(&format!("{absent}{{"))), "{absent} in {text}");
    }
}

#[test]
fn a_partial_run_is_status_0_and_partial_1() {
    let m = Metrics::new();
    m.set_job(&JobState { job: "pg".into(), last_run: Some(RunResult::Partial), ..full_state() });
    let s = samples(&m.encode_state());
    assert!(s.contains("drctl_backup_last_status{drctl_job=\"pg\"} 0"));
    assert!(s.contains("drctl_backup_partial{drctl_job=\"pg\"} 1"));
}

#[test]
fn complete_states_remove_missing_samples_and_incomplete_ones_keep_them() {
    let m = Metrics::new();
    m.set_job(&full_state());
    // incomplete: what the run did not know stays as it was
    m.set_job(&JobState {
        job: "pg".into(),
        complete: false,
        rpo_seconds: 93600.0,
        last_run: Some(RunResult::Failed),
        ..JobState::default()
    });
    let s = samples(&m.encode_state());
    assert!(s.contains("drctl_backup_last_status{drctl_job=\"pg\"} 0"));
    assert!(s.contains("drctl_backup_last_success_timestamp_seconds{drctl_job=\"pg\"} 1795400000.25"));
    assert!(s.contains("drctl_copies{drctl_job=\"pg\"} 3"));
    // complete: the state is the whole truth
    m.set_job(&JobState { verify: VerifyState::default(), last_success: None, ..full_state() });
    let s = samples(&m.encode_state());
    assert!(!s.iter().any(|l| l.starts_with(BACKUP_LAST_SUCCESS)), "{s:?}");
    assert!(!s.iter().any(|l| l.starts_with("drctl_verify_")), "{s:?}");
}

#[test]
fn two_jobs_in_one_registry_keep_their_own_samples() {
    let m = Metrics::new();
    m.set_job(&full_state());
    m.set_job(&JobState { job: "redis".into(), copies: Some(2), ..full_state() });
    let s = samples(&m.encode_state());
    assert!(s.contains("drctl_copies{drctl_job=\"pg\"} 3"));
    assert!(s.contains("drctl_copies{drctl_job=\"redis\"} 2"));
}

#[test]
fn scrape_text_has_counters_and_eof() {
    let m = Metrics::new();
    Event::BackupFinished { job: "pg", result: RunResult::Failed }.emit(Some(&m));
    Event::BackupFinished { job: "pg", result: RunResult::Failed }.emit(Some(&m));
    Event::BackupFinished { job: "pg", result: RunResult::Ok }.emit(Some(&m));
    Event::SkippedOverlap { job: "pg" }.emit(Some(&m));
    let text = m.encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = samples(&text);
    assert!(s.contains("drctl_backup_runs_total{drctl_job=\"pg\",result=\"failed\"} 2"), "{text}");
    assert!(s.contains("drctl_backup_runs_total{drctl_job=\"pg\",result=\"ok\"} 1"), "{text}");
    assert!(s.contains("drctl_backup_skipped_overlap_total{drctl_job=\"pg\"} 1"), "{text}");
    Event::SkippedLocked { job: "pg", reason: "another replica" }.emit(Some(&m));
    Event::VerifyFinished { job: "pg", result: RunResult::Failed }.emit(Some(&m));
    let s = samples(&m.encode());
    assert!(s.contains("drctl_backup_skipped_locked_total{drctl_job=\"pg\"} 1"), "{s:?}");
    assert!(s.contains("drctl_verify_runs_total{drctl_job=\"pg\",result=\"failed\"} 1"), "{s:?}");
    // counters are never pushed
    assert!(!m.encode_state().contains("_total"));
}

#[test]
fn metric_names_are_exactly_the_families_exposed() {
    let m = Metrics::new();
    m.set_job(&full_state());
    m.observe(&Event::BackupFinished { job: "pg", result: RunResult::Ok });
    m.observe(&Event::SkippedOverlap { job: "pg" });
    m.observe(&Event::VerifySkippedOverlap { job: "pg" });
    m.observe(&Event::SkippedLocked { job: "pg", reason: "test" });
    m.observe(&Event::VerifyFinished { job: "pg", result: RunResult::Failed });
    m.observe(&Event::NotifyFailed { channel: "ops" });
    m.wal.set(&crate::metrics::wal::WalStatus {
        job: "pg".into(),
        last_archived: Some(1.0),
        gap_detected: Some(1.0),
        ..Default::default()
    });
    let exposed: BTreeSet<String> =
        samples(&m.encode()).iter().map(|l| l.split(['{', ' ']).next().unwrap().to_string()).collect();
    let names: BTreeSet<String> = METRIC_NAMES.iter().map(|s| s.to_string()).collect();
    assert_eq!(exposed, names);
    for n in METRIC_NAMES {
        assert!(
            n.starts_with("drctl_") && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
        );
    }
}

// ---- job_state: from the catalog's entries

fn config(rpo: Option<&str>) -> crate::config::Config {
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let rpo = rpo.map(|r| format!("rpo = \"{r}\"\n")).unwrap_or_default();
    let text = format!(
        "[encryption]\nrecipients = [\"{recipient}\"]\n\n\
         [targets.local]\ntype = \"fs\"\npath = \"/tmp/drctl-metrics-unit/local\"\nmedium = \"disk\"\n\n\
         [targets.far]\ntype = \"fs\"\npath = \"/tmp/drctl-metrics-unit/far\"\nmedium = \"remote-disk\"\noffsite = true\n\n\
         [jobs.pg]\nkind = \"postgres\"\ntargets = [\"local\", \"far\"]\nurl = \"postgres://u@127.0.0.1/app\"\n{rpo}"
    );
    crate::config::load_str(std::path::Path::new("/tmp/drctl-metrics-unit/drctl.toml"), &text, vec![]).unwrap()
}

fn entry(id: &str, day: u32, status: BackupStatus, targets: &[&str], stored: u64) -> BackupEntry {
    let mut m = crate::manifest::sample();
    m.backup_id = id.into();
    m.started_at = format!("2026-11-{day:02}T02:00:00Z").parse().unwrap();
    m.finished_at = format!("2026-11-{day:02}T02:00:30Z").parse().unwrap();
    m.artifacts[0].stored.size = stored;
    BackupEntry {
        id: id.into(),
        job: "pg".into(),
        kind: "postgres".into(),
        status,
        started_at: String::new(),
        finished_at: None,
        plaintext_bytes: None,
        stored_bytes: None,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        error: None,
        manifest: (status != BackupStatus::Failed).then_some(m),
    }
}

fn outcome(result: RunResult) -> RunOutcome {
    RunOutcome { job: "pg".into(), result, report: None, finished_at: "2026-11-25T02:01:00Z".parse().unwrap() }
}

fn unix(s: &str) -> f64 {
    s.parse::<jiff::Timestamp>().unwrap().as_second() as f64
}

#[test]
fn a_failed_run_keeps_the_earlier_success_and_the_newest_backup() {
    let cfg = config(Some("2h"));
    let entries = vec![
        entry("c", 25, BackupStatus::Failed, &[], 0),
        entry("b", 24, BackupStatus::Ok, &["local", "far"], 500),
        entry("a", 23, BackupStatus::Ok, &["local", "far"], 400),
    ];
    let s = state::job_state(&cfg, &outcome(RunResult::Failed), Some(&entries), &BTreeMap::new());
    assert!(s.complete);
    assert_eq!(s.rpo_seconds, 7200.0);
    assert_eq!(s.last_run, Some(RunResult::Failed));
    assert_eq!(s.last_success, Some(unix("2026-11-24T02:00:30Z")));
    assert_eq!(s.newest, Some(BackupSize { duration_seconds: 30.0, source_bytes: 10, stored_bytes: 500 }));
    assert_eq!((s.copies, s.rule_321_ok), (Some(3), Some(true)));
}

#[test]
fn a_partial_backup_is_the_newest_but_not_a_success() {
    let cfg = config(None);
    let entries = vec![
        entry("b", 24, BackupStatus::Partial, &["local"], 500),
        entry("a", 23, BackupStatus::Ok, &["local", "far"], 400),
    ];
    let s = state::job_state(&cfg, &outcome(RunResult::Partial), Some(&entries), &BTreeMap::new());
    assert_eq!(s.rpo_seconds, 26.0 * 3600.0, "default RPO");
    assert_eq!(s.last_success, Some(unix("2026-11-23T02:00:30Z")));
    assert_eq!(s.newest.map(|n| n.stored_bytes), Some(500));
    // as `drctl check`: the newest committed backup is on `local` only
    assert_eq!((s.copies, s.rule_321_ok), (Some(2), Some(false)));
}

#[test]
fn a_job_without_backups_has_only_the_live_copy() {
    let cfg = config(None);
    let s = state::job_state(
        &cfg,
        &outcome(RunResult::Failed),
        Some(&[entry("a", 23, BackupStatus::Failed, &[], 0)]),
        &BTreeMap::new(),
    );
    assert_eq!((s.last_success, s.newest), (None, None));
    assert_eq!((s.copies, s.rule_321_ok), (Some(1), Some(false)));
}

#[test]
fn without_the_catalog_only_the_run_is_known() {
    let cfg = config(None);
    let report = crate::engine::run::RunReport {
        job: "pg".into(),
        backup_id: "x".into(),
        status: BackupStatus::Ok,
        committed: vec!["local".into(), "far".into()],
        failed: vec![],
        artifacts: vec!["app".into()],
        plaintext_bytes: 100,
        stored_bytes: 40,
        duration_seconds: 2.0,
        catalog_warning: Some("down".into()),
        suspicious: Some("empty".into()),
    };
    let o = RunOutcome { report: Some(report), ..outcome(RunResult::Ok) };
    let s = state::job_state(&cfg, &o, None, &BTreeMap::new());
    assert!(!s.complete, "merged into the group, not replacing it");
    assert_eq!(s.last_success, Some(unix("2026-11-25T02:01:00Z")));
    assert_eq!(s.newest, Some(BackupSize { duration_seconds: 2.0, source_bytes: 100, stored_bytes: 40 }));
    assert_eq!((s.copies, s.rule_321_ok), (Some(3), Some(true)));
    assert_eq!(s.suspicious, Some(Some("empty".into())), "the run's own verdict");

    let s = state::job_state(&cfg, &outcome(RunResult::Failed), None, &BTreeMap::new());
    assert_eq!((s.last_success, s.newest, s.copies), (None, None, None), "unknown, so not pushed");
    assert_eq!(s.suspicious, None);
}

#[test]
fn the_newest_committed_backup_says_whether_the_job_is_suspicious() {
    let cfg = config(None);
    let flagged = |id: &str| {
        BTreeMap::from([(
            id.to_string(),
            crate::catalog::BackupFlags { suspicious: Some("the backup is empty".into()), ..Default::default() },
        )])
    };
    let entries = vec![
        entry("c", 25, BackupStatus::Failed, &[], 0),
        entry("b", 24, BackupStatus::Ok, &["local", "far"], 500),
        entry("a", 23, BackupStatus::Ok, &["local", "far"], 400),
    ];
    // the newest committed backup (a failed run after it does not change that) is flagged
    let s = state::job_state(&cfg, &outcome(RunResult::Failed), Some(&entries), &flagged("b"));
    assert_eq!(s.suspicious, Some(Some("the backup is empty".into())));
    let m = Metrics::new();
    m.set_job(&s);
    assert!(samples(&m.encode_state()).contains("drctl_backup_suspicious{drctl_job=\"pg\"} 1"));
    // an older flagged backup does not count: a good backup since clears the alert
    let s = state::job_state(&cfg, &outcome(RunResult::Ok), Some(&entries), &flagged("a"));
    assert_eq!(s.suspicious, Some(None));
    m.set_job(&s);
    assert!(samples(&m.encode_state()).contains("drctl_backup_suspicious{drctl_job=\"pg\"} 0"));
    // no committed backup: no sample
    let s = state::job_state(&cfg, &outcome(RunResult::Failed), Some(&entries[..1]), &flagged("c"));
    assert_eq!(s.suspicious, None);
    m.set_job(&s);
    assert!(!m.encode_state().contains("drctl_backup_suspicious{"));
}

#[test]
fn a_future_dated_backup_is_not_the_last_success() {
    // a host with a wrong clock committed a backup dated 2030: counted, it would hold the last
    // success in the future and BackupMissing would never fire again
    let cfg = config(Some("2h"));
    let mut future = entry("z", 24, BackupStatus::Ok, &["local", "far"], 900);
    if let Some(m) = future.manifest.as_mut() {
        m.started_at = "2030-01-01T02:00:00Z".parse().unwrap();
        m.finished_at = "2030-01-01T02:00:30Z".parse().unwrap();
    }
    let entries = vec![future, entry("b", 24, BackupStatus::Ok, &["local"], 500)];
    let s = state::job_state(&cfg, &outcome(RunResult::Ok), Some(&entries), &BTreeMap::new());
    assert_eq!(s.last_success, Some(unix("2026-11-24T02:00:30Z")));
    assert_eq!(s.newest.map(|n| n.stored_bytes), Some(500));
    assert_eq!(s.copies, Some(2));
}
