//! End to end: `storage = "chunked"` for the stream kinds, against the real servers: a PostgreSQL
//! dump (whose unchanged tables deduplicate across days, and whose 1 % of changed rows in one region
//! of a table store little), a Redis RDB that `redis-check-rdb` accepts after the round trip, and an
//! OpenBao raft snapshot that `tar` lists.

mod common;
#[path = "common/openbao.rs"]
mod openbao;

use std::process::Command;

use common::*;

fn chunked_head(s: &Scratch) -> String {
    s.with_chunk_key(&s.head())
}

fn backup(s: &Scratch, job: &str) -> serde_json::Value {
    let r = run(s.drctl().args(["run", job]));
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.stdout.trim().to_string();
    let f = s.fs_files().into_iter().find(|f| f.ends_with(&format!("{id}.manifest.json"))).unwrap();
    serde_json::from_slice(&std::fs::read(s.path("backups").join(f)).unwrap()).unwrap()
}

#[test]
fn a_postgres_dump_in_chunks_round_trips_and_stores_little_for_a_small_change() {
    let db = unique("chunkpg");
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\""));
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    // ~40 MB of dump in two tables
    psql(
        &db,
        "CREATE TABLE events (id int primary key, payload text) WITH (autovacuum_enabled = false);
         INSERT INTO events SELECT i, md5(i::text) || repeat(md5((i*7)::text), 4) FROM generate_series(1, 200000) i;
         CREATE TABLE users (id int primary key, name text);
         INSERT INTO users SELECT i, 'user ' || md5(i::text) FROM generate_series(1, 100000) i;",
    );
    let s = Scratch::new();
    s.write_config(&format!(
        "{}[jobs.pg]\nkind = \"postgres\"\nstorage = \"chunked\"\ntargets = [\"local\"]\nurl = \"{}\"\n",
        chunked_head(&s),
        pg_url(&db)
    ));
    let first = backup(&s, "pg");
    assert_eq!(first["version"], 2);
    let first_added = added(&first);
    assert!(first_added > 10_000_000, "{first_added}");
    let unchanged = backup(&s, "pg");
    assert!(added(&unchanged) < first_added / 10, "unchanged database: {} of {first_added}", added(&unchanged));
    // 1 % of the rows deleted in one region, 1 % added: CDC finds the rest again. (An UPDATE, or
    // short rows after a vacuum, land wherever pages have room, scattered over the end of the
    // table: measured here 7 of 23 chunks new. Autovacuum is off and the new rows are longer than
    // any page's leftover space, so that they are appended and the test measures CDC alone.)
    psql(&db, "DELETE FROM events WHERE id BETWEEN 100000 AND 101999");
    psql(
        &db,
        "INSERT INTO events SELECT i, 'new ' || i || repeat(md5(i::text), 10) FROM generate_series(200001, 202000) i",
    );
    let changed = backup(&s, "pg");
    // three places changed (the header's timestamp, the deleted range, the appended rows): each
    // costs the chunk it falls in (two for the deleted range if it straddles a cut) and, at most,
    // the next one while the cut points find their place again: 7 at worst. Counted in chunks:
    // their sizes depend on the chunk key (new every run; measured 3 to 5 of 22 to 30 chunks, 12 to
    // 37 % of the bytes: a few chunks near the 4 MiB maximum are a third of this dump).
    let new_chunks: u64 =
        changed["artifacts"].as_array().unwrap().iter().filter_map(|a| a["chunked"]["added_chunks"].as_u64()).sum();
    let all_chunks: u64 =
        changed["artifacts"].as_array().unwrap().iter().filter_map(|a| a["chunked"]["chunk_count"].as_u64()).sum();
    eprintln!(
        "1 % of rows changed: {new_chunks} of {all_chunks} chunks new, {} of {first_added} bytes",
        added(&changed)
    );
    assert!(new_chunks <= 7, "1 % of rows changed: {new_chunks} of {all_chunks} chunks new");
    assert!(added(&changed) < first_added / 2, "1 % of rows changed: {} of {first_added}", added(&changed));
    let dest = format!("{db}_back");
    let r = run(s.drctl().args(["restore", "pg", "--latest", "--to", &pg_url(&dest)]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(&dest, "events"), 200000);
    assert_eq!(count(&dest, "users"), 100000);
    assert_eq!(psql(&dest, "SELECT count(*) FROM events WHERE id BETWEEN 100000 AND 101999"), "0");
    assert!(psql(&dest, "SELECT payload FROM events WHERE id = 202000").starts_with("new 202000"));
    // the drill restores from chunks too
    let r = run(s.drctl().args(["verify", "pg"]));
    assert_eq!(r.code, 0, "{r:?}");
    drop_db(&dest);
    drop_db(&db);
}

#[test]
fn a_redis_rdb_in_chunks_round_trips_into_a_file_redis_check_rdb_accepts() {
    let url = endpoint("DRCTL_TEST_REDIS_URL");
    let s = Scratch::new();
    s.write_config(&format!(
        "{}[jobs.cache]\nkind = \"redis\"\nstorage = \"chunked\"\ntargets = [\"local\"]\nurl = \"{url}\"\n",
        chunked_head(&s)
    ));
    let m = backup(&s, "cache");
    assert!(m["artifacts"][0]["chunked"]["chunk_count"].as_u64().unwrap() >= 1);
    let file = s.path("back.rdb");
    let r = run(s.drctl().args(["restore", "cache", "--latest", "--output"]).arg(&file));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), m["artifacts"][0]["plaintext"]["size"].as_u64().unwrap());
    let out = Command::new("redis-check-rdb").arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("RDB looks OK"), "{text}");
    let r = run(s.drctl().args(["verify", "cache"]));
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn an_openbao_snapshot_in_chunks_round_trips_into_the_snapshot_tar() {
    let bao = openbao::Bao::shared();
    let s = Scratch::new();
    let token = s.path("vault_token");
    std::fs::write(&token, format!("{}\n", bao.token)).unwrap();
    let ca = bao.ca.as_ref().map(|c| format!("ca_file = \"{}\"\n", c.display())).unwrap_or_default();
    s.write_config(&format!(
        "{}[jobs.vault]\nkind = \"vault\"\nstorage = \"chunked\"\ntargets = [\"local\"]\naddress = \"{}\"\n{ca}token_file = \"{}\"\n",
        chunked_head(&s),
        bao.addr,
        token.display()
    ));
    let m = backup(&s, "vault");
    let out = s.path("vault.snap");
    let r = run(s.drctl().args(["restore", "vault", "--latest", "--output"]).arg(&out));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), m["artifacts"][0]["plaintext"]["size"].as_u64().unwrap());
    let listed = Command::new("tar").arg("-tzf").arg(&out).output().unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_string).collect();
    assert_eq!(names, ["meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"]);
    let r = run(s.drctl().args(["verify", "vault"]));
    assert_eq!(r.code, 0, "{r:?}");
}
