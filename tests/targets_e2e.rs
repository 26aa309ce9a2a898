//! End to end with the remote target kinds: `drctl run`, `restore`, `check` and `sync` of a real
//! PostgreSQL database to fs + sftp (the OpenSSH server standing in for a Storage Box) + s3
//! (Garage), and to fs + webdav (rclone).
//!
//! "The SFTP server stops during a run" is simulated by pointing the target at a port where
//! nothing listens: the shared sshd keeps running for every other test.

mod common;

use common::*;

fn job(db: &str, targets: &[&str]) -> String {
    let t: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!("[jobs.pg]\nkind = \"postgres\"\ntargets = [{}]\nurl = \"{}\"\n", t.join(", "), pg_url(db))
}

fn backup_id(r: &Ran) -> String {
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.trim().to_string()
}

/// `drctl --json check`: exit code and output.
fn check(s: &Scratch) -> (i32, serde_json::Value, Ran) {
    let r = run(s.drctl().args(["--json", "check"]));
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("check --json is not JSON ({e}): {r:?}"));
    (r.code, v, r)
}

fn finding<'a>(v: &'a serde_json::Value, subject: &str) -> &'a serde_json::Value {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == subject)
        .unwrap_or_else(|| panic!("no finding `{subject}` in {v:#}"))
}

/// Restore the newest backup from `target` into a new database and check its rows.
fn restore_from(s: &Scratch, db: &str, target: &str, users: i64) {
    let dest = format!("{db}_from_{target}");
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--target", target, "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("from target `{target}`")), "{r:?}");
    assert_eq!(count(&dest, "users"), users);
    assert_eq!(count(&dest, "orders"), users * 3);
    drop_db(&dest);
}

/// The value of `key = "…"` (or `key = …`) in a target snippet.
fn setting(snippet: &str, key: &str) -> String {
    snippet
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no `{key}` in {snippet}"))
}

#[test]
fn fs_sftp_s3_run_restore_321_and_a_lost_sftp_server() {
    let db = unique("tgt");
    create_sample_db(&db, 1000);
    let s = Scratch::new();
    let sftp = s.sftp_target("box");
    // Garage runs on site here: only the Storage Box is offsite, so 3-2-1 needs its copy
    let s3 = s.s3_target("s3", None).replace("offsite = true", "offsite = false");
    let config = |sftp: &str| format!("{}{sftp}{s3}{}", s.head(), job(&db, &["local", "box", "s3"]));
    s.write_config(&config(&sftp));

    // 1. everything up: a backup on all three, restorable from the Storage Box, 3-2-1 holds
    let first = backup_id(&run(s.drctl().args(["run", "pg"])));
    restore_from(&s, &db, "box", 1000);
    let (code, v, r) = check(&s);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(finding(&v, "target box")["status"], "ok", "{v:#}");
    let rule = finding(&v, "3-2-1 pg");
    assert_eq!(rule["status"], "ok", "{v:#}");
    assert_eq!(rule["detail"]["copies"], 4, "{v:#}");
    assert_eq!(rule["detail"]["media"], 3, "{v:#}");
    assert_eq!(rule["detail"]["offsite"], true, "{v:#}");
    assert_eq!(rule["detail"]["newest_backup"], first.as_str());

    // 2. the SFTP server is gone (nothing listens on its port): the run is partial (exit 3),
    //    naming the target; check fails and names the missing copy
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port_line = format!("port = {}", endpoint("DRCTL_TEST_SFTP_PORT"));
    let dead = sftp.replace(&port_line, &format!("port = {dead_port}"));
    assert_ne!(dead, sftp);
    s.write_config(&config(&dead));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("target `box`"), "{r:?}");
    let second = r.stdout.trim().to_string();
    assert_ne!(second, first);
    let (code, v, r) = check(&s);
    assert_eq!(code, 1, "{r:?}");
    let down = finding(&v, "target box");
    assert_eq!(down["status"], "failed", "{v:#}");
    assert!(down["message"].as_str().unwrap().contains("Connection refused"), "{v:#}");
    let rule = finding(&v, "3-2-1 pg");
    assert_eq!(rule["status"], "failed", "{v:#}");
    assert_eq!(rule["detail"]["newest_backup"], second.as_str());
    assert_eq!(rule["detail"]["offsite"], false, "only the Storage Box is offsite: {v:#}");
    assert!(rule["hint"].as_str().unwrap().contains("box"), "the finding names the missing copy: {v:#}");

    // 3. the server is back: the newest backup still lacks its offsite copy until `drctl sync`
    s.write_config(&config(&sftp));
    let (code, v, r) = check(&s);
    assert_eq!(code, 1, "{r:?}");
    assert_eq!(finding(&v, "target box")["status"], "ok", "{v:#}");
    assert_eq!(finding(&v, "3-2-1 pg")["status"], "failed", "{v:#}");
    let r = run(s.drctl().args(["sync", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&second) && r.stderr.contains("to `box`"), "{r:?}");
    let (code, v, r) = check(&s);
    assert_eq!(code, 0, "{r:?}");
    let rule = finding(&v, "3-2-1 pg");
    assert_eq!(rule["status"], "ok", "{v:#}");
    assert_eq!(rule["detail"]["newest_backup"], second.as_str());
    assert_eq!(rule["detail"]["copies"], 4, "{v:#}");
    restore_from(&s, &db, "box", 1000);

    drop_db(&db);
    let root = setting(&sftp, "root");
    let _ = std::fs::remove_dir_all(std::path::Path::new(&endpoint("DRCTL_TEST_SFTP_ROOT")).join(root));
}

#[test]
fn fs_webdav_run_restore_and_321() {
    let db = unique("dav");
    create_sample_db(&db, 500);
    let s = Scratch::new();
    let dav = s.webdav_target("dav");
    s.write_config(&format!("{}{dav}{}", s.head(), job(&db, &["local", "dav"])));

    let id = backup_id(&run(s.drctl().args(["run", "pg"])));
    restore_from(&s, &db, "dav", 500);
    let (code, v, r) = check(&s);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(finding(&v, "target dav")["status"], "ok", "{v:#}");
    let rule = finding(&v, "3-2-1 pg");
    assert_eq!(rule["status"], "ok", "{v:#}");
    assert_eq!(rule["detail"]["newest_backup"], id.as_str());
    assert_eq!(rule["detail"]["copies"], 3, "{v:#}");

    // the catalog can be rebuilt from the WebDAV copy alone
    std::fs::remove_dir_all(s.path("backups")).unwrap();
    std::fs::remove_file(s.path("catalog.db")).unwrap();
    let r = run(s.drctl().args(["catalog", "rebuild"]));
    assert_eq!(r.code, 0, "{r:?}");
    restore_from(&s, &db, "dav", 500);

    drop_db(&db);
    let root = setting(&dav, "root");
    let url = format!("{}/{root}/", endpoint("DRCTL_TEST_WEBDAV_URL").trim_end_matches('/'));
    let _ = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-X", "DELETE", "-u"])
        .arg(format!("{}:{}", endpoint("DRCTL_TEST_WEBDAV_USER"), endpoint("DRCTL_TEST_WEBDAV_PASS")))
        .arg(url)
        .status();
}
