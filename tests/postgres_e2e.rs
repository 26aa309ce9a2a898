//! End to end: `drctl run` / `restore` / `list` / `catalog rebuild` against a real PostgreSQL
//! server, the fs target and a real S3 server, including the failure cases.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

fn job(db: &str, targets: &[&str], extra: &str) -> String {
    let t: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!("[jobs.pg]\nkind = \"postgres\"\ntargets = [{}]\nurl = \"{}\"\n{extra}\n", t.join(", "), pg_url(db))
}

fn backup_id(r: &Ran) -> String {
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.trim().to_string()
}

fn list_json(s: &Scratch) -> serde_json::Value {
    let r = run(s.drctl().args(["--json", "list", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(&r.stdout).unwrap()
}

fn db_exists(db: &str) -> bool {
    psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'")) == "1"
}

/// A bin_dir whose `pg_dump` is `script` and whose other tools are the real ones.
fn fake_bin(dir: &Path, script: &str) -> PathBuf {
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["pg_dumpall", "pg_restore", "psql"] {
        std::os::unix::fs::symlink(pg_bin().join(tool), bin.join(tool)).unwrap();
    }
    let real = pg_bin().join("pg_dump");
    let path = bin.join("pg_dump");
    std::fs::write(&path, format!("#!/bin/bash\nREAL={}\n{script}\n", real.display())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn backup_and_restore_round_trip_on_fs_and_s3() {
    let db = unique("rt");
    create_sample_db(&db, 2000);
    let s = Scratch::new();
    s.write_config(&format!("{}{}{}", s.head(), s.s3_target("s3", None), job(&db, &["local", "s3"], "")));

    let id = backup_id(&run(s.drctl().args(["run", "pg"])));
    let files = s.fs_files();
    assert!(files.iter().any(|f| f.ends_with(&format!("{id}.manifest.json"))), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with(&format!("{id}.{db}.dump.zst.age"))), "{files:?}");

    let list = list_json(&s);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["status"], "ok");
    assert_eq!(list[0]["targets"], serde_json::json!(["local", "s3"]));

    // the manifest's facts are the dump's own row counts
    let manifest_path = s.path("backups").join(files.iter().find(|f| f.ends_with(".manifest.json")).unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    let tables = &m["facts"]["databases"][0]["tables"];
    let rows = |t: &str| tables.as_array().unwrap().iter().find(|x| x["name"] == t).unwrap()["rows"].as_i64().unwrap();
    assert_eq!(rows("users"), 2000);
    assert_eq!(rows("orders"), 6000);
    assert_eq!(m["facts"]["server_version"].as_str().unwrap().split('.').next(), Some("15"));

    for target in ["local", "s3"] {
        let dest = format!("{db}_from_{target}");
        let r = run(s.drctl().args(["restore", "pg", "--latest", "--target", target, "--to", &pg_url(&dest)]));
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains(&format!("from target `{target}`")), "{r:?}");
        assert_eq!(count(&dest, "users"), 2000);
        assert_eq!(count(&dest, "orders"), 6000);
        drop_db(&dest);
    }
    drop_db(&db);
}

#[test]
fn restore_refuses_a_non_empty_destination_without_force() {
    let db = unique("force");
    create_sample_db(&db, 500);
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job(&db, &["local"], "")));
    backup_id(&run(s.drctl().args(["run", "pg"])));

    psql(&db, "DELETE FROM orders WHERE id > 100");
    let r = run(s.drctl().args(["restore", "pg", "--latest"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not empty") && r.stderr.contains("--force"), "{r:?}");
    assert_eq!(count(&db, "orders"), 100, "a refused restore changes nothing");

    let dry = run(s.drctl().args(["restore", "pg", "--latest", "--force", "--dry-run"]));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains("parallel restore") && dry.stdout.contains("replaces the whole database ("),
        "the plan is the output: {dry:?}"
    );
    let dry = run(s.drctl().args(["restore", "pg", "--latest", "--force", "--dry-run", "--jobs", "1"]));
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("--clean --if-exists"), "in place, one transaction: {dry:?}");
    assert_eq!(count(&db, "orders"), 100, "a dry run changes nothing");

    let r = run(s.drctl().args(["restore", "pg", "--latest", "--force"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&db, "orders"), 1500);
    drop_db(&db);
}

#[test]
fn several_databases_and_globals() {
    let (a, b) = (unique("multi_a"), unique("multi_b"));
    create_sample_db(&a, 100);
    create_sample_db(&b, 200);
    let role = unique("role");
    psql("postgres", &format!("CREATE ROLE {role} LOGIN"));
    let s = Scratch::new();
    s.write_config(&format!(
        "{}{}",
        s.head(),
        job("postgres", &["local"], &format!("databases = [\"{a}\", \"{b}\"]\nglobals = true"))
    ));
    let id = backup_id(&run(s.drctl().args(["run", "pg"])));
    let files = s.fs_files();
    for art in [format!("{a}.dump"), format!("{b}.dump"), "globals.sql".to_string()] {
        assert!(files.iter().any(|f| f.ends_with(&format!("{id}.{art}.zst.age"))), "{art} in {files:?}");
    }

    drop_db(&a);
    drop_db(&b);
    psql("postgres", &format!("DROP ROLE {role}"));
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--globals"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&a, "users"), 100);
    assert_eq!(count(&b, "users"), 200);
    assert_eq!(
        psql("postgres", &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")),
        "1",
        "roles come back"
    );

    // one database of several, into a new name
    let c = unique("multi_c");
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--artifact", &b, "--to", &pg_url(&c)]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&c, "users"), 200);
    for d in [&a, &b, &c] {
        drop_db(d);
    }
    psql("postgres", &format!("DROP ROLE {role}"));
}

#[test]
fn wrong_password_fails_and_commits_nothing() {
    // password authentication for one role, ahead of the cluster's trust rules
    let role = "drctl_pw_test";
    let hba = psql("postgres", "SHOW hba_file");
    let text = std::fs::read_to_string(&hba).unwrap();
    let line = format!("host all {role} 127.0.0.1/32 scram-sha-256\n");
    if !text.contains(&line) {
        std::fs::write(&hba, format!("{line}{text}")).unwrap();
        psql("postgres", "SELECT pg_reload_conf()");
    }
    psql(
        "postgres",
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'right-password'"),
    );
    let s = Scratch::new();
    std::fs::write(s.path("pw"), "wrong-password\n").unwrap();
    let url = pg_url("postgres").replace("postgres@", &format!("{role}@"));
    s.write_config(&format!(
        "{}[jobs.pg]\nkind = \"postgres\"\ntargets = [\"local\"]\nurl = \"{url}\"\npassword_file = \"{}\"\n",
        s.head(),
        s.path("pw").display()
    ));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("password authentication failed"), "{r:?}");
    assert!(r.stderr.contains("hint:"), "{r:?}");
    assert!(!r.stderr.contains("wrong-password"), "the password is never shown: {r:?}");
    assert!(s.fs_files().is_empty(), "nothing committed: {:?}", s.fs_files());
    assert_eq!(list_json(&s)[0]["status"], "failed");

    std::fs::write(s.path("pw"), "right-password\n").unwrap();
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn unreachable_server_fails_with_a_hint() {
    let s = Scratch::new();
    s.write_config(&format!(
        "{}[jobs.pg]\nkind = \"postgres\"\ntargets = [\"local\"]\nurl = \"postgres://postgres:hunter2secret@127.0.0.1:1/app\"\n",
        s.head()
    ));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("job `pg`") && r.stderr.contains("cannot connect"), "{r:?}");
    assert!(r.stderr.contains("is PostgreSQL running"), "{r:?}");
    assert!(!r.stderr.contains("hunter2secret"), "{r:?}");
    assert!(s.fs_files().is_empty());

    let r = run(s.drctl().args(["check"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("FAIL  job pg"), "{r:?}");
    assert!(!r.stdout.contains("hunter2secret"), "{r:?}");
}

#[test]
fn pg_dump_killed_mid_stream_commits_nothing() {
    let db = unique("killed");
    create_sample_db(&db, 20000);
    let s = Scratch::new();
    let bin =
        fake_bin(s.dir.path(), "[[ $1 == --version ]] && exec $REAL \"$@\"\n$REAL \"$@\" | head -c 300000\nkill -9 $$");
    s.write_config(&format!("{}{}", s.head(), job(&db, &["local"], &format!("bin_dir = \"{}\"", bin.display()))));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("killed by signal 9"), "{r:?}");
    assert!(s.fs_files().is_empty(), "no artifact or manifest is left: {:?}", s.fs_files());
    assert_eq!(list_json(&s)[0]["status"], "failed");
    drop_db(&db);
}

#[test]
fn empty_dump_and_old_pg_dump_are_refused() {
    let db = unique("tools");
    create_sample_db(&db, 10);
    let s = Scratch::new();
    let bin = fake_bin(s.dir.path(), "[[ $1 == --version ]] && exec $REAL \"$@\"\nexit 0");
    s.write_config(&format!("{}{}", s.head(), job(&db, &["local"], &format!("bin_dir = \"{}\"", bin.display()))));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("empty dump"), "{r:?}");
    assert!(s.fs_files().is_empty());

    let s = Scratch::new();
    let bin = fake_bin(s.dir.path(), "echo 'pg_dump (PostgreSQL) 9.6.24'");
    s.write_config(&format!("{}{}", s.head(), job(&db, &["local"], &format!("bin_dir = \"{}\"", bin.display()))));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("9.6.24") && r.stderr.contains("older than the server's 15."), "{r:?}");
    assert!(r.stderr.contains("postgresql-client-15"), "{r:?}");
    drop_db(&db);
}

#[test]
fn s3_down_mid_upload_is_a_partial_backup() {
    let db = unique("s3down");
    create_sample_db(&db, 1000);
    psql(
        &db,
        "CREATE TABLE noise AS SELECT i, md5(random()::text) || md5(random()::text) AS a FROM generate_series(1, 200000) i",
    );
    let proxy = CuttingProxy::start(&endpoint("DRCTL_TEST_S3_ENDPOINT"), 4 << 20);
    let s = Scratch::new();
    let s3 = s.s3_target("s3", Some(&proxy.url()));
    s.write_config(&format!("{}{}{}", s.head(), s3, job(&db, &["local", "s3"], "")));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 3, "{r:?}");
    let id = r.stdout.trim().to_string();
    assert!(r.stderr.contains("target `s3` has no copy"), "{r:?}");
    assert!(s.fs_files().iter().any(|f| f.ends_with(&format!("{id}.manifest.json"))));
    let list = list_json(&s);
    assert_eq!(list[0]["status"], "partial");
    assert_eq!(list[0]["targets"], serde_json::json!(["local"]));

    // seen through the real endpoint, the S3 target holds no committed backup
    let direct = Scratch::new();
    let real = s3.replace(&proxy.url(), &endpoint("DRCTL_TEST_S3_ENDPOINT"));
    direct.write_config(&format!("{}{}{}", direct.head(), real, job(&db, &["s3"], "")));
    let r = run(direct.drctl().args(["--json", "catalog", "rebuild"]));
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["backups"], 0, "{r:?}");

    // the complete copy restores
    let dest = format!("{db}_r");
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&dest, "noise"), 200000);
    drop_db(&dest);
    drop_db(&db);
}

#[test]
fn a_damaged_copy_is_refused_and_the_next_target_used() {
    let db = unique("corrupt");
    create_sample_db(&db, 500);
    let s = Scratch::new();
    let second = format!("[targets.second]\ntype = \"fs\"\npath = \"{}\"\n\n", s.path("second").display());
    s.write_config(&format!("{}{}{}", s.head(), second, job(&db, &["local", "second"], "")));
    let id = backup_id(&run(s.drctl().args(["run", "pg"])));
    let artifact = s.fs_files().into_iter().find(|f| f.ends_with(".zst.age")).unwrap();
    let flip = |root: &Path| {
        let p = root.join(&artifact);
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&p, bytes).unwrap();
    };
    flip(&s.path("backups"));

    let dest = format!("{db}_r");
    let r = run(s.drctl().args(["restore", "pg", "--id", &id, "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 0, "{r:?}");
    // found damaged while restoring (read once), rolled back, and the next target read
    assert!(r.stderr.contains("skipped") && r.stderr.contains("damaged or truncated"), "{r:?}");
    assert!(r.stderr.contains("from target `second`"), "{r:?}");
    assert_eq!(count(&dest, "users"), 500);
    drop_db(&dest);

    flip(&s.path("second"));
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("damaged or truncated"), "{r:?}");
    assert!(!db_exists(&dest), "nothing was restored from a damaged copy");
    let leftovers = psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname LIKE '{dest}%'"));
    assert_eq!(leftovers, "0", "no temporary database is left");
    drop_db(&db);
}

#[test]
fn truncated_copy_and_wrong_identity_are_clear_errors() {
    let db = unique("keys");
    create_sample_db(&db, 200);
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job(&db, &["local"], "")));
    backup_id(&run(s.drctl().args(["run", "pg"])));
    let dest = format!("{db}_r");

    // an identity that is not a recipient of the backup
    let other = run(drctl_bare().args(["keygen", "--output"]).arg(s.path("other.key")));
    assert_eq!(other.code, 0);
    let cfg = std::fs::read_to_string(s.config_path()).unwrap();
    std::fs::write(s.config_path(), cfg.replace("age.key", "other.key")).unwrap();
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("none of the configured identities can decrypt it"), "{r:?}");
    assert!(r.stderr.contains("identity_file"), "the hint names the setting: {r:?}");
    let chk = run(s.drctl().args(["check"]));
    assert!(chk.stdout.contains("matches none of the 1 recipient(s)"), "{chk:?}");
    std::fs::write(s.config_path(), cfg).unwrap();

    // a truncated object
    let artifact = s.path("backups").join(s.fs_files().into_iter().find(|f| f.ends_with(".zst.age")).unwrap());
    let len = std::fs::metadata(&artifact).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&artifact).unwrap().set_len(len - 100).unwrap();
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("size is") || r.stderr.contains("missing or of the wrong size"), "{r:?}");
    assert!(!db_exists(&dest));
    drop_db(&db);
}

#[test]
fn a_fresh_machine_restores_from_the_targets_alone() {
    let db = unique("fresh");
    create_sample_db(&db, 300);
    let s = Scratch::new();
    s.write_config(&format!("{}{}{}", s.head(), s.s3_target("s3", None), job(&db, &["local", "s3"], "")));
    let id = backup_id(&run(s.drctl().args(["run", "pg"])));

    // same config, but the catalog is gone (a new machine)
    std::fs::remove_file(s.path("catalog.db")).unwrap();
    let dest = format!("{db}_r");
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&id), "{r:?}");
    assert_eq!(count(&dest, "orders"), 900);

    let r = run(s.drctl().args(["--json", "catalog", "rebuild"]));
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((v["backups"].as_u64(), v["copies"].as_u64()), (Some(1), Some(2)), "{r:?}");
    let list = list_json(&s);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["targets"], serde_json::json!(["local", "s3"]));
    drop_db(&dest);
    drop_db(&db);
}

#[test]
fn artifacts_decrypt_with_age_and_decompress_with_zstd_into_a_pg_restore_archive() {
    let db = unique("interop");
    create_sample_db(&db, 100);
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job(&db, &["local"], "")));
    backup_id(&run(s.drctl().args(["run", "pg"])));
    let artifact = s.path("backups").join(s.fs_files().into_iter().find(|f| f.ends_with(".zst.age")).unwrap());
    let dump = s.path("plain.dump");
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; age -d -i {} {} | zstd -d -q -c > {}",
            s.path("age.key").display(),
            artifact.display(),
            dump.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "age | zstd failed");
    let out = std::process::Command::new(pg_bin().join("pg_restore")).arg("--list").arg(&dump).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let toc = String::from_utf8_lossy(&out.stdout);
    assert!(toc.contains("TABLE DATA public users"), "{toc}");

    // --output FILE gives the same bytes
    let via = s.path("via-drctl.dump");
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--output"]).arg(&via));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(&via).unwrap(), std::fs::read(&dump).unwrap());
    drop_db(&db);
}

#[test]
fn secrets_never_reach_output_manifests_or_the_catalog() {
    let db = unique("secret");
    create_sample_db(&db, 50);
    let s = Scratch::new();
    let pw = "Pg-Sup3r-S3cret-pw";
    let url = pg_url(&db).replace("postgres@", &format!("postgres:{pw}@"));
    let s3 = s.s3_target("s3", None);
    let s3_secret = endpoint("DRCTL_TEST_S3_SECRET_KEY");
    let s3 = s3.replace(&format!("\"{s3_secret}\""), "\"${DRCTL_TEST_SECRET_FROM_ENV}\"");
    s.write_config(&format!(
        "{}{}[jobs.pg]\nkind = \"postgres\"\ntargets = [\"local\", \"s3\"]\nurl = \"{url}\"\n",
        s.head(),
        s3
    ));
    let with_env = |c: &mut std::process::Command| {
        c.env("DRCTL_TEST_SECRET_FROM_ENV", &s3_secret);
    };
    let mut outputs = String::new();
    for args in [
        vec!["-vv", "run", "pg"],
        vec!["--json", "-vv", "run", "pg"],
        vec!["--json", "list"],
        vec!["--json", "check"],
        vec!["check"],
        vec!["--json", "restore", "pg", "--latest", "--dry-run", "--force"],
    ] {
        let mut c = s.drctl();
        c.args(&args);
        with_env(&mut c);
        let r = run(&mut c);
        assert!(r.code == 0, "{args:?}: {r:?}");
        outputs.push_str(&r.stdout);
        outputs.push_str(&r.stderr);
    }
    // an error path that would naturally mention the URL
    let mut c = s.drctl();
    c.args(["restore", "pg", "--latest", "--to", &format!("postgres://postgres:{pw}@127.0.0.1:1/x")]);
    with_env(&mut c);
    let r = run(&mut c);
    assert_eq!(r.code, 1, "{r:?}");
    outputs.push_str(&r.stderr);

    for file in s.fs_files() {
        outputs.push_str(&String::from_utf8_lossy(&std::fs::read(s.path("backups").join(file)).unwrap()));
    }
    outputs.push_str(&String::from_utf8_lossy(&std::fs::read(s.path("catalog.db")).unwrap_or_default()));
    assert!(outputs.contains("postgres://postgres@127.0.0.1"), "URLs are shown, without their password");
    assert!(!outputs.contains(pw), "the postgres password leaked");
    assert!(!outputs.contains(&s3_secret), "the S3 secret leaked");
    drop_db(&db);
}
