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
                 PERFORM pg_sleep(0.05); PERFORM pg_stat_clear_snapshot();
               END LOOP;
             END $$; SELECT pg_stat_clear_snapshot(); SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"
        ),
    );
    assert_eq!(gone.lines().last().unwrap_or_default(), "0", "sessions on {db} did not end");
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

fn databases_like(pattern: &str) -> String {
    psql("postgres", &format!("SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE '{pattern}'"))
}

#[test]
fn parallel_restore_replaces_the_database_by_rename_and_keeps_its_settings() {
    let db = unique("swap");
    create_awkward_db(&db);
    let role = format!("{db}_reader");
    psql("postgres", &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role}"));
    psql(
        "postgres",
        &format!(
            "ALTER DATABASE {db} SET work_mem = '7MB'; ALTER DATABASE {db} CONNECTION LIMIT 50;
             COMMENT ON DATABASE {db} IS 'the db''s comment';
             REVOKE CONNECT ON DATABASE {db} FROM PUBLIC; GRANT CONNECT ON DATABASE {db} TO {role};
             ALTER ROLE {role} IN DATABASE {db} SET statement_timeout = '5s'"
        ),
    );
    let expected = counts(&db);
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job(&db, "")));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");

    // the live database moves on, and a session stays connected to it
    psql(
        &db,
        "INSERT INTO notes VALUES (100000, 'after the backup'); CREATE TABLE extra (x int); SELECT setval('counter', 99)",
    );
    let mut session = std::process::Command::new(pg_bin().join("psql"))
        .args(["-X", "-q", "-d", &pg_url(&db)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(std::fs::File::create(s.path("session.err")).unwrap()))
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = session.stdin.as_mut().unwrap();
        writeln!(stdin, "BEGIN; SELECT count(*) FROM notes;").unwrap();
        stdin.flush().unwrap();
    }
    let shown = psql(
        "postgres",
        &format!(
            "DO $$ BEGIN FOR i IN 1..400 LOOP EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = '{db}'); PERFORM pg_sleep(0.05); PERFORM pg_stat_clear_snapshot(); END LOOP; END $$;
             SELECT pg_stat_clear_snapshot(); SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"
        ),
    );
    assert_eq!(
        shown.lines().last().unwrap_or_default(),
        "1",
        "the session is connected: {:?} {}",
        session.try_wait(),
        std::fs::read_to_string(s.path("session.err")).unwrap_or_default()
    );

    let r = run(s.drctl().args(["-v", "restore", "pg", "--latest", "--force", "--jobs", "2"]));
    let _ = session.kill();
    let _ = session.wait();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("parallel restore: 2 COPY streams into new database"), "{r:?}");
    assert!(r.stderr.contains("ended 1 session(s)"), "{r:?}");
    assert!(!r.stderr.contains("not applied again"), "{r:?}");

    // the backup's data, and only it
    assert_eq!(counts(&db), expected);
    assert_eq!(
        psql(&db, "SELECT count(*) FROM pg_class WHERE relname = 'extra'"),
        "0",
        "the whole database is replaced"
    );
    assert_eq!(psql(&db, "SELECT nextval('counter')"), "7", "sequence values come back");
    assert_eq!(psql(&db, "SELECT count(*) FROM pg_indexes WHERE indexname IN ('notes_body', 'notes_pkey')"), "2");
    assert_eq!(
        psql(&db, "SELECT body FROM notes WHERE id = 7"),
        "line one\nline two\ttab \\ slash 7",
        "newlines, tabs and backslashes survive the split"
    );
    // the database-level settings that live outside the dump
    let settings = psql(
        "postgres",
        &format!(
            "SELECT d.datconnlimit || '|' || shobj_description(d.oid, 'pg_database') || '|' || d.datacl::text || '|' ||
                    (SELECT string_agg(COALESCE(r.rolname, '*') || ':' || array_to_string(s.setconfig, ','), ';' ORDER BY 1)
                     FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid)
             FROM pg_database d WHERE d.datname = '{db}'"
        ),
    );
    assert!(settings.starts_with("50|the db's comment|"), "{settings}");
    assert!(settings.contains(&format!("{role}=c/")), "{settings}");
    assert!(!settings.contains("=Tc/"), "PUBLIC's default grants stay revoked: {settings}");
    assert!(settings.contains("*:work_mem=7MB"), "{settings}");
    assert!(settings.contains(&format!("{role}:statement_timeout=5s")), "{settings}");
    assert_eq!(databases_like(&format!("{db}_drctl_%")), "", "no temporary or replaced database is left");

    drop_db(&db);
    psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
}

#[test]
fn a_damaged_copy_leaves_the_old_database_and_nothing_else() {
    let db = unique("pdamaged");
    create_awkward_db(&db);
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job(&db, "")));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");
    psql(&db, "INSERT INTO notes VALUES (100000, 'after the backup')");
    let expected = counts(&db);
    let artifact = s.path("backups").join(s.fs_files().into_iter().find(|f| f.ends_with(".dump.zst.age")).unwrap());
    let mut bytes = std::fs::read(&artifact).unwrap();
    let at = bytes.len() * 3 / 4;
    bytes[at] ^= 0x40;
    std::fs::write(&artifact, bytes).unwrap();

    let r = run(s.drctl().args(["restore", "pg", "--latest", "--force", "--jobs", "2"]));
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(counts(&db), expected, "the old database is untouched");
    assert_eq!(databases_like(&format!("{db}_drctl_%")), "", "the new database was dropped");
    drop_db(&db);
}

#[test]
fn without_createdb_or_with_large_objects_the_restore_is_one_stream_and_says_why() {
    let db = unique("pfallback");
    create_awkward_db(&db);
    psql(&db, "SELECT lo_from_bytea(0, 'a large object')");
    let s = Scratch::new();
    s.write_config(&format!("{}{}", s.head(), job(&db, "")));
    let r = run(s.drctl().args(["run", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(manifest_counts(&s), counts(&db), "large objects between the tables do not disturb the counts");

    // large objects: only pg_restore loads them; still into a new database, swapped in
    let dest = format!("{db}_lo");
    let r = run(s.drctl().args(["-v", "restore", "pg", "--latest", "--to", &pg_url(&dest), "--jobs", "2"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("parallel restore not possible (the archive holds BLOBS data"), "{r:?}");
    assert_eq!(psql(&dest, "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata"), "a large object");
    assert_eq!(counts(&dest), counts(&db));
    drop_db(&dest);

    // a role that may not create databases: in place, in one transaction
    let role = format!("{db}_plain");
    let target = format!("{db}_plain_db");
    psql("postgres", &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"));
    psql("postgres", &format!("CREATE DATABASE {target} OWNER {role}"));
    let url = pg_url(&target).replacen("postgres@", &format!("{role}@"), 1);
    let r = run(s.drctl().args(["-v", "restore", "pg", "--latest", "--to", &url, "--no-owner", "--dry-run"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("not in parallel: the role may not create databases (CREATEDB)"), "{r:?}");
    drop_db(&target);
    psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
    drop_db(&db);
}

#[test]
fn a_restore_reads_each_stored_object_once() {
    use common::faults::SwitchProxy;
    let db = unique("once");
    create_awkward_db(&db);
    // incompressible rows, so the stored object is large next to the requests around it
    psql(
        &db,
        "CREATE TABLE noise AS SELECT i, md5(random()::text) || md5(random()::text) AS a FROM generate_series(1, 60000) i",
    );
    let s = Scratch::new();
    let proxy = SwitchProxy::start(&endpoint("DRCTL_TEST_S3_ENDPOINT"));
    let target = s.s3_target("s3", Some(&proxy.url()));
    s.write_config(&format!(
        "{}{}[jobs.pg]\nkind = \"postgres\"\ntargets = [\"s3\"]\nurl = \"{}\"\n",
        s.head(),
        target,
        pg_url(&db)
    ));
    let r = run(s.drctl().args(["--json", "run", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");
    let list: serde_json::Value = serde_json::from_str(&run(s.drctl().args(["--json", "list", "pg"])).stdout).unwrap();
    let stored = list[0]["stored_bytes"].as_u64().unwrap_or_else(|| panic!("{list}"));
    assert!(stored > 1_500_000, "{stored}");

    let before = proxy.served();
    let dest = format!("{db}_once");
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 0, "{r:?}");
    let read = proxy.served() - before;
    assert!(
        read < stored + stored / 4,
        "the restore read {read} bytes from S3 for {stored} stored bytes: the object was read more than once"
    );
    assert_eq!(counts(&dest), counts(&db));
    drop_db(&dest);
    drop_db(&db);
}
