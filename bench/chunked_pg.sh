#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# bench/chunked_pg.sh - a PostgreSQL dump in storage = "chunked" against the pg_dump floor, restic and
# borg, in one run: a first backup, one after 1 % of the rows were updated in one region of the table,
# one after another 1 % were updated scattered over the whole table; wall time (median of
# BENCH_REPEAT), peak RSS and stored growth of each backup as a share of the first one.
#
#   bench/chunked_pg.sh                        # ~1 GB database (plus a release build)
#   BENCH_SCALE=0.2 BENCH_REPEAT=1 bench/chunked_pg.sh   # quick look
#
# Every tool backs up the same `pg_dump -Fc -Z0` stream (drctl runs it itself; restic reads it with
# `backup --stdin`, borg with `create -`), each into a fresh repository every round; the database is
# copied from a template every round so that every round sees the same changes. The floor is
# `pg_dump -Fc -Z0 > /dev/null` of the same state, measured in the same round.
#
# env knobs: BENCH_SCALE (GB, default 1; ~9.8 M rows per GB), BENCH_REPEAT (3), BENCH_DIR (/tmp; needs
# ~6x the scale free), BENCH_PG_PORT (55436), BENCH_KEEP=1, BENCH_PEERS=0 (skip restic and borg),
# SKIP_INSTALL=1, CARGO_TARGET_DIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LOG_TAG=bench
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck source=../scripts/lib/pg.sh
. "$ROOT/scripts/lib/pg.sh"

SCALE=${BENCH_SCALE:-1}
REPEAT=${BENCH_REPEAT:-3}
ROWS=$(awk -v s="$SCALE" 'BEGIN { printf "%d", s * 9800000 }')
PORT=${BENCH_PG_PORT:-55436}
PEERS=${BENCH_PEERS:-1}
bench_workdir drctl-chunked-pg
chmod 0711 "$D" # user postgres must reach $D/pg
# shellcheck disable=SC2317 # invoked by the trap
stop_pg() {
  local rc=$?
  pg_stop "$D/pg.pid" 2>/dev/null || true
  (exit "$rc")
  bench_cleanup
}
trap stop_pg EXIT

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  step "installing what is missing (PostgreSQL 15, age, time, restic, borg)"
  SERVICES=postgres DRCTL_SERVICES_DIR="$D/services" "$ROOT/scripts/services.sh" install
  pkgs=(time)
  [[ "$PEERS" == 1 ]] && pkgs+=(restic borgbackup)
  APT_LOG="$D/apt.log" apt_ensure "${pkgs[@]}"
fi
peers_env

build_drctl

step "starting a throwaway PostgreSQL on 127.0.0.1:$PORT"
pg_start "$D/pg" "$PORT" "$D/pg.pid" || die "could not start PostgreSQL"
step "template database with $ROWS rows"
pg_psql "$PORT" postgres -c 'create database tpl'
# fixed timestamps: the same bytes in every round
pg_psql "$PORT" tpl -c "create table t as
  select i, md5(i::text) a, md5((i * 7)::text) b, timestamptz '2026-01-01' + i * interval '1 second' ts
  from generate_series(1, $ROWS) i"
pg_psql "$PORT" tpl -c 'alter table t add primary key (i)'
pg_psql "$PORT" tpl -c 'vacuum analyze t'
SRC=$(pg_url "$PORT" bench)
PGD="$PG_BIN/pg_dump"
DUMP_BYTES=$("$PGD" -Fc -Z0 -d "$(pg_url "$PORT" tpl)" | wc -c)

bench_keys
config_head "$D/drctl.toml" "$D/catalog.db" "$D/store" bench <<TOML
kind = "postgres"
storage = "chunked"
targets = ["local"]
url = "$SRC"
TOML
export DRCTL_STATE_DIR="$D/state"
size_of() { if [[ -e "$1" ]]; then du -sb "$1" | cut -f1; else echo 0; fi; }
# "drctl restic borg" stored sizes, for the growth of each backup
sizes() { echo "$(size_of "$D/store") $(size_of "$D/restic") $(size_of "$D/borg")"; }

# backups PHASE: the floor and every tool's backup of the database as it is now
backups() {
  measure "floor-$1" bash -c "'$PGD' -Fc -Z0 -d '$SRC' > /dev/null"
  measure "drctl-$1" "$DRCTL" --config "$D/drctl.toml" run bench
  if [[ "$PEERS" == 1 ]]; then
    measure "restic-$1" bash -c "set -o pipefail; '$PGD' -Fc -Z0 -d '$SRC' | restic -q -r '$D/restic' backup --stdin --stdin-filename bench.dump"
    measure "borg-$1" bash -c "set -o pipefail; '$PGD' -Fc -Z0 -d '$SRC' | borg create --compression zstd,3 '$D/borg::$1' -"
  fi
}

for i in $(seq 1 "$REPEAT"); do
  step "round $i/$REPEAT"
  rm -rf "$D/store" "$D/state" "$D/catalog.db" "$D/restic" "$D/borg" "$D/borg-base"
  pg_psql "$PORT" postgres -c 'drop database if exists bench' -c 'create database bench template tpl'
  if [[ "$PEERS" == 1 ]]; then
    restic init -q -r "$D/restic" >/dev/null
    borg init -e repokey-blake2 "$D/borg" >/dev/null 2>&1
  fi
  backups first
  s1=$(sizes)
  # 1 % of the rows, one region (an UPDATE writes the new row versions where PostgreSQL finds room)
  pg_psql "$PORT" bench -c "update t set a = md5(a) where i between $((ROWS / 2)) and $((ROWS / 2 + ROWS / 100))"
  backups region
  s2=$(sizes)
  # another 1 %, scattered: every 100th row
  pg_psql "$PORT" bench -c "update t set b = md5(b) where i % 100 = 0"
  backups scattered
  s3=$(sizes)
  echo "$s1 $s2 $s3" >>"$D/stored"
done

step "results: median of $REPEAT rounds, $(nproc) cores, $ROWS rows, a $((DUMP_BYTES / 1048576)) MiB dump (pg_dump -Fc -Z0)"
m() { result "$1" wall; }
for phase in first region scattered; do
  floor=$(m "floor-$phase")
  printf '%-18s %7ss\n' "floor-$phase" "$floor"
  for tool in drctl restic borg; do
    [[ -n "$(m "$tool-$phase")" ]] || continue
    printf '%-18s %7ss  %5.2fx pg_dump floor   peak RSS %6s KiB\n' "$tool-$phase" "$(m "$tool-$phase")" \
      "$(awk -v a="$(m "$tool-$phase")" -v b="$floor" 'BEGIN { print a / b }')" "$(result "$tool-$phase" rss)"
  done
done
echo "stored (last round): first backup, then growth of each later backup as a share of it"
tail -1 "$D/stored" | while read -r d1 r1 b1 d2 r2 b2 d3 r3 b3; do
  for row in "drctl $d1 $d2 $d3" "restic $r1 $r2 $r3" "borg $b1 $b2 $b3"; do
    read -r tool a b c <<<"$row"
    ((a > 0)) || continue
    awk -v t="$tool" -v a="$a" -v b="$b" -v c="$c" 'BEGIN {
      printf "  %-7s first %d bytes; 1 %% in one region +%d bytes (%.1f %%); 1 %% scattered +%d bytes (%.1f %%)\n",
        t, a, b - a, 100 * (b - a) / a, c - b, 100 * (c - b) / a }'
  done
done
