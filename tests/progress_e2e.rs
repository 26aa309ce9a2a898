//! Progress on a terminal (issue 18), the way a user sees it: the real binary under `script`
//! (util-linux), which gives it a pseudo-terminal. A PostgreSQL backup shows bytes and rate
//! without a total it would never reach (the database's size is not its dump's), and a restore
//! says what pg_restore is doing once every byte is in instead of sitting at 100 %.

mod common;

use std::process::Command;

use common::*;

/// Run `drctl ARGS` (with `config`) on a pseudo-terminal; returns (exit code, what the terminal showed).
fn on_a_terminal(config: &std::path::Path, args: &str) -> (i32, String) {
    let cmd = format!("{} --config '{}' {args}", env!("CARGO_BIN_EXE_drctl"), config.display());
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("COLUMNS", "160")
        .env_remove("DRCTL_CONFIG")
        .output()
        .expect("script (util-linux) runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_postgres_backup_shows_no_false_total_and_a_restore_names_its_last_step() {
    let s = Scratch::new();
    let db = unique("progress");
    create_sample_db(&db, 20_000);
    s.write_config(&format!(
        "{}[jobs.pg]\nkind = \"postgres\"\ntargets = [\"local\"]\nurl = \"{}\"\nbin_dir = \"{}\"\n",
        s.head(),
        pg_url(&db),
        pg_bin().display()
    ));
    let (code, screen) = on_a_terminal(&s.config_path(), "run pg");
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("pg ") && screen.contains("B/s"), "bytes and rate on the terminal: {screen}");
    assert!(!screen.contains("eta"), "no total, so no ETA that a dump never reaches: {screen}");

    let target = unique("progress_restored");
    let (code, screen) = on_a_terminal(&s.config_path(), &format!("restore pg --latest --to '{}'", pg_url(&target)));
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("finishing (indexes"), "the post-data step is named: {screen}");
    // the same in one stream (pg_restore reading from drctl)
    let single = unique("progress_single");
    let (code, screen) =
        on_a_terminal(&s.config_path(), &format!("restore pg --latest --jobs 1 --to '{}'", pg_url(&single)));
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("pg_restore") && screen.contains("is finishing (indexes"), "{screen}");
    drop_db(&single);
    drop_db(&db);
    drop_db(&target);
}

#[test]
fn a_volume_backup_shows_a_bar_with_the_tree_counted_first() {
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    // 40 MiB that zstd cannot shrink (the bar counts the tar), and a few small files
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..40 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(data.join("big.bin"), noise).unwrap();
    for i in 0..20 {
        std::fs::write(data.join(format!("f{i}.txt")), format!("{i}\n")).unwrap();
    }
    s.write_config(&format!(
        "{}[jobs.vol]\nkind = \"volume\"\nstorage = \"stream\"\ntargets = [\"local\"]\npath = \"{}\"\n",
        s.head(),
        data.display()
    ));
    let (code, screen) = on_a_terminal(&s.config_path(), "run vol");
    assert_eq!(code, 0, "{screen}");
    // the walk counted 40 MiB of content plus headers: a total the bar reaches
    assert!(screen.contains("/40.0"), "a bar with the tree's size as its total: {screen}");
}
