#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# bench/peers.sh - drctl against the floors, the shell glue, restic and borg: backup and restore of a
# PostgreSQL database and of a file tree, on the same data, interleaved round by round, in one run.
#
#   bench/peers.sh                      # ~1 GB database and ~1 GB tree (plus a release build)
#   BENCH_SCALE=0.2 bench/peers.sh      # quick check
#
# For each case every tool runs once per round, in the same order, BENCH_REPEAT rounds (default 3);
# the report gives the median wall time, its ratio to the case's floor, the peak RSS (GNU time %M: the
# process and the children it waited for) and the bytes stored. See bench/README.md.
#
# env knobs: BENCH_SCALE (GB, default 1), BENCH_REPEAT (3), BENCH_PG_PORT (55435), BENCH_DIR (/tmp;
# needs ~8x the scale free), BENCH_KEEP=1, BENCH_ONLY=pg|tree, SKIP_INSTALL=1, CARGO_TARGET_DIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LOG_TAG=bench
# shellcheck source=../scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=../scripts/lib/pg.sh
. "$ROOT/scripts/lib/pg.sh"

SCALE=${BENCH_SCALE:-1}
REPEAT=${BENCH_REPEAT:-3}
PORT=${BENCH_PG_PORT:-55435}
ONLY=${BENCH_ONLY:-}
ROWS=$(awk -v s="$SCALE" 'BEGIN { printf "%d", s * 9800000 }')

mkdir -p "${BENCH_DIR:-/tmp}"
D=$(mktemp -d "${BENCH_DIR:-/tmp}/drctl-peers.XXXXXX")
chmod 0711 "$D"

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local rc=$?
  pg_stop "$D/pg.pid" 2>/dev/null || true
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "kept $D (BENCH_KEEP=1)"; else rm -rf "$D"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n==> %s\n' "$*"; }

# measure CASE TOOL CMD... : run CMD under GNU time, append "CASE TOOL wall rss_kib" to the results
measure() {
  local case=$1 tool=$2
  shift 2
  /usr/bin/time -f '%e %M' -o "$D/time.out" "$@" >"$D/cmd.out" 2>"$D/cmd.err" || {
    cat "$D/cmd.err" >&2
    die "$case/$tool failed"
  }
  read -r wall rss <"$D/time.out"
  printf '%-14s %-22s %8ss %8s KiB\n' "$case" "$tool" "$wall" "$rss"
  echo "$case $tool $wall $rss" >>"$D/results"
}
# stored CASE TOOL BYTES
stored() { echo "$1 $2 $3" >>"$D/stored"; }
size_of() { du -sb "$1" | cut -f1; }

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  step "installing what is missing (PostgreSQL 15, age, zstd, time, restic, borg)"
  SERVICES=postgres DRCTL_SERVICES_DIR="$D/services" "$ROOT/scripts/services.sh" install
  APT_LOG="$D/apt.log" apt_ensure time restic borgbackup python3
fi
step "building drctl (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet)
DRCTL="${CARGO_TARGET_DIR:-$ROOT/target}/release/drctl"
[[ -x "$DRCTL" ]] || die "$DRCTL not found"

age-keygen -o "$D/age.key" 2>/dev/null
RECIPIENT=$(age-keygen -y "$D/age.key")
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR="$D/borg-base"
cat >"$D/drctl.toml" <<EOF
[catalog]
url = "sqlite://$D/catalog.db"
[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$D/age.key"
[targets.local]
type = "fs"
path = "$D/drctl"
medium = "disk"
EOF

fresh_repos() {
  rm -rf "$D/restic" "$D/borg"
  restic init -q -r "$D/restic" >/dev/null
  borg init -e repokey-blake2 "$D/borg" >/dev/null 2>&1
}

# ---------------------------------------------------------------- PostgreSQL
if [[ -z "$ONLY" || "$ONLY" == pg ]]; then
  step "PostgreSQL: throwaway server on 127.0.0.1:$PORT, database bench with $ROWS rows"
  pg_start "$D/pg" "$PORT" "$D/pg.pid" || die "could not start PostgreSQL"
  pg_psql "$PORT" postgres -q -c 'create database bench'
  pg_psql "$PORT" bench -q -c "create table t as
    select i, md5(i::text) a, md5((i * 7)::text) b, now() ts from generate_series(1, $ROWS) i" \
    -c 'alter table t add primary key (i)' -c 'vacuum analyze t'
  SRC=$(pg_url "$PORT" bench)
  cat >>"$D/drctl.toml" <<EOF
[jobs.bench]
kind = "postgres"
targets = ["local"]
url = "$SRC"
EOF
  "$PG_BIN/pg_dump" -Fc -Z0 -d "$SRC" -f "$D/plain.dump"
  src_rows=$(pg_psql "$PORT" bench -At -c 'select count(*) from t')
  DB_MIB=$(($(pg_psql "$PORT" bench -At -c "select pg_database_size('bench')") / 1048576))
  fresh() { "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$1"; }
  gone() {
    [[ "$(pg_psql "$PORT" "$1" -At -c 'select count(*) from t')" == "$src_rows" ]] || die "$1: wrong row count"
    pg_psql "$PORT" postgres -q -c "drop database $1"
  }
  PGD="$PG_BIN/pg_dump" PGR="$PG_BIN/pg_restore"
  for i in $(seq 1 "$REPEAT"); do
    step "PostgreSQL backup, round $i/$REPEAT"
    measure pg-backup floor bash -c "'$PGD' -Fc -Z0 -d '$SRC' > /dev/null"
    measure pg-backup glue bash -c "set -o pipefail; '$PGD' -Fc -Z0 -d '$SRC' | zstd -3 -T0 -q | age -r $RECIPIENT > '$D/glue.dump.zst.age'"
    measure pg-backup drctl "$DRCTL" --config "$D/drctl.toml" run bench
    # restic and borg get a fresh repository every round: each backup is a first backup (their dedup
    # would make a repeat of the same dump nearly free; that is the dedup issue's bench)
    fresh_repos
    measure pg-backup restic bash -c "set -o pipefail; '$PGD' -Fc -Z0 -d '$SRC' | restic -q -r '$D/restic' backup --stdin --stdin-filename bench.dump"
    measure pg-backup borg bash -c "set -o pipefail; '$PGD' -Fc -Z0 -d '$SRC' | borg create --compression zstd,3 '$D/borg::pg' -"
    step "PostgreSQL restore, round $i/$REPEAT"
    fresh f$i && measure pg-restore floor "$PGR" -d "$(pg_url "$PORT" "f$i")" "$D/plain.dump" && gone "f$i"
    fresh j$i && measure pg-restore "pg_restore -j$(nproc) (file)" "$PGR" -j "$(nproc)" -d "$(pg_url "$PORT" "j$i")" "$D/plain.dump" && gone "j$i"
    fresh g$i && measure pg-restore glue bash -c "set -o pipefail; age -d -i '$D/age.key' '$D/glue.dump.zst.age' | zstd -d -q | '$PGR' -d '$(pg_url "$PORT" "g$i")'" && gone "g$i"
    measure pg-restore drctl "$DRCTL" --config "$D/drctl.toml" restore bench --latest --to "$(pg_url "$PORT" "d$i")" && gone "d$i"
    measure pg-restore "drctl --jobs 1" "$DRCTL" --config "$D/drctl.toml" restore bench --latest --jobs 1 --to "$(pg_url "$PORT" "s$i")" && gone "s$i"
    fresh r$i && measure pg-restore restic bash -c "set -o pipefail; restic -q -r '$D/restic' dump latest bench.dump | '$PGR' -d '$(pg_url "$PORT" "r$i")'" && gone "r$i"
    fresh b$i && measure pg-restore borg bash -c "set -o pipefail; borg extract --stdout '$D/borg::pg' | '$PGR' -d '$(pg_url "$PORT" "b$i")'" && gone "b$i"
  done
  stored pg floor "$(stat -c %s "$D/plain.dump")"
  stored pg glue "$(stat -c %s "$D/glue.dump.zst.age")"
  stored pg drctl "$(($(size_of "$D/drctl") / REPEAT))"
  stored pg restic "$(size_of "$D/restic")"
  stored pg borg "$(size_of "$D/borg")"
  pg_stop "$D/pg.pid"
  rm -rf "$D/drctl" "$D/plain.dump" "$D/glue.dump.zst.age"
fi

# ---------------------------------------------------------------- tree
if [[ -z "$ONLY" || "$ONLY" == tree ]]; then
  step "tree: generating ~$SCALE GB (compressible text, 20 % random, many small files)"
  python3 "$HERE/make_tree.py" "$D/tree" "$SCALE"
  TREE_MIB=$(($(size_of "$D/tree") / 1048576))
  TREE_FILES=$(find "$D/tree" -type f | wc -l)
  cat >>"$D/drctl.toml" <<EOF
[jobs.tree]
kind = "volume"
targets = ["local"]
path = "$D/tree"
EOF
  tar -C "$D" -cf "$D/plain.tar" tree
  for i in $(seq 1 "$REPEAT"); do
    step "tree backup, round $i/$REPEAT"
    measure tree-backup floor bash -c "tar -C '$D' -cf - tree | cat > /dev/null"
    measure tree-backup glue bash -c "set -o pipefail; tar -C '$D' -cf - tree | zstd -3 -T0 -q | age -r $RECIPIENT > '$D/glue.tar.zst.age'"
    measure tree-backup drctl "$DRCTL" --config "$D/drctl.toml" run tree
    fresh_repos
    measure tree-backup restic restic -q -r "$D/restic" backup "$D/tree"
    measure tree-backup borg borg create --compression zstd,3 "$D/borg::tree" "$D/tree"
    step "tree restore, round $i/$REPEAT"
    rm -rf "$D/out" && mkdir "$D/out"
    measure tree-restore floor tar -C "$D/out" -xf "$D/plain.tar" && rm -rf "$D/out" && mkdir "$D/out"
    measure tree-restore glue bash -c "set -o pipefail; age -d -i '$D/age.key' '$D/glue.tar.zst.age' | zstd -d -q | tar -C '$D/out' -xf -" && rm -rf "$D/out"
    measure tree-restore drctl "$DRCTL" --config "$D/drctl.toml" restore tree --latest --to-dir "$D/out" && rm -rf "$D/out" && mkdir "$D/out"
    measure tree-restore restic restic -q -r "$D/restic" restore latest --target "$D/out" && rm -rf "$D/out" && mkdir "$D/out"
    measure tree-restore borg bash -c "cd '$D/out' && borg extract '$D/borg::tree'" && rm -rf "$D/out"
  done
  stored tree floor "$(stat -c %s "$D/plain.tar")"
  stored tree glue "$(stat -c %s "$D/glue.tar.zst.age")"
  stored tree drctl "$(($(size_of "$D/drctl") / REPEAT))"
  stored tree restic "$(size_of "$D/restic")"
  stored tree borg "$(size_of "$D/borg")"
fi

# ---------------------------------------------------------------- report
step "results: median of $REPEAT rounds, $(nproc) cores$([[ -n "${DB_MIB:-}" ]] && echo ", database $DB_MIB MiB")$([[ -n "${TREE_MIB:-}" ]] && echo ", tree $TREE_MIB MiB in $TREE_FILES files")"
python3 - "$D/results" "$D/stored" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
stored = {}
for l in open(sys.argv[2]):
    case, tool, n = l.split()
    stored[(case, tool)] = int(n)
cases, data = [], {}
for r in rows:
    case, tool, wall, rss = r[0], " ".join(r[1:-2]), float(r[-2]), int(r[-1])
    if case not in cases:
        cases.append(case)
    d = data.setdefault(case, {}).setdefault(tool, {"wall": [], "rss": []})
    d["wall"].append(wall)
    d["rss"].append(rss)
print(f"| case | tool | wall s (median) | ratio to floor | peak RSS MiB | stored MiB |")
print(f"|---|---|---:|---:|---:|---:|")
for case in cases:
    floor = statistics.median(data[case]["floor"]["wall"])
    kind = case.split("-")[0]
    for tool, d in data[case].items():
        w = statistics.median(d["wall"])
        s = stored.get((kind, tool)) if case.endswith("backup") else None
        s = f"{s / 1048576:.0f}" if s is not None else ""
        print(f"| {case} | {tool} | {w:.2f} | {w / floor:.2f} | {max(d['rss']) / 1024:.0f} | {s} |")
# the targets of issue 15 (drctl with its defaults, fs target)
targets = {"pg-backup": 1.15, "pg-restore": 0.75, "tree-backup": 2.0, "tree-restore": 1.5}
print()
for case, limit in targets.items():
    if case in data and "drctl" in data[case]:
        r = statistics.median(data[case]["drctl"]["wall"]) / statistics.median(data[case]["floor"]["wall"])
        print(f"target {case}: drctl {r:.2f}x the floor, target <= {limit}: {'PASS' if r <= limit else 'FAIL'}")
rss = max((max(d["drctl"]["rss"]) for d in data.values() if "drctl" in d), default=0) / 1024
print(f"target peak RSS: drctl {rss:.0f} MiB, target <= 64 MiB (fs target): {'PASS' if rss <= 64 else 'FAIL'}")
EOF
