//! End to end against the real PostgreSQL: exact row counts taken from the dump stream (no second
//! scan of any table), and the parallel restore (a new database swapped in by rename).

mod common;

use common::*;

fn job(db: &str, extra: &str) -> String {
    format!("[jobs.pg]\nkind = \"postgres\"\ntargets = [\"local\"]\nurl = \"{}\"\n{extra}\n", pg_url(db))
}

/// Tables whose rows are awkward to count from a `COPY` stream: values with newlines, tabs and
/// backslashes, inheritance (a parent's `count(*)` includes its children), partitions, an
/// unlogged and an empty table, a table in another schema with a quoted name.
fn create_awkward_db(db: &str) {
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    psql(
        db,
        "CREATE TABLE notes (id int primary key, body text);
         INSERT INTO notes SELECT i, 'line one' || chr(10) || 'line two' || chr(9) || 'tab \\ slash ' || i FROM generate_series(1, 3000) i;
         INSERT INTO notes VALUES (0, NULL), (-1, '');
         CREATE TABLE animals (name text);
         CREATE TABLE dogs (breed text) INHERITS (animals);
         INSERT INTO animals VALUES ('generic');
         INSERT INTO dogs SELECT 'dog ' || i, 'breed' FROM generate_series(1, 40) i;
         CREATE TABLE events (at date, what text) PARTITION BY RANGE (at);
         CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         INSERT INTO events SELECT '2025-06-01'::date + (i % 400), 'e' || i FROM generate_series(1, 999) i;
         CREATE UNLOGGED TABLE scratch AS SELECT i FROM generate_series(1, 77) i;
         CREATE TABLE empty (x int);
         CREATE SCHEMA \"Other\";
         CREATE TABLE \"Other\".\"Mixed Case\" AS SELECT i, md5(i::text) FROM generate_series(1, 123) i;
         CREATE INDEX notes_body ON notes (body);
         CREATE SEQUENCE counter START 5; SELECT nextval('counter'), nextval('counter');",
    );
}

/// Every ordinary table's `count(*)`, as drills count them.
fn counts(db: &str) -> Vec<(String, i64)> {
    let out = psql(
        db,
        "SELECT string_agg(n.nspname || '.' || c.relname, ',' ORDER BY 1) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
    );
    let mut v: Vec<(String, i64)> = out
        .split(',')
        .map(|t| {
            let (schema, name) = t.split_once('.').unwrap();
            let n = psql(db, &format!("SELECT count(*) FROM \"{schema}\".\"{name}\"")).parse().unwrap();
            (t.to_string(), n)
        })
        .collect();
    v.sort();
    v
}

fn manifest_counts(s: &Scratch) -> Vec<(String, i64)> {
    let files = s.fs_files();
    let path = s.path("backups").join(files.iter().find(|f| f.ends_with(".manifest.json")).unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let db = &m["facts"]["databases"][0];
    assert_eq!(db["row_counts"], "exact");
    let mut v: Vec<(String, i64)> = db["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (format!("{}.{}", t["schema"].as_str().unwrap(), t["name"].as_str().unwrap()), t["rows"].as_i64().unwrap())
        })
        .collect();
    v.sort();
    v
}

/// Sequential scans of the database's tables so far, once no other session is connected to it
/// (a backend's statistics are flushed when it exits).
fn seq_scans(db: &str) -> i64 {
    let gone = psql(
        "postgres",
        &format!(
            "DO $$ BEGIN
               FOR i IN 1..600 LOOP
                 EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = '{db}');
                 PERFORM pg_sleep(0.05);
               END LOOP;
             END $$; SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"
        ),
    );
    assert_eq!(gone, "0", "sessions on {db} did not end");
    psql(db, "SELECT pg_stat_clear_snapshot(); SELECT COALESCE(sum(seq_scan), 0) FROM pg_stat_user_tables")
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn exact_row_counts_come_from_the_dump_stream_without_a_second_scan() {
    let db = unique("rows");
    create_awkward_db(&db);
    let expected = counts(&db);
    assert!(expected.iter().any(|(t, n)| t == "public.animals" && *n == 41), "{expected:?}");
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job(&db, "")));

    let before = seq_scans(&db);
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");
    let after = seq_scans(&db);
    assert_eq!(manifest_counts(&s), expected, "the manifest's counts are count(*) in the dump's snapshot");
    assert!(!r.stderr.contains("counting with SQL"), "{r:?}");
    // pg_dump's COPY reads each table with data once (the partitioned parent holds none);
    // a count(*) per table would read each a second time
    let with_data = expected.len() as i64;
    assert_eq!(after - before, with_data, "one sequential scan per table: pg_dump's own");

    // the restore's drill-style comparison agrees
    let dest = format!("{db}_back");
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(counts(&dest), expected);
    drop_db(&dest);
    drop_db(&db);
}
