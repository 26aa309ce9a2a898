//! End to end: `drctl daemon` as a process, with volume jobs on fast schedules, an fs target, the
//! HTTP API, signals, and a real PostgreSQL catalog shared by two replicas.
//!
//! The schedules use seconds (`*/2 * * * * *`) through the hidden, test-only
//! `drctl daemon --seconds-schedules` flag, so that no test waits for a minute boundary. Every wait
//! polls the catalog, the metrics or the log with a deadline; nothing sleeps to synchronise.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use daemon::*;

fn volume(s: &Scratch) -> PathBuf {
    let root = s.path("data");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), b"hello daemon\n").unwrap();
    std::fs::write(root.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    root
}

/// A config with the scratch head, `[api]`, `[daemon]` and one volume job `vol`.
fn config(s: &Scratch, head: &str, api: &str, daemon: &str, job: &str) -> String {
    format!(
        "{head}\n[api]\nlisten = \"{api}\"\n\n[daemon]\n{daemon}\n\n[jobs.vol]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{}\"\n{job}\n",
        volume(s).display()
    )
}

/// The scratch head with `keep` on the `local` target.
fn head_with_keep(s: &Scratch, keep: &str) -> String {
    s.head().replace("medium = \"disk\"\n", &format!("medium = \"disk\"\nkeep = {keep}\n"))
}

/// `drctl list vol --json`: (id, status) newest first. The CLI reads the daemon's config without
/// its seconds schedule (6 fields are only accepted by `drctl daemon --seconds-schedules`).
fn list(s: &Scratch) -> Vec<(String, String)> {
    let r = run(cli(s).args(["list", "vol", "--json"]));
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap().to_string(), b["status"].as_str().unwrap().to_string()))
        .collect()
}

/// `drctl --config <the daemon's config without schedules>`.
fn cli(s: &Scratch) -> std::process::Command {
    let text = std::fs::read_to_string(s.config_path()).unwrap();
    let text: String = text.lines().filter(|l| !l.starts_with("schedule =")).map(|l| format!("{l}\n")).collect();
    let path = s.path("cli.toml");
    std::fs::write(&path, text).unwrap();
    let mut c = drctl_bare();
    c.arg("--config").arg(path);
    c
}

fn manifests(s: &Scratch) -> Vec<String> {
    s.fs_files().into_iter().filter(|f| f.ends_with(".manifest.json")).collect()
}

#[test]
fn daemon_backs_up_on_schedule_prunes_and_serves_metrics_and_health() {
    let s = Scratch::new();
    let api = free_addr();
    s.write_config(&config(
        &s,
        &head_with_keep(&s, "{ last = 2 }"),
        &api,
        "timezone = \"Europe/Berlin\"\ngrace = \"30s\"",
        "schedule = \"*/2 * * * * *\"",
    ));
    let mut d = Daemon::start(&s, "daemon", &api);
    let (code, body) = wait_for(Duration::from_secs(30), "/healthz", || Some(d.get("/healthz")).filter(|r| r.0 != 0));
    assert_eq!((code, body.trim()), (200, "ok"), "{}", d.log());

    // four scheduled runs, on its own
    let ok = "drctl_backup_runs_total{drctl_job=\"vol\",result=\"ok\"}";
    wait_for(Duration::from_secs(60), "4 ok runs in /metrics", || (d.metric(ok) >= 4.0).then_some(()));
    let text = d.get("/metrics").1;
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(metric(&text, "drctl_backup_last_status{drctl_job=\"vol\"}"), 1.0, "{text}");
    assert!(metric(&text, "drctl_backup_last_success_timestamp_seconds{drctl_job=\"vol\"}") > 1.7e9, "{text}");
    assert!(metric(&text, "drctl_backup_bytes{drctl_job=\"vol\",stage=\"source\"}") > 100_000.0, "{text}");
    assert_eq!(metric(&text, "drctl_backup_runs_total{drctl_job=\"vol\",result=\"failed\"}"), 0.0, "{text}");

    let (code, elapsed) = d.stop(Duration::from_secs(40));
    assert_eq!(code, 0, "a clean drain exits 0\n{}", d.log());
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    let log = d.log();
    assert!(log.contains("backup committed") && log.contains("daemon stopped"), "{log}");
    // readable fields: values, not Rust debug forms
    let has = |message: &str, fields: &str| log.lines().any(|l| l.contains(message) && l.contains(fields));
    assert!(has("run started", "kind=backup trigger=scheduled slot=20"), "{log}");
    assert!(has("backup committed", "status=ok"), "{log}");
    for debug_form in ["Some(", "None", "Scheduled(", "Ok("] {
        assert!(!log.contains(debug_form), "`{debug_form}` in the log:\n{log}");
    }

    // prune ran after each backup: `last = 2` keeps the two newest, on the target and in the catalog
    let runs = metric(&text, ok) as usize;
    assert!(runs >= 4);
    assert_eq!(manifests(&s).len(), 2, "{:?}", s.fs_files());
    let listed = list(&s);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|(_, st)| st == "ok"), "{listed:?}");
    assert!(log.matches("pruned").count() >= 2, "{log}");
}

#[test]
fn overlapping_runs_are_skipped_and_counted() {
    let s = Scratch::new();
    let api = free_addr();
    let hooks = s.path("hooks.log");
    let job = format!(
        "schedule = \"* * * * * *\"\nbefore = [\"echo start >> {h}; sleep 3\"]\nafter = [\"echo end >> {h}\"]",
        h = hooks.display()
    );
    s.write_config(&config(&s, &s.head(), &api, "max_concurrent = 4\ngrace = \"30s\"", &job));
    let mut d = Daemon::start(&s, "daemon", &api);
    let skipped = "drctl_backup_skipped_overlap_total{drctl_job=\"vol\"}";
    let ok = "drctl_backup_runs_total{drctl_job=\"vol\",result=\"ok\"}";
    wait_for(Duration::from_secs(60), "2 ok runs and 4 skips", || {
        (d.metric(ok) >= 2.0 && d.metric(skipped) >= 4.0).then_some(())
    });
    let (code, _) = d.stop(Duration::from_secs(40));
    assert_eq!(code, 0, "{}", d.log());
    // runs never overlapped: every start is followed by its end before the next start
    let lines = std::fs::read_to_string(&hooks).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert!(lines.len() >= 4, "{lines:?}");
    for pair in lines.chunks(2) {
        assert_eq!(pair, ["start", "end"], "{lines:?}");
    }
    assert!(d.log().contains("scheduled run skipped"), "{}", d.log());
}

#[test]
fn sigterm_waits_out_the_grace_period_then_aborts_without_committing() {
    let s = Scratch::new();
    let api = free_addr();
    let root = volume(&s);
    // a sparse 200 GB file: reading it through the pipeline takes far longer than the test
    let big = std::fs::File::create(root.join("big.img")).unwrap();
    big.set_len(200 << 30).unwrap();
    // the after-hook must run even though the run is aborted (think `docker unpause`)
    let marker = s.path("after-hook-ran");
    let job = format!("schedule = \"* * * * * *\"\nafter = [\"touch {}\"]", marker.display());
    s.write_config(&config(&s, &s.head(), &api, "grace = \"2s\"", &job));
    let mut d = Daemon::start(&s, "daemon", &api);
    wait_for(Duration::from_secs(30), "the run to start", || d.log().contains("run started").then_some(()));
    // let some bytes reach the target, so that there is something to not commit
    wait_for(Duration::from_secs(30), "an upload in progress", || (!s.fs_files().is_empty()).then_some(()));
    let (code, elapsed) = d.stop(Duration::from_secs(30));
    let log = d.log();
    assert_eq!(code, 1, "aborted runs: exit 1\n{log}");
    assert!(elapsed >= Duration::from_secs(2), "waited the grace period: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(15), "then aborted: {elapsed:?}");
    assert!(log.contains("aborting the running jobs"), "{log}");
    assert!(!log.contains("backup committed"), "{log}");
    assert!(marker.exists(), "the after-hook ran for the aborted run\n{log}");
    // nothing committed: no manifest on the target, nothing in the catalog
    assert!(manifests(&s).is_empty(), "{:?}", s.fs_files());
    // (artifacts without a manifest may remain: not committed, never restored, removed by prune
    // once older than its orphan grace)
    assert!(list(&s).iter().all(|(_, st)| st == "failed"), "{:?}", list(&s));
    // a restore finds nothing
    let r = run(cli(&s).args(["restore", "vol", "--latest", "--to"]).arg(s.path("restored")));
    assert_ne!(r.code, 0, "{r:?}");
}

#[test]
fn two_replicas_on_a_postgres_catalog_never_double_run() {
    let s = Scratch::new();
    let db = unique("drctl_cat");
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    let head = s.head().replace(
        &format!("url = \"sqlite://{}\"", s.path("catalog.db").display()),
        &format!("url = \"{}\"", pg_url(&db)),
    );
    assert!(head.contains("postgres://"), "{head}");
    let (api_a, api_b) = (free_addr(), free_addr());
    let job = "schedule = \"*/3 * * * * *\"";
    s.write_config(&config(&s, &head, &api_a, "grace = \"30s\"", job));
    let mut a = Daemon::start(&s, "a", &api_a);
    // the same config with another API port
    let config_b = s.path("b.toml");
    std::fs::write(&config_b, config(&s, &head, &api_b, "grace = \"30s\"", job)).unwrap();
    let mut b = Daemon::start_with(&s, "b", &api_b, &config_b, &[]);

    // serving means the catalog is open and migrated
    for d in [&a, &b] {
        wait_for(Duration::from_secs(30), "/healthz", || (d.get("/healthz").0 == 200).then_some(()));
    }
    let ok = "drctl_backup_runs_total{drctl_job=\"vol\",result=\"ok\"}";
    let skipped = "drctl_backup_skipped_locked_total{drctl_job=\"vol\"}";
    let (ok_a, ok_b, skip_a, skip_b) = wait_for(Duration::from_secs(90), "6 runs and 5 skips", || {
        let (ok_a, ok_b) = (a.metric(ok), b.metric(ok));
        let (skip_a, skip_b) = (a.metric(skipped), b.metric(skipped));
        (ok_a + ok_b >= 6.0 && skip_a + skip_b >= 5.0).then_some((ok_a, ok_b, skip_a, skip_b))
    });
    // Which replica wins a slot is a race, and one of them may win them all: stop the one that
    // ran most, and the other must take the next slots over (failover), so both have run.
    let (winner, other) = if ok_a >= ok_b { (&mut a, &mut b) } else { (&mut b, &mut a) };
    let before = other.metric(ok);
    assert_eq!(winner.stop(Duration::from_secs(40)).0, 0, "{}", winner.log());
    wait_for(Duration::from_secs(30), "the other replica to take over", || {
        (other.metric(ok) >= before + 2.0).then_some(())
    });
    assert_eq!(other.stop(Duration::from_secs(40)).0, 0, "{}", other.log());

    let claims: Vec<String> =
        psql(&db, "SELECT slot FROM schedule_claims WHERE job = 'vol' AND kind = 'backup' ORDER BY slot")
            .lines()
            .map(str::to_string)
            .collect();
    let backups: Vec<String> =
        psql(&db, "SELECT started_at || ' ' || status FROM backups WHERE job = 'vol' ORDER BY started_at")
            .lines()
            .map(str::to_string)
            .collect();
    let ctx = format!("claims {claims:?}\nbackups {backups:?}\n--- a\n{}\n--- b\n{}", a.log(), b.log());
    // exactly one backup per claimed slot, each started in its slot
    assert_eq!(claims.len(), backups.len(), "{ctx}");
    for (slot, backup) in claims.iter().zip(&backups) {
        let slot: jiff::Timestamp = slot.parse().unwrap();
        let (started, status) = backup.split_once(' ').unwrap();
        let started: jiff::Timestamp = started.parse().unwrap();
        assert_eq!(status, "ok", "{ctx}");
        let lag = started.duration_since(slot);
        assert!(!lag.is_negative() && lag < jiff::SignedDuration::from_secs(3), "{slot} → {started}\n{ctx}");
    }
    // no scheduled slot was lost between the first and the last: they are 3 s apart
    let slots: Vec<jiff::Timestamp> = claims.iter().map(|c| c.parse().unwrap()).collect();
    for w in slots.windows(2) {
        assert_eq!(w[1].duration_since(w[0]), jiff::SignedDuration::from_secs(3), "{ctx}");
    }
    let distinct: BTreeSet<&String> = claims.iter().collect();
    assert_eq!(distinct.len(), claims.len());
    // and, independently of the claims: no two backups in one 3 s slot
    let backup_slots: BTreeSet<i64> = backups
        .iter()
        .map(|b| b.split_once(' ').unwrap().0.parse::<jiff::Timestamp>().unwrap().as_second().div_euclid(3))
        .collect();
    assert_eq!(backup_slots.len(), backups.len(), "two backups in one slot\n{ctx}");
    // both replicas took part, and one saw the other one's runs (skips counted and logged)
    assert!(backups.len() as f64 >= ok_a + ok_b, "{ok_a} + {ok_b}\n{ctx}");
    assert!(ok_a >= 1.0 || ok_b >= 1.0, "{ok_a} + {ok_b} / skips {skip_a} + {skip_b}\n{ctx}");
    assert!(
        a.log().contains("run skipped: another replica has it")
            || b.log().contains("run skipped: another replica has it")
    );
    let replicas = psql(&db, "SELECT count(DISTINCT replica) FROM schedule_claims");
    assert_eq!(replicas, "2", "{ctx}");
    drop_db(&db);
}

#[test]
fn a_bad_schedule_is_a_configuration_error_with_its_line() {
    let s = Scratch::new();
    let api = free_addr();
    s.write_config(&config(&s, &s.head(), &api, "", "schedule = \"0 25 * * *\""));
    let r = run(s.drctl().arg("daemon"));
    assert_eq!(r.code, 2, "{r:?}");
    let text = std::fs::read_to_string(s.config_path()).unwrap();
    let line = text.lines().position(|l| l.starts_with("schedule")).unwrap() + 1;
    assert!(r.stderr.contains(&format!("drctl.toml:{line}")), "{r:?}");
    assert!(r.stderr.contains("jobs.vol.schedule"), "{r:?}");
    // seconds need the test-only flag
    s.write_config(&config(&s, &s.head(), &api, "", "schedule = \"*/2 * * * * *\""));
    let r = run(s.drctl().arg("check"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("6 fields"), "{r:?}");
}

#[test]
fn scheduled_drills_run_and_feed_the_metrics_with_json_logs() {
    let s = Scratch::new();
    let api = free_addr();
    let job = "schedule = \"*/2 * * * * *\"\nverify = { schedule = \"*/3 * * * * *\" }";
    s.write_config(&config(&s, &s.head(), &api, "grace = \"30s\"", job));
    let mut d = Daemon::start_with(&s, "daemon", &api, &s.config_path(), &["--json"]);
    let drills = "drctl_verify_runs_total{drctl_job=\"vol\",result=\"ok\"}";
    wait_for(Duration::from_secs(90), "a passed drill", || (d.metric(drills) >= 1.0).then_some(()));
    let text = d.get("/metrics").1;
    assert_eq!(metric(&text, "drctl_verify_last_status{drctl_job=\"vol\"}"), 1.0, "{text}");
    assert!(metric(&text, "drctl_verify_last_success_timestamp_seconds{drctl_job=\"vol\"}") > 1.7e9, "{text}");
    // (a drill due before the first backup exists fails: that is counted, and not the last status)
    assert_eq!(d.stop(Duration::from_secs(40)).0, 0, "{}", d.log());
    // --json: every log line is a JSON object with a level and a message
    let log = d.log();
    let mut messages = BTreeSet::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
        messages.insert(v["message"].as_str().unwrap_or_default().to_string());
    }
    assert!(messages.contains("drill passed") && messages.contains("backup committed"), "{messages:?}");
}

/// The daemon's JSON log as (message, fields) pairs.
fn json_log(log: &str) -> Vec<serde_json::Value> {
    log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).collect()
}

/// A field of a JSON log line (tracing puts them under `fields`, or at the top level).
fn field<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    v["fields"][name].as_str().or_else(|| v[name].as_str())
}

#[test]
fn a_backup_and_a_drill_due_together_both_run_the_drill_after_the_backup() {
    // issue 13: one running flag per job made one of the two skip, counted as a skipped backup
    let s = Scratch::new();
    let api = free_addr();
    let job = "schedule = \"*/3 * * * * *\"\nverify = { schedule = \"*/3 * * * * *\" }";
    s.write_config(&config(&s, &s.head(), &api, "grace = \"30s\"\nmax_concurrent = 4", job));
    let mut d = Daemon::start_with(&s, "daemon", &api, &s.config_path(), &["--json"]);
    let drills = "drctl_verify_runs_total{drctl_job=\"vol\",result=\"ok\"}";
    wait_for(Duration::from_secs(90), "3 passed drills", || (d.metric(drills) >= 3.0).then_some(()));
    let text = d.get("/metrics").1;
    assert_eq!(d.stop(Duration::from_secs(40)).0, 0, "{}", d.log());
    assert_eq!(metric(&text, "drctl_backup_skipped_overlap_total{drctl_job=\"vol\"}"), 0.0, "{text}");
    assert_eq!(metric(&text, "drctl_verify_skipped_overlap_total{drctl_job=\"vol\"}"), 0.0, "{text}");
    assert_eq!(metric(&text, "drctl_verify_runs_total{drctl_job=\"vol\",result=\"failed\"}"), 0.0, "{text}");

    // in every slot both ran, the backup first
    let mut order: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for v in json_log(&d.log()) {
        if v["fields"]["message"] == "run started" || v["message"] == "run started" {
            let (Some(kind), Some(trigger)) = (field(&v, "kind"), field(&v, "trigger")) else { continue };
            if trigger == "scheduled" {
                let slot = field(&v, "slot").unwrap_or_else(|| panic!("a scheduled run names its slot: {v}"));
                order.entry(slot.to_string()).or_default().push(kind.to_string());
            }
        }
    }
    let both: Vec<&Vec<String>> = order.values().filter(|k| k.len() == 2).collect();
    assert!(both.len() >= 3, "slots with a backup and a drill: {order:?}");
    for kinds in order.values() {
        assert_eq!(
            kinds.first().map(String::as_str),
            Some("backup"),
            "a drill ran before its slot's backup: {order:?}"
        );
    }
}

/// `drctl` with the clock `offset` away (libfaketime, installed by scripts/services.sh).
fn at_offset(offset: &str, config: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new("faketime");
    c.env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .args(["-f", offset, env!("CARGO_BIN_EXE_drctl")])
        .env_remove("DRCTL_CONFIG")
        .arg("--config")
        .arg(config);
    c
}

#[test]
fn a_daemon_down_across_its_schedule_catches_up_once_per_overdue_job() {
    // issue 13: a daemon that was down across a backup slot waited for the next one (a year here)
    let s = Scratch::new();
    let api = free_addr();
    let data = volume(&s);
    let job = |name: &str, extra: &str| {
        format!(
            "[jobs.{name}]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{}\"\nschedule = \"0 0 0 1 1 *\"\n{extra}\n",
            data.display()
        )
    };
    let text = format!(
        "{}\n[api]\nlisten = \"{api}\"\n\n[daemon]\ngrace = \"30s\"\n\n{}{}{}",
        s.head(),
        job("old", "rpo = \"1h\""),
        job("fresh", ""),
        job("never", "")
    );
    s.write_config(&text);
    let cli_config = s.path("cli.toml");
    std::fs::write(&cli_config, text.replace("schedule = \"0 0 0 1 1 *\"\n", "")).unwrap();
    // `old`: its newest backup is 3 h old (the clock moved back), past its 1 h rpo
    let r = run(at_offset("-3h", &cli_config).args(["run", "old"]));
    assert_eq!(r.code, 0, "{r:?}");
    // `fresh`: backed up now, within the default 26 h
    let r = run(at_offset("+0", &cli_config).args(["run", "fresh"]));
    assert_eq!(r.code, 0, "{r:?}");

    let mut d = Daemon::start(&s, "daemon", &api);
    let ok = |job: &str| format!("drctl_backup_runs_total{{drctl_job=\"{job}\",result=\"ok\"}}");
    wait_for(Duration::from_secs(60), "the catch-up backups of `old` and `never`", || {
        (d.metric(&ok("old")) >= 1.0 && d.metric(&ok("never")) >= 1.0).then_some(())
    });
    let text = d.get("/metrics").1;
    assert_eq!(d.stop(Duration::from_secs(40)).0, 0, "{}", d.log());
    let log = d.log();
    // jobs are looked at in name order: `fresh` was judged before the other two ran
    assert_eq!(metric(&text, &ok("fresh")), 0.0, "`fresh` is within its rpo: no catch-up\n{log}");
    assert_eq!(metric(&text, &ok("old")), 1.0, "one catch-up, not one per missed slot\n{log}");
    assert_eq!(log.matches("catch-up: backing up now").count(), 2, "{log}");
    assert!(log.contains("is 3h") && log.contains("rpo 1h"), "the reason names the age and the rpo\n{log}");
    assert!(log.contains("no complete backup yet"), "{log}");
}

#[test]
fn the_daemon_keeps_its_jobs_pushgateway_groups_true() {
    // issue 13: the daemon ignored [pushgateway]; a group pushed before by `drctl run` stayed frozen
    let s = Scratch::new();
    let api = free_addr();
    let pgw = endpoint("DRCTL_TEST_PUSHGATEWAY_URL");
    let name = format!("pgw_{}", unique("d").replace('-', "_"));
    let text = format!(
        "{}\n[pushgateway]\nurl = \"{pgw}\"\n\n[api]\nlisten = \"{api}\"\n\n[daemon]\ngrace = \"30s\"\n\n\
         [jobs.{name}]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{}\"\nschedule = \"*/2 * * * * *\"\n",
        s.head(),
        volume(&s).display()
    );
    s.write_config(&text);
    let cli_config = s.path("cli.toml");
    std::fs::write(&cli_config, text.replace("schedule = \"*/2 * * * * *\"\n", "")).unwrap();
    // a CronJob-era push, 3 h ago
    let r = run(at_offset("-3h", &cli_config).args(["run", &name]));
    assert_eq!(r.code, 0, "{r:?}");
    let pushed = |sample: &str| -> Option<f64> {
        let (code, body) = http_get(pgw.trim_start_matches("http://").trim_end_matches('/'), "/metrics");
        assert_eq!(code, 200);
        body.lines()
            .find(|l| l.starts_with(sample) && l.contains(&format!("drctl_job=\"{name}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let before = pushed("drctl_backup_last_success_timestamp_seconds").expect("the CLI pushed the job's group");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(now - before > 3.0 * 3600.0 - 120.0, "{before} {now}");

    let mut d = Daemon::start(&s, "daemon", &api);
    wait_for(Duration::from_secs(60), "the daemon's backup in the Pushgateway group", || {
        pushed("drctl_backup_last_success_timestamp_seconds").filter(|t| now - t < 60.0)
    });
    assert_eq!(d.stop(Duration::from_secs(40)).0, 0, "{}", d.log());
    // the per-target series travel with it
    assert!(pushed("drctl_target_last_success_timestamp_seconds").is_some_and(|t| now - t < 60.0));
    assert!(pushed("drctl_target_free_bytes").is_some_and(|f| f > 0.0), "an fs target tells its free space");
}
