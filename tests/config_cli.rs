//! Configuration errors and CLI contract details that need no service.

mod common;

use common::*;

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

#[test]
fn every_config_problem_is_reported_with_file_line_and_key() {
    let s = Scratch::new();
    let text = format!(
        "{}[targets.bad]\ntype = \"s4\"\n\n[jobs.pg]\nkind = \"postgres\"\ntargets = [\"local\"]\nurl = \"postgres://x@h/db\"\nurll = \"typo\"\n\n\
         [jobs.pg2]\nkind = \"postgres\"\ntargets = [\n  \"local\",\n  \"nope\",\n]\nurl = \"postgres://x@h/db\"\n",
        s.head()
    );
    s.write_config(&text);
    std::fs::create_dir(s.path("jobs")).unwrap();
    std::fs::write(
        s.path("jobs/other.toml"),
        "kind = \"postgres\"\ntargets = [\"local\"]\nurl = \"${DRCTL_TEST_SURELY_UNSET}\"\n",
    )
    .unwrap();
    let r = run(s.drctl().args(["check"]));
    assert_eq!(r.code, 2, "{r:?}");
    let cfg = s.config_path().display().to_string();
    let expect = [
        format!(
            "{cfg}:{}: error: `targets.bad.type`: unknown variant `s4`, expected one of `fs`, `s3`, `sftp`, `webdav`",
            line_of(&text, "\"s4\"")
        ),
        format!("{cfg}:{}: error: `jobs.pg.urll`: unknown field `urll`", line_of(&text, "urll")),
        format!("{cfg}:{}: error: `jobs.pg2.targets[1]`: unknown target `nope`", line_of(&text, "\"nope\"")),
        "jobs/other.toml:3: error: `jobs.other.url`: environment variable `DRCTL_TEST_SURELY_UNSET` is not set"
            .to_string(),
        "drctl: configuration is invalid: 4 errors (and 1 warning)".to_string(),
    ];
    for e in expect {
        assert!(r.stderr.contains(&e), "missing `{e}` in {r:?}");
    }
}

#[test]
fn json_errors_and_exit_codes() {
    let s = Scratch::new();
    s.write_config("[catalog\n");
    let r = run(s.drctl().args(["--json", "list"]));
    assert_eq!(r.code, 2, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["error"]["exit_code"], 2);
    assert_eq!(v["error"]["problems"][0]["line"], 1);

    s.write_config(&s.head());
    let r = run(s.drctl().args(["run", "nosuchjob"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("unknown job `nosuchjob`"), "{r:?}");
    let r = run(s.drctl().args(["restore", "x"]));
    assert_eq!(r.code, 2, "missing selector is a usage error: {r:?}");
    // the daemon binds its API before it schedules anything: a bad address is a config error
    s.write_config(&format!("{}[api]\nlisten = \"256.0.0.1:1\"\n", s.head()));
    let r = run(s.drctl().args(["daemon"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("cannot listen on `256.0.0.1:1`"), "{r:?}");
    assert!(r.stderr.contains("api.listen"), "{r:?}");
}

#[test]
fn keygen_writes_a_private_identity_and_prints_its_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let r = run(drctl_bare().args(["keygen", "--output"]).arg(&key));
    assert_eq!(r.code, 0, "{r:?}");
    let recipient = r.stdout.trim();
    assert!(recipient.starts_with("age1"), "{r:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // the reference tool agrees on the public key
    let out = std::process::Command::new("age-keygen").arg("-y").arg(&key).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), recipient);
    let again = run(drctl_bare().args(["keygen", "--output"]).arg(&key));
    assert_eq!(again.code, 1, "never overwrites a key: {again:?}");
}
