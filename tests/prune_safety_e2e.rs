//! Prune never deletes a good backup, end to end with the real binary (issue 11, items 1 to 5):
//! manifests it cannot read, backups dated in the future and a prune host whose clock is wrong
//! (libfaketime: `faketime`, installed by scripts/services.sh), a target down during prune, a wiped
//! source, and `sync` against a target with a shorter `keep`. Volume jobs on fs targets (fast);
//! the unreachable target is an SFTP target on a closed loopback port.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A volume job `vol` backing up `src` to `targets`.
fn vol_job(src: &Path, targets: &str) -> String {
    format!("[jobs.vol]\nkind = \"volume\"\ntargets = [{targets}]\npath = \"{}\"\n\n", src.display())
}

/// The common head with `keep` on the fs target `local`.
fn head_with_keep(s: &Scratch, keep: &str) -> String {
    s.head().replacen("medium = \"disk\"\n", &format!("medium = \"disk\"\nkeep = {keep}\n"), 1)
}

fn fs_target(s: &Scratch, name: &str, medium: &str, keep: &str) -> String {
    format!(
        "[targets.{name}]\ntype = \"fs\"\npath = \"{}\"\nmedium = \"{medium}\"\noffsite = true\nkeep = {keep}\n\n",
        s.path(name).display()
    )
}

fn populate(dir: &Path, files: usize, size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        std::fs::write(dir.join(format!("f{i:03}.bin")), vec![b'a' + (i % 26) as u8; size]).unwrap();
    }
}

/// `drctl --config … ARGS` under libfaketime at `when` (a `date -d` string or `@epoch`).
fn faked(s: &Scratch, when: &str) -> Command {
    let which = Command::new("faketime").arg("--version").output();
    assert!(which.is_ok(), "`faketime` is not installed: run scripts/services.sh (or `apt-get install -y faketime`)");
    let mut c = Command::new("faketime");
    c.arg(when).arg(env!("CARGO_BIN_EXE_drctl")).arg("--config").arg(s.config_path());
    c.env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env_remove("DRCTL_CONFIG")
        .env("DRCTL_STATE_DIR", std::env::temp_dir().join("drctl-test-state-unused"));
    c
}

fn backup(cmd: &mut Command) -> String {
    let r = run(cmd);
    assert!(r.code == 0 || r.code == 3, "{r:?}");
    r.stdout.trim().to_string()
}

/// `drctl --json prune vol [--dry-run]` → (exit, plans, stderr).
fn prune_json(s: &Scratch, dry_run: bool) -> (i32, Vec<serde_json::Value>, String) {
    let mut c = s.drctl();
    c.args(["--json", "prune", "vol"]);
    if dry_run {
        c.arg("--dry-run");
    }
    let r = run(&mut c);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
    (r.code, v.as_array().unwrap().clone(), r.stderr)
}

fn plan_for<'a>(plans: &'a [serde_json::Value], target: &str) -> &'a serde_json::Value {
    plans.iter().find(|p| p["target"] == target).unwrap_or_else(|| panic!("no plan for {target}: {plans:?}"))
}

/// The rules that keep `id` in `plan` (empty when it is deleted).
fn rules(plan: &serde_json::Value, id: &str) -> Vec<String> {
    let d = plan["decisions"].as_array().unwrap().iter().find(|d| d["id"] == id);
    let d = d.unwrap_or_else(|| panic!("no decision for {id}: {plan}"));
    if d["keep"] != true {
        return vec![];
    }
    d["reasons"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap().to_string()).collect()
}

fn files_of(s: &Scratch, dir: &str, id: &str) -> Vec<String> {
    let root = s.path(dir);
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(id) {
                out.push(e.path().strip_prefix(&root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn manifest_path(s: &Scratch, dir: &str, id: &str) -> std::path::PathBuf {
    let f = files_of(s, dir, id).into_iter().find(|f| f.ends_with(".manifest.json")).expect("a manifest");
    s.path(dir).join(f)
}

fn check_json(s: &Scratch) -> (i32, Vec<serde_json::Value>) {
    let r = run(s.drctl().args(["--json", "check"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
    (r.code, v["findings"].as_array().unwrap().clone())
}

/// Item 1: a manifest from a newer drctl and a damaged one, on backups older than the 6 h grace
/// period: both backups are kept (and said so), prune exits 0, and check reports them.
#[test]
fn unreadable_manifests_are_kept_and_reported() {
    let s = Scratch::new();
    let src = s.path("src");
    populate(&src, 3, 1000);
    s.write_config(&format!("{}{}", head_with_keep(&s, "{ last = 1 }"), vol_job(&src, "\"local\"")));
    let newer = backup(faked(&s, "50 hours ago").args(["run", "vol"]));
    let damaged = backup(faked(&s, "49 hours ago").args(["run", "vol"]));
    let newest = backup(s.drctl().args(["run", "vol"]));

    let m = manifest_path(&s, "backups", &newer);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    v["version"] = serde_json::json!(99);
    std::fs::write(&m, v.to_string()).unwrap();
    let m = manifest_path(&s, "backups", &damaged);
    let text = std::fs::read(&m).unwrap();
    std::fs::write(&m, &text[..text.len() / 2]).unwrap();
    let before: Vec<Vec<String>> = [&newer, &damaged].iter().map(|id| files_of(&s, "backups", id)).collect();
    assert!(before.iter().all(|f| f.len() >= 2), "{before:?}");

    let (code, plans, stderr) = prune_json(&s, false);
    assert_eq!(code, 0, "keeping is not a failure: {plans:?}\n{stderr}");
    let p = plan_for(&plans, "local");
    assert_eq!(rules(p, &newer), ["unreadable"], "{p}");
    assert_eq!(rules(p, &damaged), ["unreadable"], "{p}");
    assert!(rules(p, &newest).contains(&"last".to_string()), "{p}");
    assert_eq!(p["orphans"], serde_json::json!([]), "an unreadable manifest is no incomplete upload: {p}");
    assert!(p["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("upgrade drctl")), "{p}");
    let after: Vec<Vec<String>> = [&newer, &damaged].iter().map(|id| files_of(&s, "backups", id)).collect();
    assert_eq!(before, after, "nothing of either backup was deleted");

    // the human plan says so, on stdout and as a warning
    let r = run(s.drctl().args(["prune", "vol", "--dry-run"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&format!("keep    {newer}  (not understood here, kept: manifest `")), "{r:?}");
    assert!(r.stderr.contains("warning: job `vol` target `local`: backup"), "{r:?}");

    let (code, findings) = check_json(&s);
    let about = |id: &str| findings.iter().find(|f| f["message"].as_str().unwrap().contains(id)).cloned();
    let f = about(&newer).unwrap_or_else(|| panic!("{findings:?}"));
    assert_eq!(f["status"], "warning", "{f}");
    assert!(f["hint"].as_str().unwrap().contains("upgrade drctl"), "{f}");
    let f = about(&damaged).unwrap_or_else(|| panic!("{findings:?}"));
    assert_eq!(f["status"], "failed", "{f}");
    assert!(f["hint"].as_str().unwrap().contains("inspect"), "{f}");
    assert_eq!(code, 1, "a damaged manifest fails check");
}

/// Item 2: a backup from a host whose clock says 2030 never counts as the newest: keep last=1
/// keeps the real newest one (and the future one); check shows it as in the future. A prune
/// whose own clock is far from the target's deletes nothing there.
#[test]
fn future_dated_backups_and_a_wrong_prune_clock() {
    let s = Scratch::new();
    let src = s.path("src");
    populate(&src, 3, 1000);
    s.write_config(&format!("{}{}", head_with_keep(&s, "{ last = 1 }"), vol_job(&src, "\"local\"")));
    let old = backup(faked(&s, "3 hours ago").args(["run", "vol"]));
    let real = backup(s.drctl().args(["run", "vol"]));
    let future = backup(faked(&s, "2030-01-01 00:00:00").args(["run", "vol"]));
    assert!(future.starts_with("2030"), "{future}");

    let (code, plans, stderr) = prune_json(&s, true);
    assert_eq!(code, 0, "{plans:?}\n{stderr}");
    let p = plan_for(&plans, "local");
    assert_eq!(rules(p, &future), ["future_dated"], "{p}");
    assert!(rules(p, &real).contains(&"last".to_string()), "the real newest is kept: {p}");
    assert!(rules(p, &real).contains(&"newest_good".to_string()), "{p}");
    assert!(rules(p, &old).is_empty(), "{p}");

    let (_, findings) = check_json(&s);
    let f = findings.iter().find(|f| f["message"].as_str().unwrap().contains(&future)).unwrap();
    assert_eq!(f["status"], "warning", "{f}");
    assert!(f["message"].as_str().unwrap().contains("in the future"), "{f}");
    let rule = findings.iter().find(|f| f["subject"] == "3-2-1 vol").unwrap();
    assert_eq!(rule["detail"]["newest_backup"], real.as_str(), "{rule}");

    // this host's clock in 2030, the target's in the present: nothing is deleted
    let r = run(faked(&s, "2030-01-01 01:00:00").args(["--json", "prune", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    let plans: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    let p = plan_for(&plans, "local");
    assert!(p["errors"][0].as_str().unwrap().contains("ahead of the target's"), "{p}");
    assert_eq!(p["deleted"], serde_json::json!([]), "{p}");
    assert!(rules(p, &old).contains(&"clock_skew".to_string()), "{p}");
    assert!(!files_of(&s, "backups", &old).is_empty());

    // check says so before prune refuses
    let r = run(faked(&s, "2030-01-01 01:00:00").args(["--json", "check"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
    let skew =
        v["findings"].as_array().unwrap().iter().find(|f| f["subject"] == "target local" && f["status"] == "warning");
    assert!(skew.is_some_and(|f| f["message"].as_str().unwrap().contains("ahead of the target's")), "{v:#}");

    // with the clocks in agreement, prune deletes what the plan said
    let (code, plans, stderr) = prune_json(&s, false);
    assert_eq!(code, 0, "{plans:?}\n{stderr}");
    assert!(files_of(&s, "backups", &old).is_empty());
    assert!(!files_of(&s, "backups", &real).is_empty());
    assert!(!files_of(&s, "backups", &future).is_empty());
}

/// Item 3: with one of the job's targets unreachable, prune deletes no backup of the job on the
/// others, and says why per target. The backups are made while the job has only `local`; then an
/// SFTP target on a closed port joins the job (a Storage Box that is down).
#[test]
fn a_target_down_during_prune_deletes_nothing() {
    let s = Scratch::new();
    let src = s.path("src");
    populate(&src, 3, 1000);
    let head = head_with_keep(&s, "{ last = 1 }");
    s.write_config(&format!("{head}{}", vol_job(&src, "\"local\"")));
    let ids: Vec<String> = (0..3).map(|_| backup(s.drctl().args(["run", "vol"]))).collect();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port = format!("port = {}\n", endpoint("DRCTL_TEST_SFTP_PORT"));
    let down = s.sftp_target("box").replacen(&port, &format!("port = {closed}\n"), 1);
    assert!(down.contains(&format!("port = {closed}")), "{down}");
    s.write_config(&format!("{head}{down}{}", vol_job(&src, "\"local\", \"box\"")));

    let (code, plans, _) = prune_json(&s, false);
    assert_eq!(code, 1, "a target that cannot be listed fails prune: {plans:?}");
    let local = plan_for(&plans, "local");
    for id in &ids {
        assert!(rules(local, id).contains(&"target_unavailable".to_string()), "{id}: {local}");
        assert!(!files_of(&s, "backups", id).is_empty(), "{id} deleted");
    }
    assert_eq!(local["deleted"], serde_json::json!([]), "{local}");
    assert!(local["warnings"][0].as_str().unwrap().contains("`box` could not be listed"), "{local}");
    let sftp = plan_for(&plans, "box");
    assert!(sftp["errors"][0].as_str().unwrap().contains("nothing of job `vol` is deleted"), "{sftp}");
    // the human plan says it per target
    let r = run(s.drctl().args(["prune", "vol", "--dry-run"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("warning: job `vol` target `local`: no backup of job `vol` is deleted here"), "{r:?}");
    assert!(r.stderr.contains("error: job `vol` target `box`:"), "{r:?}");
    assert!(r.stdout.contains("could not be listed: 3-2-1 cannot be judged"), "{r:?}");
}

/// Item 4: a volume emptied by mistake (one small file left) and backed up again and again: every
/// later backup stays flagged (a median of recent sizes would clear the flag), and prune keeps
/// the newest backup from before the wipe, also on a fresh catalog (a CronJob).
#[test]
fn a_wiped_source_keeps_the_last_good_backup() {
    let s = Scratch::new();
    let src = s.path("src");
    populate(&src, 20, 20_000);
    s.write_config(&format!("{}{}", head_with_keep(&s, "{ last = 2 }"), vol_job(&src, "\"local\"")));
    let good: Vec<String> = (0..3).map(|_| backup(s.drctl().args(["run", "vol"]))).collect();
    std::fs::remove_dir_all(&src).unwrap();
    populate(&src, 1, 100);
    let wiped: Vec<String> = (0..5).map(|_| backup(s.drctl().args(["run", "vol"]))).collect();

    let r = run(s.drctl().args(["--json", "list", "vol"]));
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    for id in &wiped {
        let b = list.as_array().unwrap().iter().find(|b| b["id"] == id.as_str()).unwrap();
        assert!(b["suspicious"].as_str().is_some_and(|r| r.contains("fell by")), "{id} not flagged: {b}");
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(manifest_path(&s, "backups", id)).unwrap()).unwrap();
        assert!(m["suspicious"].is_string(), "the verdict is in the manifest: {m}");
        assert_eq!(m["judged_against"], good[2].as_str(), "sticky: the last good backup is the baseline: {m}");
    }
    for id in &good {
        let b = list.as_array().unwrap().iter().find(|b| b["id"] == id.as_str()).unwrap();
        assert!(b["suspicious"].is_null(), "{b}");
    }

    // a fresh catalog, as a CronJob has: the targets alone protect the last good backup
    std::fs::remove_file(s.path("catalog.db")).unwrap();
    let (code, plans, stderr) = prune_json(&s, false);
    assert_eq!(code, 0, "{plans:?}\n{stderr}");
    let p = plan_for(&plans, "local");
    assert_eq!(rules(p, &good[2]), ["newest_not_suspicious"], "{p}");
    assert!(rules(p, &good[1]).is_empty() && rules(p, &good[0]).is_empty(), "{p}");
    assert_eq!(p["suspicious"].as_array().unwrap().len(), 5, "{p}");
    assert!(!files_of(&s, "backups", &good[2]).is_empty());
    assert!(files_of(&s, "backups", &good[0]).is_empty());
    for id in &wiped[3..] {
        assert!(!files_of(&s, "backups", id).is_empty());
    }
    let r = run(s.drctl().args(["prune", "vol", "--dry-run"]));
    assert!(
        r.stdout.contains(&format!("keep    {}  (newest backup of the job not flagged suspicious)", good[2])),
        "{r:?}"
    );
}

/// Item 5: `local` keeps 1, `far` keeps 3: after runs and a prune, sync does not copy back to
/// `local` what prune removed, and a second sync + prune cycle changes nothing.
#[test]
fn sync_copies_only_what_the_destination_keeps() {
    let s = Scratch::new();
    let src = s.path("src");
    populate(&src, 3, 1000);
    s.write_config(&format!(
        "{}{}{}",
        head_with_keep(&s, "{ last = 1 }"),
        fs_target(&s, "far", "remote-disk", "{ last = 3 }"),
        vol_job(&src, "\"local\", \"far\"")
    ));
    let ids: Vec<String> = (0..4).map(|_| backup(s.drctl().args(["run", "vol"]))).collect();
    let (code, plans, stderr) = prune_json(&s, false);
    assert_eq!(code, 0, "{plans:?}\n{stderr}");
    let snapshot = || (files_of(&s, "backups", ""), files_of(&s, "far", ""));
    let after_prune = snapshot();
    assert!(files_of(&s, "backups", &ids[2]).is_empty() && !files_of(&s, "far", &ids[2]).is_empty());

    for _ in 0..2 {
        let r = run(s.drctl().args(["--json", "sync", "vol"]));
        assert_eq!(r.code, 0, "{r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["copied"], serde_json::json!([]), "{v}");
        let skipped: Vec<&str> =
            v["skipped"].as_array().unwrap().iter().map(|k| k["backup_id"].as_str().unwrap()).collect();
        assert_eq!(skipped, [ids[2].as_str(), ids[1].as_str()], "{v}");
        let (code, plans, _) = prune_json(&s, false);
        assert_eq!(code, 0);
        assert!(plans.iter().all(|p| p["deleted"] == serde_json::json!([])), "{plans:?}");
        assert_eq!(snapshot(), after_prune);
    }

    // a copy the destination would keep is still repaired
    let newest = &ids[3];
    for f in files_of(&s, "far", newest) {
        std::fs::remove_file(s.path("far").join(f)).unwrap();
    }
    let r = run(s.drctl().args(["--json", "sync", "vol"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["copied"][0]["backup_id"], newest.as_str(), "{v}");
    assert_eq!(v["copied"][0]["to"], "far", "{v}");
}

/// Item 2, every target kind: prune reads each target's clock before deleting (S3 and WebDAV: the
/// `Date` header; fs and SFTP: the modification time of a probe file). With this host's clock
/// years ahead (faketime) it deletes nothing on fs, SFTP and WebDAV (S3 itself refuses requests
/// signed with such a clock, so the job is not even listed there); with the clocks in agreement it
/// deletes on all four.
#[test]
fn prune_compares_its_clock_with_every_target_kind() {
    let s = Scratch::new();
    let src = s.path("src");
    populate(&src, 3, 1000);
    let keep = |block: String, name: &str| {
        block.replacen(&format!("[targets.{name}]\n"), &format!("[targets.{name}]\nkeep = {{ last = 1 }}\n"), 1)
    };
    let head = head_with_keep(&s, "{ last = 1 }");
    let remote = format!(
        "{}{}{}",
        keep(s.sftp_target("box"), "box"),
        keep(s.webdav_target("dav"), "dav"),
        keep(s.s3_target("s3", None), "s3")
    );
    let all = format!("{head}{remote}{}", vol_job(&src, "\"local\", \"box\", \"dav\", \"s3\""));
    s.write_config(&all);
    let ids: Vec<String> = (0..2).map(|_| backup(s.drctl().args(["run", "vol"]))).collect();

    s.write_config(&format!("{head}{remote}{}", vol_job(&src, "\"local\", \"box\", \"dav\"")));
    let r = run(faked(&s, "2030-01-01 00:00:00").args(["--json", "prune", "vol"]));
    assert_eq!(r.code, 1, "{r:?}");
    let plans: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
    for t in ["local", "box", "dav"] {
        let p = plan_for(&plans, t);
        assert!(p["errors"][0].as_str().unwrap_or_default().contains("ahead of the target's"), "{t}: {p}");
        assert_eq!(p["deleted"], serde_json::json!([]), "{t}: {p}");
        assert!(rules(p, &ids[0]).contains(&"clock_skew".to_string()), "{t}: {p}");
    }

    s.write_config(&all);
    let (code, plans, stderr) = prune_json(&s, false);
    assert_eq!(code, 0, "{plans:?}\n{stderr}");
    for t in ["local", "box", "dav", "s3"] {
        let p = plan_for(&plans, t);
        assert!(p["deleted"].as_array().unwrap().iter().any(|k| k.as_str().unwrap().contains(&ids[0])), "{t}: {p}");
        assert!(rules(p, &ids[1]).contains(&"last".to_string()), "{t}: {p}");
    }
}

/// Leaked temporaries are aged by this host's clock against the target's modification times: a
/// prune host whose clock is days ahead removes none of them, even when nothing else is to be
/// deleted (the clock was checked only before other deletions), and says why (exit 1).
#[test]
fn a_wrong_prune_clock_removes_no_temporary_file() {
    let s = Scratch::new();
    let src = s.path("src");
    populate(&src, 3, 1024);
    s.write_config(&format!("{}{}", s.head(), vol_job(&src, "\"local\"")));
    backup(s.drctl().args(["run", "vol"]));
    let dir = s.path("backups").join("vol/2026/01/01");
    std::fs::create_dir_all(&dir).unwrap();
    // a temporary written one hour ago (by the target's clock): a run may still be writing it
    let temp = dir.join(".20260101T000000Z-abcdef.data.tar.zst.age.partial-0a1b2c");
    std::fs::write(&temp, b"upload in progress").unwrap();
    let st = Command::new("touch").arg("-d").arg("1 hour ago").arg(&temp).status().unwrap();
    assert!(st.success());

    let r = run(faked(&s, "2 days").args(["prune", "vol"]));
    assert_eq!(r.code, 1, "a clock two days ahead must refuse: {r:?}");
    assert!(temp.exists(), "the temporary of a possibly running upload survives a wrong clock: {r:?}");
    assert!(r.stderr.contains("clock"), "the refusal names the clock: {r:?}");

    // with the right clock it is young and stays too; nothing is refused
    let r = run(s.drctl().args(["prune", "vol"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(temp.exists(), "{r:?}");
}
