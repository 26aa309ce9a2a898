#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# bench/pitr.sh - point-in-time recovery figures on one throwaway PostgreSQL 15 cluster: how far the
# WAL archive trails the server (the data a lost server takes with it) and how long a recovery takes.
#
# It builds a release drctl, starts a cluster on 127.0.0.1:$BENCH_PG_PORT in a temp dir, fills it with
# `pgbench -i -s $BENCH_PGBENCH_SCALE`, runs `drctl wal stream` beside it, takes a base backup
# (`drctl run`), then runs `pgbench` for $BENCH_LOAD_SECONDS while sampling, every second, how many
# bytes of WAL the server has written that are not yet on the target. After the load it measures
#   archive delay   seconds from the last commit until the archive holds it (bounded by wal.max_delay)
#   recovery time   `drctl verify`: base backup restored into a scratch server that replays every
#                   archived segment until it is writable (the drill's restore_seconds)
# and prints them with the WAL volume and the replay rate. See bench/README.md.
#
# env knobs:
#   BENCH_PGBENCH_SCALE=20   pgbench scale (~15 MB per unit)
#   BENCH_LOAD_SECONDS=30    pgbench run after the base backup (the WAL to replay)
#   BENCH_MAX_DELAY=10s      the job's wal.max_delay
#   BENCH_PG_PORT=55435      port of the throwaway cluster
#   BENCH_DIR=/tmp           parent of the temp dir
#   BENCH_KEEP=1             keep the temp dir afterwards
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LOG_TAG=bench-pitr
# shellcheck source=../scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=../scripts/lib/pg.sh
. "$ROOT/scripts/lib/pg.sh"

SCALE=${BENCH_PGBENCH_SCALE:-20}
LOAD=${BENCH_LOAD_SECONDS:-30}
MAX_DELAY=${BENCH_MAX_DELAY:-10s}
PORT=${BENCH_PG_PORT:-55435}

(cd "$ROOT" && cargo build --release --quiet)
DRCTL=${CARGO_TARGET_DIR:-$ROOT/target}/release/drctl

TMP=$(mktemp -d "${BENCH_DIR:-/tmp}/drctl-pitr.XXXXXX")
chmod 0711 "$TMP"
RECEIVER=
cleanup() {
  [[ -n "$RECEIVER" ]] && kill "$RECEIVER" 2>/dev/null && wait "$RECEIVER" 2>/dev/null
  pg_stop "$TMP/pg.pid" || true
  [[ "${BENCH_KEEP:-}" == 1 ]] && log "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

pg_start "$TMP/pg" "$PORT" "$TMP/pg.pid"
log "pgbench -i -s $SCALE"
"$PG_BIN/pgbench" -q -i -s "$SCALE" -h 127.0.0.1 -p "$PORT" -U postgres postgres >"$TMP/pgbench-init.log" 2>&1
RECIPIENT=$("$DRCTL" keygen --output "$TMP/age.key")
cat >"$TMP/drctl.toml" <<TOML
[catalog]
url = "sqlite://$TMP/catalog.db"
[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$TMP/age.key"
[targets.local]
type = "fs"
path = "$TMP/backups"
[jobs.bench]
kind = "postgres"
method = "physical"
url = "$(pg_url "$PORT")"
targets = ["local"]
wal = { max_delay = "$MAX_DELAY" }
verify = { checks = ["SELECT count(*) > 0 FROM pgbench_accounts"] }
TOML
export DRCTL_CONFIG=$TMP/drctl.toml
"$DRCTL" -q wal stream bench 2>"$TMP/receiver.log" &
RECEIVER=$!

sql() { pg_psql "$PORT" postgres -Atc "$1"; }

# whether the archive holds WAL up to LSN $1
archived() {
  local name off f o
  IFS='|' read -r name off < <(sql "SELECT file_name, file_offset FROM pg_walfile_name_offset('$1')")
  [[ -f "$TMP/backups/bench/wal/${name:0:8}/$name.zst.age" ]] && return 0
  for f in "$TMP/backups/bench/wal/${name:0:8}/$name".*.partial.zst.age; do
    [[ -e "$f" ]] || continue
    o=${f#*"$name".}
    o=${o%%.*}
    ((16#$o >= off)) && return 0
  done
  return 1
}

# bytes written by the server and not yet on the target, from the newest object's name
lag_bytes() {
  local newest reach name rest
  newest=$(find "$TMP/backups/bench/wal" -name '*.zst.age' -printf '%f\n' 2>/dev/null | sort | tail -n1)
  [[ -n "$newest" ]] || { echo 0; return; }
  name=${newest:0:24}
  rest=${newest:25}
  # segment start: log * 4 GiB + seg * 16 MiB
  local start=$(( 16#${name:8:8} * 4294967296 + 16#${name:16:8} * 16777216 ))
  if [[ "$rest" == *partial* ]]; then
    reach=$(( start + 16#${rest%%.*} ))
  else
    reach=$(( start + 16777216 ))
  fi
  sql "SELECT greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') - $reach, 0)::bigint"
}

log "base backup"
START=$SECONDS
"$DRCTL" -q run bench >/dev/null
BASE_S=$((SECONDS - START))
BASE_LSN=$(sql "SELECT pg_current_wal_lsn()")

log "pgbench for ${LOAD}s, sampling the archive's lag every second"
"$PG_BIN/pgbench" -c 2 -j 2 -T "$LOAD" -h 127.0.0.1 -p "$PORT" -U postgres postgres >"$TMP/pgbench.log" 2>&1 &
LOADER=$!
MAX_LAG=0
while kill -0 "$LOADER" 2>/dev/null; do
  l=$(lag_bytes)
  ((l > MAX_LAG)) && MAX_LAG=$l
  sleep 1
done
wait "$LOADER"
END_LSN=$(sql "SELECT pg_current_wal_insert_lsn()")
T0=$(date +%s.%N)
wait_for "the archive to reach $END_LSN" 600 archived "$END_LSN"
DELAY=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
WAL_MB=$(sql "SELECT round(pg_wal_lsn_diff('$END_LSN', '$BASE_LSN') / 1048576.0)")

log "drill: base backup + every archived segment replayed in a scratch server"
"$DRCTL" --json verify bench >"$TMP/verify.json"
RECOVERY=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r=r[0] if isinstance(r,list) else r; r=r.get("record",r); print("%.1f" % r["restore_seconds"], r["status"])' "$TMP/verify.json")
BASE_MB=$(du -sm "$TMP/backups/bench/20"* | awk '{ s += $1 } END { print s }')

printf '\n%-44s %s\n' "pgbench scale / load" "$SCALE / ${LOAD}s (2 clients)"
printf '%-44s %s s, %s MiB stored\n' "base backup" "$BASE_S" "$BASE_MB"
printf '%-44s %s MiB\n' "WAL written after the base backup" "$WAL_MB"
printf '%-44s %s MiB\n' "largest archive lag during the load" "$(awk -v b="$MAX_LAG" 'BEGIN { printf "%.1f", b / 1048576 }')"
printf '%-44s %s s (wal.max_delay %s)\n' "archive delay after the last commit" "$DELAY" "$MAX_DELAY"
printf '%-44s %s s (drill %s)\n' "recovery time (restore + replay to writable)" "${RECOVERY% *}" "${RECOVERY#* }"
