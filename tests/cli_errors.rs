//! Errors and output of the command line that name their cause (issue 11, items 13–15): a closed
//! stdout, `run --json`, `--id` suffixes, the `restore --dry-run` plan, `--before` times, the
//! partial-run hint and a damaged catalog file. Volume jobs on the fs target: no service needed.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;

/// A config with a volume job `vol` over `data/` on the fs target `local` (plus `extra`).
fn volume_setup(extra_config: &str, targets: &str) -> Scratch {
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"hello\n").unwrap();
    s.write_config(&format!(
        "{}{extra_config}[jobs.vol]\nkind = \"volume\"\ntargets = [{targets}]\npath = \"{}\"\n",
        s.head(),
        data.display()
    ));
    s
}

fn backup(s: &Scratch) -> String {
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.trim().to_string()
}

#[test]
fn list_into_a_closed_pipe_exits_quietly() {
    let s = volume_setup("", "\"local\"");
    backup(&s);
    // the reader is gone before drctl writes a byte: every write fails with EPIPE
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = s.drctl().arg("list").stdout(Stdio::from(writer)).stderr(Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "exits quietly: {stderr}");
}

#[test]
fn run_json_has_job_once_and_a_status_in_every_result() {
    let s = volume_setup("", "\"local\"");
    let mut cfg = std::fs::read_to_string(s.config_path()).unwrap();
    cfg.push_str(&format!(
        "\n[jobs.gone]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{}\"\n",
        s.path("missing").display()
    ));
    s.write_config(&cfg);
    let r = run(s.drctl().args(["--json", "run", "vol", "gone"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout.matches("\"job\":").count(), 2, "`job` once per result: {r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let results = v.as_array().unwrap();
    assert_eq!(results[0]["job"], "vol");
    assert_eq!(results[0]["status"], "ok");
    assert!(results[0]["backup_id"].is_string(), "{r:?}");
    assert_eq!(results[1]["job"], "gone");
    assert_eq!(results[1]["status"], "failed");
    assert!(results[1]["error"].as_str().unwrap().contains("gone"), "{r:?}");
}

#[test]
fn partial_run_hint_says_sync() {
    // a second fs target below a character device: it can never be written
    let broken = "[targets.broken]\ntype = \"fs\"\npath = \"/dev/null/backups\"\nmedium = \"usb\"\n\n";
    let s = volume_setup(broken, "\"local\", \"broken\"");
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("run `drctl sync vol`"), "{r:?}");
    assert!(!r.stderr.contains("drctl run vol` again"), "{r:?}");
}

#[test]
fn restore_id_takes_a_unique_suffix() {
    let s = volume_setup("", "\"local\"");
    // back up until two ids share their last hex digit (a birthday: a handful of runs)
    let mut ids: Vec<String> = Vec::new();
    let (a, b) = loop {
        let id = backup(&s);
        if let Some(other) = ids.iter().find(|o| o.chars().last() == id.chars().last()) {
            break (other.clone(), id);
        }
        ids.push(id);
        assert!(ids.len() <= 40, "40 backups without a shared last digit: {ids:?}");
    };
    let plan = |id: &str| {
        run(s
            .drctl()
            .args(["restore", "vol", "--id", id, "--dry-run", "--artifact", "data", "--output"])
            .arg(s.path("out.tar")))
    };
    // a unique end of the id is enough
    let unique_end = &b[b.len() - 6..];
    let r = plan(unique_end);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&b), "{r:?}");
    // ambiguous: a usage error naming every candidate
    let shared = &b[b.len() - 1..];
    let r = plan(shared);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains(&a) && r.stderr.contains(&b), "{r:?}");
    assert!(r.stderr.contains("hint:"), "{r:?}");
    // none: not found, as before
    let r = plan("zzzz");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no backup matches --id zzzz"), "{r:?}");
}

#[test]
fn restore_dry_run_plan_goes_to_stdout_unless_stdout_carries_the_data() {
    let s = volume_setup("", "\"local\"");
    let id = backup(&s);
    let r = run(s
        .drctl()
        .args(["-q", "restore", "vol", "--latest", "--dry-run", "--artifact", "data", "--output"])
        .arg(s.path("out.tar")));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with(&format!("dry run: would restore backup {id}")), "{r:?}");
    assert!(!Path::new(&s.path("out.tar")).exists());
    let r = run(s.drctl().args(["restore", "vol", "--latest", "--dry-run", "--artifact", "data", "--output", "-"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "", "stdout is for the data only: {r:?}");
    assert!(r.stderr.contains(&format!("dry run: would restore backup {id}")), "{r:?}");
}

#[test]
fn restore_before_a_local_time_between_two_backups_picks_the_earlier() {
    let s = volume_setup("[daemon]\ntimezone = \"Europe/Berlin\"\n\n", "\"local\"");
    let first = backup(&s);
    let first_second = drctl_id_time(&first);
    // the second backup must start in a later second than the first
    while jiff::Timestamp::now().as_second() <= first_second {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = backup(&s);
    assert!(drctl_id_time(&second) > first_second);
    // the second after the first backup's own second, as a Berlin wall-clock time
    let between = jiff::Timestamp::from_second(first_second + 1).unwrap();
    let local = between.to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap()).strftime("%Y-%m-%d %H:%M:%S");
    let r = run(s
        .drctl()
        .args(["restore", "vol", "--before", &local.to_string(), "--dry-run", "--artifact", "data", "--output"])
        .arg(s.path("o")));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&first), "--before {local} picks {first}: {r:?}");
    // a date alone is midnight at its start: nothing from today matches
    let today = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::get("Europe/Berlin").unwrap()).date();
    let r = run(s
        .drctl()
        .args(["restore", "vol", "--before", &today.to_string(), "--dry-run", "--artifact", "data", "--output"])
        .arg(s.path("o")));
    assert_eq!(r.code, 1, "{r:?}");
}

/// The start second encoded in a backup id (`20261120T030000Z-…`).
fn drctl_id_time(id: &str) -> i64 {
    let dt: jiff::civil::DateTime =
        jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", &id[..16]).unwrap().to_datetime().unwrap();
    dt.to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp().as_second()
}

#[test]
fn bad_before_is_a_usage_error_listing_the_formats() {
    let s = volume_setup("", "\"local\"");
    let r = run(s.drctl().args(["restore", "vol", "--before", "yesterday-ish", "--output"]).arg(s.path("o")));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--before `yesterday-ish`"), "{r:?}");
    assert!(r.stderr.contains("RFC 3339") && r.stderr.contains("YYYY-MM-DD HH:MM"), "{r:?}");
    assert!(!r.stderr.contains("configuration is invalid"), "{r:?}");
}

#[test]
fn a_garbage_catalog_is_moved_aside_and_rebuilt() {
    let s = volume_setup("", "\"local\"");
    let id = backup(&s);
    let catalog = s.path("catalog.db");
    for side in ["catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(s.path(side));
    }
    let garbage = vec![0x5au8; 64 * 1024];
    std::fs::write(&catalog, &garbage).unwrap();

    // other commands fail, with a hint that works
    let r = run(s.drctl().arg("list"));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("`drctl catalog rebuild` moves it aside"), "{r:?}");

    let r = run(s.drctl().args(["catalog", "rebuild"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("moved aside to"), "{r:?}");
    let aside: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("catalog.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{r:?}");
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), garbage, "the damaged file is kept as it was");

    let r = run(s.drctl().arg("list"));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&id), "{r:?}");
}

fn line_of(file: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} in {text}")) + 1
}

#[test]
fn a_missing_secret_file_is_a_configuration_error_in_run_and_check() {
    // a job's own secret: the postgres password (the server is never contacted)
    let s = Scratch::new();
    s.write_config(&format!(
        "{}[jobs.pg]\nkind = \"postgres\"\ntargets = [\"local\"]\nurl = \"postgres://backup@127.0.0.1:1/app\"\npassword_file = \"pg.pw\"\n",
        s.head()
    ));
    let at = format!("{}:{}", s.config_path().display(), line_of(&s.config_path(), "password_file"));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains(&format!("{at}: error: `jobs.pg.password_file`: `")), "{r:?}");
    assert!(r.stderr.contains("pg.pw` does not exist"), "{r:?}");
    assert!(r.stderr.contains("drctl: configuration is invalid"), "{r:?}");
    assert!(!r.stderr.contains("once the target is back"), "{r:?}");
    let r = run(s.drctl().arg("check"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.contains(&format!("FAIL  config: {at}: error: `jobs.pg.password_file`")), "{r:?}");

    // a target's secret: the WebDAV password of one of two targets (was: exit 3, partial)
    let s = volume_setup(
        "[targets.dav]\ntype = \"webdav\"\nurl = \"http://127.0.0.1:1/dav\"\nuser = \"u\"\npassword_file = \"dav.pw\"\nmedium = \"remote\"\noffsite = true\n\n",
        "\"local\", \"dav\"",
    );
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 2, "{r:?}");
    let at = format!("{}:{}", s.config_path().display(), line_of(&s.config_path(), "password_file"));
    assert!(r.stderr.contains(&format!("{at}: error: `targets.dav.password_file`")), "{r:?}");
    assert!(s.fs_files().is_empty(), "nothing ran: {:?}", s.fs_files());
}

#[test]
fn check_warns_about_world_readable_secret_files() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let pw = s.path("dav.pw");
    std::fs::write(&pw, format!("{}\n", endpoint("DRCTL_TEST_WEBDAV_PASS"))).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.write_config(&format!(
        "{}[targets.dav]\ntype = \"webdav\"\nurl = \"{}\"\nuser = \"{}\"\npassword_file = \"dav.pw\"\nroot = \"{}\"\nmedium = \"remote\"\noffsite = true\n",
        s.head(),
        endpoint("DRCTL_TEST_WEBDAV_URL"),
        endpoint("DRCTL_TEST_WEBDAV_USER"),
        unique("e2e/t"),
    ));
    let r = run(s.drctl().arg("check"));
    assert_eq!(r.code, 0, "a warning only: {r:?}");
    let line = r.stdout.lines().find(|l| l.contains("`targets.dav.password_file`")).unwrap_or_else(|| panic!("{r:?}"));
    assert!(line.starts_with("warn ") && line.contains("is readable by every user (mode 0644)"), "{r:?}");
    assert!(r.stdout.contains(&format!("hint: `chmod 600 {}`", pw.display())), "{r:?}");

    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(s.drctl().arg("check"));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("readable by every user"), "{r:?}");
}

#[test]
fn check_refuses_an_age_identity_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let s = volume_setup("", "\"local\"");
    let key = s.path("age.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run(s.drctl().arg("check"));
    assert_eq!(r.code, 2, "{r:?}");
    let line = r.stdout.lines().find(|l| l.contains("`encryption.identity_file`")).unwrap_or_else(|| panic!("{r:?}"));
    assert!(line.starts_with("FAIL ") && line.contains("is accessible by others (mode 0644)"), "{r:?}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(s.drctl().arg("check"));
    // (exit 1: the job has no backup yet, so 3-2-1 fails; no configuration error any more)
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!r.stdout.contains("`encryption.identity_file`"), "{r:?}");
}
