//! `drctl init` (issue 18): from an empty directory to a first backup and a restore, in the
//! three commands README's quick start gives, for a volume and for a PostgreSQL job (the real test
//! server). And it never overwrites.

mod common;

use common::*;

fn init(dir: &std::path::Path, args: &[&str]) -> Ran {
    run(drctl_bare().arg("init").arg("--dir").arg(dir).args(args))
}

fn with_config(dir: &std::path::Path) -> std::process::Command {
    let mut c = drctl_bare();
    c.arg("--config").arg(dir.join("drctl.toml")).env("DRCTL_STATE_DIR", dir.join("state"));
    c
}

#[test]
fn init_then_run_then_restore_a_volume_in_a_fresh_directory() {
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/file.txt"), "first backup\n").unwrap();
    let dir = s.path("setup");

    let r = init(&dir, &["--kind", "volume", "--path", data.to_str().unwrap()]);
    assert_eq!(r.code, 0, "init, then its check: {r:?}");
    for f in ["drctl.toml", "jobs/volume.toml", "age.key", "chunk.key"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("age.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the identity is private");

    let r = run(with_config(&dir).args(["run", "volume"]));
    assert_eq!(r.code, 0, "{r:?}");
    let out = s.path("restored");
    let r = run(with_config(&dir).args(["restore", "volume", "--latest", "--to-dir"]).arg(&out));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read_to_string(out.join("sub/file.txt")).unwrap(), "first backup\n");

    // never overwrites, and writes nothing then
    let before = std::fs::read_to_string(dir.join("drctl.toml")).unwrap();
    let r = init(&dir, &["--kind", "redis", "--url", "redis://127.0.0.1:1"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("never overwrites"), "{r:?}");
    assert_eq!(std::fs::read_to_string(dir.join("drctl.toml")).unwrap(), before);
    assert!(!dir.join("jobs/redis.toml").exists());
}

#[test]
fn init_a_postgres_job_with_a_given_recipient_backs_up_the_real_server() {
    let s = Scratch::new();
    let db = unique("init");
    create_sample_db(&db, 50);
    let dir = s.path("setup");
    let recipient = s.recipient.clone();
    let r = init(
        &dir,
        &["--kind", "postgres", "--name", "app", "--url", &pg_url(&db), "--recipient", &recipient, "--no-check"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!dir.join("age.key").exists(), "a given recipient: no identity on the backup host");
    let config = std::fs::read_to_string(dir.join("drctl.toml")).unwrap();
    assert!(config.contains(&recipient), "{config}");
    // the test server's tools
    let job = dir.join("jobs/app.toml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, format!("{text}bin_dir = \"{}\"\n", pg_bin().display())).unwrap();
    let r = run(with_config(&dir).args(["run", "app"]));
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(with_config(&dir).args(["list", "app", "--json"]));
    assert!(r.stdout.contains("\"ok\""), "{r:?}");
    drop_db(&db);
}
