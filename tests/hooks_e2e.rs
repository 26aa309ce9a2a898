//! Hooks on every job kind (issue 18): `before`, `after` and `on_failure` on a Redis job against
//! the real test Redis, with the real binary — their order and environment, their output in the
//! log, `after` after a failed `before`, `on_failure` with the error, and `hook_timeout` killing
//! a hook with what it started. (Volume jobs' hooks are covered in tests/volume_e2e.rs.)

mod common;

use std::path::Path;

use common::*;

/// A Redis job `rds` with `hooks` (TOML lines) that append to `log`.
fn redis_job(s: &Scratch, hooks: &str) {
    s.write_config(&format!(
        "{}[jobs.rds]\nkind = \"redis\"\ntargets = [\"local\"]\nurl = \"{}\"\n{hooks}\n",
        s.head(),
        endpoint("DRCTL_TEST_REDIS_URL")
    ));
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn hooks_of_a_redis_backup_run_in_order_with_their_environment_and_output_logged() {
    let s = Scratch::new();
    let log = s.path("hooks.log");
    let l = log.display();
    redis_job(
        &s,
        &format!(
            "before = [\"echo before $DRCTL_JOB $DRCTL_KIND >> '{l}'\", \"echo said by the hook\"]\n\
             after = [\"echo after $DRCTL_BACKUP_STATUS $DRCTL_BACKUP_ID >> '{l}'\"]\n\
             on_failure = [\"echo on_failure >> '{l}'\"]"
        ),
    );
    let r = run(s.drctl().args(["-v", "run", "rds"]));
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.stdout.trim();
    assert_eq!(lines(&log), ["before rds redis".to_string(), format!("after committed {id}")]);
    assert!(
        r.stderr.lines().any(|l| l.contains("before hook output") && l.contains("said by the hook")),
        "a hook's output is logged at info: {}",
        r.stderr
    );
}

#[test]
fn a_failing_before_hook_fails_the_backup_and_after_and_on_failure_still_run() {
    let s = Scratch::new();
    let log = s.path("hooks.log");
    let l = log.display();
    redis_job(
        &s,
        &format!(
            "before = [\"echo paused >> '{l}'\", \"echo cannot pause >&2; exit 3\", \"echo never >> '{l}'\"]\n\
             after = [\"echo after $DRCTL_BACKUP_STATUS >> '{l}'\"]\n\
             on_failure = [\"echo \\\"on_failure: $DRCTL_ERROR\\\" >> '{l}'\"]"
        ),
    );
    let r = run(s.drctl().args(["run", "rds"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("before hook 2 of 3") && r.stderr.contains("cannot pause"), "{r:?}");
    let got = lines(&log);
    assert_eq!(got[..2], ["paused".to_string(), "after failed".to_string()], "{got:?}");
    assert!(got[2].starts_with("on_failure: ") && got[2].contains("before hook 2 of 3"), "{got:?}");
    assert_eq!(got.len(), 3, "{got:?}");
    let listed = run(s.drctl().args(["list", "rds", "--json"]));
    assert!(!listed.stdout.contains("\"ok\""), "nothing committed: {listed:?}");

    // a source that cannot be prepared: no `before`, so no `after`; `on_failure` still runs
    std::fs::remove_file(&log).unwrap();
    s.write_config(&std::fs::read_to_string(s.config_path()).unwrap().replace(
        &endpoint("DRCTL_TEST_REDIS_URL"),
        // a port nothing listens on: bound, then released
        &format!(
            "redis://127.0.0.1:{}",
            std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
        ),
    ));
    let r = run(s.drctl().args(["run", "rds"]));
    assert_eq!(r.code, 1, "{r:?}");
    let got = lines(&log);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("on_failure: "), "{got:?}");
}

#[test]
fn a_hook_running_past_hook_timeout_is_killed_with_what_it_started() {
    let s = Scratch::new();
    let log = s.path("hooks.log");
    let pid = s.path("sleeper.pid");
    let (l, p) = (log.display(), pid.display());
    redis_job(
        &s,
        &format!(
            "hook_timeout = \"1s\"\nbefore = [\"sleep 600 & echo $! > '{p}'; wait\"]\n\
             after = [\"echo after $DRCTL_BACKUP_STATUS >> '{l}'\"]"
        ),
    );
    let started = std::time::Instant::now();
    let r = run(s.drctl().args(["run", "rds"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "the hook was not stopped");
    assert!(r.stderr.contains("did not finish within 1s (`hook_timeout`)"), "{r:?}");
    assert_eq!(lines(&log), ["after failed"]);
    // the hook's own child went with it (its process group was killed)
    let sleeper = std::fs::read_to_string(&pid).unwrap().trim().to_string();
    let status = std::fs::read_to_string(format!("/proc/{sleeper}/status")).unwrap_or_default();
    assert!(status.is_empty() || status.contains("State:\tZ"), "the hook's child {sleeper} still runs: {status}");
}

#[test]
fn empty_hooks_and_a_bad_hook_timeout_are_configuration_errors() {
    let s = Scratch::new();
    redis_job(&s, "hook_timeout = \"soon\"\nafter = [\" \"]");
    let r = run(s.drctl().args(["check"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("jobs.rds.hook_timeout") && r.stderr.contains("`soon` is not a duration"), "{r:?}");
    assert!(r.stderr.contains("jobs.rds.after[0]") && r.stderr.contains("empty hook command"), "{r:?}");
}
