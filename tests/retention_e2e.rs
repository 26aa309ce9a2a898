//! 3-2-1 reporting, copy repair (`drctl sync`) and pruning with its overrides, end to end against
//! real PostgreSQL, fs targets and the real S3 server. A target "goes down" by having its root
//! blocked by a plain file, and "comes back" when the file is removed.

mod common;

use common::*;

fn fs_target(s: &Scratch, name: &str, medium: &str, offsite: bool, keep: &str) -> String {
    format!(
        "[targets.{name}]\ntype = \"fs\"\npath = \"{}\"\nmedium = \"{medium}\"\noffsite = {offsite}\n{keep}\n\n",
        s.path(name).join("root").display()
    )
}

fn block(s: &Scratch, name: &str) {
    std::fs::create_dir_all(s.path(name)).unwrap();
    let root = s.path(name).join("root");
    if root.is_dir() {
        std::fs::rename(&root, s.path(name).join("root.away")).unwrap();
    }
    std::fs::write(&root, "not a directory: the target is down").unwrap();
}

fn unblock(s: &Scratch, name: &str) {
    let root = s.path(name).join("root");
    std::fs::remove_file(&root).unwrap();
    if s.path(name).join("root.away").is_dir() {
        std::fs::rename(s.path(name).join("root.away"), &root).unwrap();
    }
}

fn job(db: &str, targets: &str) -> String {
    format!("[jobs.pg]\nkind = \"postgres\"\ntargets = [{targets}]\nurl = \"{}\"\n", pg_url(db))
}

fn check_json(s: &Scratch) -> (i32, serde_json::Value) {
    let r = run(s.drctl().args(["--json", "check"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
    let f = v["findings"].as_array().unwrap().iter().find(|f| f["subject"] == "3-2-1 pg").cloned().unwrap();
    (r.code, f)
}

#[test]
fn a_partial_run_is_reported_by_check_and_repaired_by_sync() {
    let db = unique("repair");
    create_sample_db(&db, 300);
    let s = Scratch::new();
    s.write_config(&format!(
        "{}{}{}{}",
        s.head(),
        fs_target(&s, "offsite", "remote-disk", true, ""),
        s.s3_target("s3", None),
        job(&db, "\"local\", \"offsite\", \"s3\"")
    ));
    block(&s, "offsite");
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 3, "{r:?}");
    let id = r.stdout.trim().to_string();

    let (code, f) = check_json(&s);
    assert_eq!(code, 1);
    assert_eq!(f["status"], "failed", "{f}");
    assert_eq!(f["detail"]["copies"], 3, "{f}");
    assert_eq!(f["detail"]["rule_321_ok"], true, "local + s3 still make 3-2-1: {f}");
    let offsite = f["detail"]["targets"].as_array().unwrap().iter().find(|t| t["target"] == "offsite").unwrap().clone();
    assert_eq!(offsite["newest"], serde_json::Value::Null, "{f}");
    assert!(f["hint"].as_str().unwrap().contains("drctl sync pg"), "{f}");

    unblock(&s, "offsite");
    let r = run(s.drctl().args(["sync"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("copied {id} from `local` to `offsite`")), "{r:?}");
    let (code, f) = check_json(&s);
    assert_eq!(code, 0, "{f}");
    assert_eq!(f["detail"]["copies"], 4, "{f}");
    let list = run(s.drctl().args(["--json", "list", "pg"]));
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(v[0]["status"], "ok", "{list:?}");
    assert_eq!(v[0]["targets"], serde_json::json!(["local", "offsite", "s3"]));

    // the repaired copy restores on its own
    let dest = format!("{db}_r");
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--target", "offsite", "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("from target `offsite`"), "{r:?}");
    assert_eq!(count(&dest, "users"), 300);

    drop_db(&dest);
    drop_db(&db);
}

#[test]
fn prune_applies_each_policy_and_never_breaks_the_overrides() {
    let db = unique("prune");
    create_sample_db(&db, 100);
    let s = Scratch::new();
    let local = format!(
        "[targets.local]\ntype = \"fs\"\npath = \"{}\"\nmedium = \"disk\"\nkeep = {{ last = 1 }}\n\n",
        s.path("backups").display()
    );
    let head = s.head();
    let head = &head[..head.find("[targets.local]").unwrap()];
    s.write_config(&format!(
        "{head}{local}{}{}",
        fs_target(&s, "off", "remote-disk", true, "keep = { last = 1 }"),
        job(&db, "\"local\", \"off\"")
    ));
    let b1 = run(s.drctl().args(["run", "pg"])).stdout.trim().to_string();
    let b2 = run(s.drctl().args(["run", "pg"])).stdout.trim().to_string();
    block(&s, "off");
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 3, "{r:?}");
    let b3 = r.stdout.trim().to_string();
    unblock(&s, "off");
    // an incomplete upload from long ago, and one that may belong to a run in progress
    let old = "pg/2020/01/01/20200101T000000Z-abcdef.x.dump.zst.age";
    let young_id = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ-fedcba").to_string();
    let young = format!("pg/{}/{}.x.dump.zst.age", &young_id[..4], young_id);
    for k in [old, young.as_str()] {
        let p = s.path("backups").join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"partial").unwrap();
    }

    let r = run(s.drctl().args(["--json", "prune", "--dry-run"]));
    assert_eq!(r.code, 0, "{r:?}");
    let plans: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let plan = |t: &str| plans.as_array().unwrap().iter().find(|p| p["target"] == t).unwrap().clone();
    let verdict = |t: &str, id: &str| {
        let p = plan(t);
        let d = p["decisions"].as_array().unwrap().iter().find(|d| d["id"] == id).unwrap().clone();
        (
            d["keep"].as_bool().unwrap(),
            d["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["rule"].as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
        )
    };
    // local holds b1, b2, b3: `last = 1` keeps b3 (also the newest); b2 is the newest backup that
    // meets 3-2-1 (b3 is on one target only), so it stays; b1 goes
    assert_eq!(verdict("local", &b3), (true, vec!["last".to_string(), "newest_good".into()]));
    assert_eq!(verdict("local", &b2), (true, vec!["needed321".to_string()]));
    assert_eq!(verdict("local", &b1), (false, vec![]));
    assert_eq!(verdict("off", &b2), (true, vec!["last".to_string(), "needed321".into()]));
    assert_eq!(verdict("off", &b1), (false, vec![]));
    assert_eq!(plan("local")["orphans"], serde_json::json!([old]), "only the old orphan: {r:?}");
    assert_eq!(s.fs_files().len(), 3 * 2 + 2, "a dry run deletes nothing");

    let r = run(s.drctl().args(["prune"]));
    assert_eq!(r.code, 0, "{r:?}");
    let files = s.fs_files();
    assert!(files.iter().any(|f| f.contains(&b3)) && files.iter().any(|f| f.contains(&b2)), "{files:?}");
    assert!(!files.iter().any(|f| f.contains(&b1)), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("20200101T000000Z")), "{files:?}");
    assert!(files.iter().any(|f| f.contains(&young_id)), "a young orphan is left alone: {files:?}");
    let list = run(s.drctl().args(["--json", "list", "pg"]));
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![b3.as_str(), b2.as_str()], "the catalog forgets pruned backups");

    // the pruned state still restores, from the newest backup
    let dest = format!("{db}_r");
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&b3), "{r:?}");
    drop_db(&dest);
    drop_db(&db);
}
