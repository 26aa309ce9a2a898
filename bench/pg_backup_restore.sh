#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# bench/pg_backup_restore.sh - PostgreSQL backup/restore benchmark: drctl against the plain
# `pg_dump | zstd | age` pipeline and `pg_restore`, side by side in one run on one throwaway server.
#
# It installs what is missing (PostgreSQL 15, age, zstd, time), builds a release drctl, starts a
# throwaway PostgreSQL on 127.0.0.1:$BENCH_PG_PORT in a temp dir, fills database `bench` with
# ~BENCH_SCALE GB of rows, then times (with /usr/bin/time: wall seconds and peak RSS):
#   baseline backup   pg_dump -Fc -Z0 | zstd -3 -T0 | age -r RECIPIENT > file
#   drctl backup      drctl --config C run bench                 (fs target in the temp dir)
#   baseline restore  createdb + pg_restore -d NEWDB1 plain.dump (uncompressed dump made beforehand)
#   drctl restore     drctl --config C restore bench --latest --to postgres://…/NEWDB2
# and prints a table with the ratios drctl/baseline and drctl's peak RSS, checked against the
# targets: backup ratio <= 1.00, restore ratio <= 1.10, peak RSS < 128 MiB. See bench/README.md.
#
# env knobs:
#   BENCH_SCALE=1     database size in GB, roughly (0.1 = ~100 MB for a quick run)
#   BENCH_ROWS        row count (overrides BENCH_SCALE; ~9.8 million rows per GB)
#   BENCH_PG_PORT     port of the throwaway PostgreSQL (default 55434)
#   BENCH_REPEAT      rounds per measurement; the median counts (default 3)
#   BENCH_DIR         parent of the temp dir (default /tmp); needs ~5x the database size free
#   BENCH_KEEP=1      keep the temp dir (dumps, backups, config, PostgreSQL log) afterwards
#   BENCH_STRICT=1    exit 1 when a target is missed (default: report only, exit 0)
#   SKIP_INSTALL=1    do not apt-get install anything
#   CARGO_TARGET_DIR  honoured when locating the built binary
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
ROWS=${BENCH_ROWS:-$(awk -v s="$SCALE" 'BEGIN { printf "%d", s * 9800000 }')}
PORT=${BENCH_PG_PORT:-55434}
BACKUP_TARGET=1.00
RESTORE_TARGET=1.10
RSS_TARGET_MIB=128

mkdir -p "${BENCH_DIR:-/tmp}"
D=$(mktemp -d "${BENCH_DIR:-/tmp}/drctl-bench.XXXXXX")
chmod 0711 "$D" # user postgres must reach $D/pg

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local rc=$?
  pg_stop "$D/pg.pid" 2>/dev/null || true
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
    log "kept $D (BENCH_KEEP=1)"
  else
    rm -rf "$D"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n==> %s\n' "$*"; }

# timed NAME CMD... : run CMD under /usr/bin/time; sets T_WALL (s) and T_RSS_KIB; CMD's stdout is kept in
# $D/NAME.out and shown
timed() {
  local name=$1
  shift
  /usr/bin/time -f '%e %M' -o "$D/$name.time" "$@" >"$D/$name.out" || die "$name failed (exit $?)"
  cat "$D/$name.out"
  read -r T_WALL T_RSS_KIB <"$D/$name.time"
  printf '%s: %ss wall, peak RSS %s KiB\n' "$name" "$T_WALL" "$T_RSS_KIB"
}

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  step "installing what is missing (PostgreSQL 15, age, zstd, time)"
  SERVICES=postgres DRCTL_SERVICES_DIR="$D/services" "$ROOT/scripts/services.sh" install
  APT_LOG="$D/apt.log" apt_ensure time
fi

step "building drctl (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet)
DRCTL="${CARGO_TARGET_DIR:-$ROOT/target}/release/drctl"
[[ -x "$DRCTL" ]] || die "$DRCTL not found after cargo build --release"

step "starting a throwaway PostgreSQL on 127.0.0.1:$PORT (in $D/pg)"
pg_start "$D/pg" "$PORT" "$D/pg.pid" || die "could not start PostgreSQL"

step "creating database bench with $ROWS rows"
pg_psql "$PORT" postgres -c 'create database bench'
pg_psql "$PORT" bench -c "create table t as
  select i, md5(i::text) a, md5((i * 7)::text) b, now() ts from generate_series(1, $ROWS) i"
pg_psql "$PORT" bench -c 'vacuum analyze t'
DB_BYTES=$(pg_psql "$PORT" bench -At -c "select pg_database_size('bench')")
printf 'pg_database_size(bench) = %s bytes (%s MiB)\n' "$DB_BYTES" "$((DB_BYTES / 1048576))"
avail_kib=$(df -Pk "$D" | awk 'NR == 2 { print $4 }')
if ((avail_kib * 1024 < DB_BYTES * 4)); then
  log "warning: only $((avail_kib / 1024)) MiB free in $D, the run needs about 4x the database size"
fi

step "keys (age-keygen; the same identity serves the baseline and drctl)"
age-keygen -o "$D/age.key" 2>/dev/null
RECIPIENT=$(age-keygen -y "$D/age.key")
echo "recipient: $RECIPIENT"
cat >"$D/drctl.toml" <<EOF
[catalog]
url = "sqlite://$D/catalog.db"

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$D/age.key"

[targets.local]
type = "fs"
path = "$D/backups"
medium = "disk"

[jobs.bench]
kind = "postgres"
targets = ["local"]
url = "$(pg_url "$PORT" bench)"

# the same job with planner row estimates instead of exact counts in the dump's snapshot
[jobs.bench_estimate]
kind = "postgres"
targets = ["local"]
url = "$(pg_url "$PORT" bench)"
row_counts = "estimate"
EOF

SRC_URL=$(pg_url "$PORT" bench)
step "untimed: plain dump for the baseline restore (also warms the page cache for both backups)"
"$PG_BIN/pg_dump" -Fc -Z0 -d "$SRC_URL" -f "$D/plain.dump"
ls -l "$D/plain.dump"

# Each measurement runs REPEAT times, baseline and drctl alternating, and the median counts: on a
# small shared machine a single run is easily off by 20 %.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
max() { printf '%s\n' "$@" | sort -g | tail -n1; }
BB=() DB=() DE=() BR=() DR=() RSS=()
src_rows=$(pg_psql "$PORT" bench -At -c 'select count(*) from t')
check_rows() {
  local n
  n=$(pg_psql "$PORT" "$1" -At -c 'select count(*) from t')
  printf '%-24s %s rows (source: %s)\n' "$1" "$n" "$src_rows"
  [[ "$n" == "$src_rows" ]] || die "$1 has $n rows, the source has $src_rows"
}
for i in $(seq 1 "$REPEAT"); do
  step "round $i/$REPEAT: baseline backup: pg_dump -Fc -Z0 | zstd -3 -T0 | age"
  # shellcheck disable=SC2016 # expanded by the inner bash
  timed baseline_backup bash -c 'set -o pipefail; "$1" -Fc -Z0 -d "$2" | zstd -3 -T0 -q | age -r "$3" >"$4"' \
    _ "$PG_BIN/pg_dump" "$SRC_URL" "$RECIPIENT" "$D/baseline.dump.zst.age"
  BB+=("$T_WALL")

  step "round $i/$REPEAT: drctl backup: drctl run bench"
  timed drctl_backup "$DRCTL" --config "$D/drctl.toml" run bench
  DB+=("$T_WALL")
  RSS+=("$T_RSS_KIB")

  step "round $i/$REPEAT: drctl backup with row_counts = \"estimate\": drctl run bench_estimate"
  timed drctl_backup_estimate "$DRCTL" --config "$D/drctl.toml" run bench_estimate
  DE+=("$T_WALL")

  step "round $i/$REPEAT: baseline restore: createdb + pg_restore"
  # shellcheck disable=SC2016
  timed baseline_restore bash -c '"$1/createdb" -h 127.0.0.1 -p "$2" -U postgres "$5" &&
    "$1/pg_restore" -d "$3" "$4"' _ "$PG_BIN" "$PORT" "$(pg_url "$PORT" "rb_$i")" "$D/plain.dump" "rb_$i"
  BR+=("$T_WALL")

  step "round $i/$REPEAT: drctl restore: drctl restore bench --latest"
  timed drctl_restore "$DRCTL" --config "$D/drctl.toml" restore bench --latest --to "$(pg_url "$PORT" "rd_$i")"
  DR+=("$T_WALL")
  RSS+=("$T_RSS_KIB")

  check_rows "rb_$i"
  check_rows "rd_$i"
  pg_psql "$PORT" postgres -q -c "drop database rb_$i" -c "drop database rd_$i"
done
printf 'baseline backup file: %s bytes; drctl backups dir (%s backups): %s bytes\n' \
  "$(stat -c %s "$D/baseline.dump.zst.age")" "$((REPEAT * 2))" "$(du -sb "$D/backups" | cut -f1)"
BB_WALL=$(median "${BB[@]}") DB_WALL=$(median "${DB[@]}") DE_WALL=$(median "${DE[@]}")
BR_WALL=$(median "${BR[@]}") DR_WALL=$(median "${DR[@]}")
DB_RSS=$(max "${RSS[@]}") DR_RSS=$DB_RSS
printf 'all rounds (s): baseline backup %s | drctl backup %s | estimate %s | baseline restore %s | drctl restore %s\n' \
  "${BB[*]}" "${DB[*]}" "${DE[*]}" "${BR[*]}" "${DR[*]}"

# ---------------------------------------------------------------- report
fails=0
# verdict VALUE OP LIMIT -> PASS or FAIL (OP is <= or <)
verdict() {
  if awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { exit !((op == "<=") ? v <= l : v < l) }'; then
    echo PASS
  else
    echo FAIL
  fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
RSS_MIB=$(awk -v a="$DB_RSS" -v b="$DR_RSS" 'BEGIN { printf "%.1f", ((a > b) ? a : b) / 1024 }')
B_RATIO=$(ratio "$DB_WALL" "$BB_WALL")
R_RATIO=$(ratio "$DR_WALL" "$BR_WALL")
B_RES=$(verdict "$B_RATIO" '<=' "$BACKUP_TARGET")
R_RES=$(verdict "$R_RATIO" '<=' "$RESTORE_TARGET")
M_RES=$(verdict "$RSS_MIB" '<' "$RSS_TARGET_MIB")
for r in "$B_RES" "$R_RES" "$M_RES"; do [[ "$r" == PASS ]] || fails=$((fails + 1)); done

step "results (median of $REPEAT rounds): $ROWS rows, database $((DB_BYTES / 1048576)) MiB, $(nproc) cores"
printf '%-16s %12s %10s %8s %12s  %s\n' measure baseline_s drctl_s ratio target result
printf '%-16s %12s %10s %8s %12s  %s\n' backup "$BB_WALL" "$DB_WALL" "$B_RATIO" "<= $BACKUP_TARGET" "$B_RES"
printf '%-16s %12s %10s %8s %12s  %s\n' "backup (estimate)" "$BB_WALL" "$DE_WALL" "$(ratio "$DE_WALL" "$BB_WALL")" "-" "(info: row_counts = estimate)"
printf '%-16s %12s %10s %8s %12s  %s\n' restore "$BR_WALL" "$DR_WALL" "$R_RATIO" "<= $RESTORE_TARGET" "$R_RES"
printf '%-16s %12s %10s %8s %12s  %s\n' "drctl peak RSS" - "$RSS_MIB MiB" - "< $RSS_TARGET_MIB MiB" "$M_RES"

if ((fails)); then
  echo "$fails target(s) missed"
  [[ "${BENCH_STRICT:-0}" != 1 ]] || exit 1
else
  echo "all targets met"
fi
