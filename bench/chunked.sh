#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# bench/chunked.sh - storage = "chunked" against the tar floor, stream storage, restic and borg, on
# the tree of bench/make_tree.py, in one run (plus `tar | zstd -3 -T0 | age` and back: what
# compressing and encrypting every byte costs with the reference CLIs): first backup, second backup of the unchanged tree, one
# with 1 % of the small files changed, and restore; wall time (median of BENCH_REPEAT), peak RSS,
# stored growth. The files cache (drctl's, restic's parent snapshot, borg's) is cold for the first
# backup and warm for the others. restic and borg encrypt (repokey / password) and compress
# (restic auto, borg zstd,3) as they would here; each gets a fresh repository every round.
#
#   bench/chunked.sh                     # ~1 GB tree (plus a release build)
#   BENCH_SCALE=0.3 bench/chunked.sh     # quick check
#
# env knobs: BENCH_SCALE (GB, default 1), BENCH_REPEAT (3), BENCH_DIR (/tmp; needs ~6x the scale
# free), BENCH_KEEP=1, BENCH_PEERS=0 (skip restic and borg), SKIP_INSTALL=1, CARGO_TARGET_DIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LOG_TAG=bench
# shellcheck source=lib.sh
. "$HERE/lib.sh"

SCALE=${BENCH_SCALE:-1}
REPEAT=${BENCH_REPEAT:-3}
bench_workdir drctl-chunked
size_of() { du -sb "$1" | cut -f1; }
# the stored sizes of the restic and borg repositories ("0 0" without them)
peer_sizes() {
  if [[ "$PEERS" == 1 ]]; then echo "$(size_of "$D/restic") $(size_of "$D/borg")"; else echo "0 0"; fi
}

PEERS=${BENCH_PEERS:-1}
if [[ "$PEERS" == 1 && "${SKIP_INSTALL:-0}" != 1 ]]; then
  step "installing what is missing (time, restic, borg)"
  APT_LOG="$D/apt.log" apt_ensure time restic borgbackup
fi
peers_env
build_drctl
step "tree: generating ~$SCALE GB"
python3 "$HERE/make_tree.py" "$D/tree" "$SCALE"
TREE_MIB=$(($(size_of "$D/tree") / 1048576))
TREE_FILES=$(find "$D/tree" -type f | wc -l)
bench_keys
config() { # config STORAGE TARGET_DIR
  config_head "$D/drctl-$1.toml" "$D/catalog-$1.db" "$2" tree <<TOML
kind = "volume"
storage = "$1"
targets = ["local"]
path = "$D/tree"
TOML
}
config chunked "$D/store-chunked"
config stream "$D/store-stream"
export DRCTL_STATE_DIR="$D/state"
tar -C "$D" -cf "$D/plain.tar" tree
# files whose content changes in the "1 %" case: every 100th small file
mapfile -t SMALL < <(find "$D/tree" -type f -size -8k | sort | awk 'NR % 100 == 0')

for i in $(seq 1 "$REPEAT"); do
  step "round $i/$REPEAT"
  rm -rf "$D/store-chunked" "$D/state" "$D/restic" "$D/borg" "$D/borg-base"
  if [[ "$PEERS" == 1 ]]; then
    restic init -q -r "$D/restic" >/dev/null
    borg init -e repokey-blake2 "$D/borg" >/dev/null 2>&1
  fi
  measure floor-tar-cf bash -c "tar -C '$D' -cf - tree | cat > /dev/null"
  # what compressing and encrypting every byte costs with the reference CLIs on every core
  measure glue-zstd-age bash -c "set -o pipefail; tar -C '$D' -cf - tree | zstd -3 -T0 -q | age -r $RECIPIENT > '$D/glue.tar.zst.age'"
  measure stream-backup "$DRCTL" --config "$D/drctl-stream.toml" run tree
  measure chunked-first "$DRCTL" --config "$D/drctl-chunked.toml" run tree
  if [[ "$PEERS" == 1 ]]; then
    measure restic-first restic -q -r "$D/restic" backup "$D/tree"
    measure borg-first borg create --compression zstd,3 "$D/borg::a" "$D/tree"
  fi
  first=$(size_of "$D/store-chunked")
  peers_first="$(peer_sizes)"
  measure chunked-unchanged "$DRCTL" --config "$D/drctl-chunked.toml" run tree
  if [[ "$PEERS" == 1 ]]; then
    measure restic-unchanged restic -q -r "$D/restic" backup "$D/tree"
    measure borg-unchanged borg create --compression zstd,3 "$D/borg::b" "$D/tree"
  fi
  second=$(size_of "$D/store-chunked")
  peers_second="$(peer_sizes)"
  for f in "${SMALL[@]}"; do echo "changed in round $i" >>"$f"; done
  measure chunked-1pct-small "$DRCTL" --config "$D/drctl-chunked.toml" run tree
  if [[ "$PEERS" == 1 ]]; then
    measure restic-1pct-small restic -q -r "$D/restic" backup "$D/tree"
    measure borg-1pct-small borg create --compression zstd,3 "$D/borg::c" "$D/tree"
  fi
  third=$(size_of "$D/store-chunked")
  peers_third="$(peer_sizes)"
  echo "chunked $first $((second - first)) $((third - second))" >>"$D/stored"
  if [[ "$PEERS" == 1 ]]; then
    read -r rf bf <<<"$peers_first"
    read -r rs bs <<<"$peers_second"
    read -r rt bt <<<"$peers_third"
    echo "restic $rf $((rs - rf)) $((rt - rs))" >>"$D/stored"
    echo "borg $bf $((bs - bf)) $((bt - bs))" >>"$D/stored"
  fi
  rm -rf "$D/out" && mkdir "$D/out"
  measure floor-tar-x tar -C "$D/out" -xf "$D/plain.tar"
  rm -rf "$D/out"
  measure chunked-restore "$DRCTL" --config "$D/drctl-chunked.toml" restore tree --latest --to-dir "$D/out"
  rm -rf "$D/out" && mkdir "$D/out"
  measure glue-restore bash -c "set -o pipefail; age -d -i '$D/age.key' '$D/glue.tar.zst.age' | zstd -d -q | tar -C '$D/out' -xf -"
  rm -rf "$D/out"
  if [[ "$PEERS" == 1 ]]; then
    mkdir "$D/out"
    measure restic-restore restic -q -r "$D/restic" restore latest --target "$D/out"
    rm -rf "$D/out" && mkdir "$D/out"
    measure borg-restore bash -c "cd '$D/out' && borg extract '$D/borg::c'"
    rm -rf "$D/out"
  fi
done

step "results: median of $REPEAT rounds, $(nproc) cores, tree $TREE_MIB MiB in $TREE_FILES files"
m() { result "$1" wall; }
rss() { result "$1" rss; }
floor_c=$(m floor-tar-cf)
floor_x=$(m floor-tar-x)
for n in floor-tar-cf glue-zstd-age stream-backup chunked-first restic-first borg-first chunked-unchanged restic-unchanged \
  borg-unchanged chunked-1pct-small restic-1pct-small borg-1pct-small; do
  [[ -n "$(m "$n")" ]] || continue
  printf '%-20s %7ss  %5.2fx tar -cf floor   peak RSS %6s KiB\n' "$n" "$(m "$n")" "$(awk -v a="$(m "$n")" -v b="$floor_c" 'BEGIN { print a / b }')" "$(rss "$n")"
done
for n in floor-tar-x glue-restore chunked-restore restic-restore borg-restore; do
  [[ -n "$(m "$n")" ]] || continue
  printf '%-20s %7ss  %5.2fx tar -x floor    peak RSS %6s KiB\n' "$n" "$(m "$n")" "$(awk -v a="$(m "$n")" -v b="$floor_x" 'BEGIN { print a / b }')" "$(rss "$n")"
done
echo "stored (last round; stream storage: $(($(size_of "$D/store-stream") / REPEAT)) bytes per backup):"
for tool in chunked restic borg; do
  { grep "^$tool " "$D/stored" || true; } | tail -1 | while read -r _ first growth2 growth3; do
    printf '  %-8s first %d bytes; unchanged +%d bytes; 1 %% of small files changed (%d files) +%d bytes\n' \
      "$tool" "$first" "$growth2" "${#SMALL[@]}" "$growth3"
  done
done
