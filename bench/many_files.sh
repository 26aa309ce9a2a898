#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# bench/many_files.sh - peak memory of chunked backups as a tree and a repository grow (issue 17's
# memory bound: under 128 MiB for a tree of 1 M files and for a 50 GB repository).
#
#   bench/many_files.sh                                   # 1 M files, then a 50 GB repository
#   BENCH_FILES=200000 BENCH_REPO_GB=10 bench/many_files.sh   # quicker
#
# 1. A tree of BENCH_FILES small files (100 B - 2 KiB of text, 1 000 per directory): the first backup
#    (files cache cold: every file read), the second (warm, unchanged: nothing read), peak RSS (GNU time
#    %M) and wall time of each, and the size of the files cache.
# 2. A repository of BENCH_REPO_GB GB: its indexes (one blob entry per 1 MiB chunk, ~4 MiB packs, in
#    indexes of 1 000 packs each, the shape backups write) are written into the target without their
#    packs, then a small tree is backed up against it: the backup loads every index to learn what the
#    target holds, which is what grows with the repository. (The packs are not written: 50 GB of disk
#    and the hours to fill it say nothing more about memory. Such a repository is not restorable: the
#    bench's own directory is removed at the end.)
#
# env knobs: BENCH_FILES (1000000), BENCH_REPO_GB (50), BENCH_DIR (/tmp; the tree needs ~5 GB of
# inodes and blocks at 1 M files), BENCH_KEEP=1, CARGO_TARGET_DIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LOG_TAG=bench
# shellcheck source=lib.sh
. "$HERE/lib.sh"

FILES=${BENCH_FILES:-1000000}
REPO_GB=${BENCH_REPO_GB:-50}
bench_workdir drctl-many

build_drctl
bench_keys
config() { # config NAME TREE STORE
  config_head "$D/$1.toml" "$D/$1.db" "$3" tree <<TOML
kind = "volume"
storage = "chunked"
targets = ["local"]
path = "$2"
TOML
}
export DRCTL_STATE_DIR="$D/state"

step "tree: $FILES files"
python3 - "$D/tree" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 1000:03d}.txt"), "wb") as f:
        f.write(b"%d\n" % i + line * (2 + (i * 7919) % 36))
PY
# a file changed within a second of a walk's start is never cached (coarse file-system clocks: see
# src/jobs/volume/files_cache.rs), so a tree made just now would not be cached at all
sleep 2
config many "$D/tree" "$D/store-many"
measure "first backup (cache cold)" "$DRCTL" --config "$D/many.toml" run tree
measure "second backup (cache warm)" "$DRCTL" --config "$D/many.toml" run tree
CACHE_BYTES=$(find "$D/state/files-cache" -name '*.cache' -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')

step "repository: $REPO_GB GB of indexes"
mkdir -p "$D/small" && echo hello >"$D/small/a.txt"
config repo "$D/small" "$D/store-repo"
measure "small backup (empty repository)" "$DRCTL" --config "$D/repo.toml" run tree
SCOPE=$(basename "$(find "$D/store-repo/chunks" -mindepth 1 -maxdepth 1 -type d)")
python3 - "$D/store-repo/chunks/$SCOPE/index" "$REPO_GB" <<'PY'
import hashlib, json, os, sys
out, gb = sys.argv[1], float(sys.argv[2])
chunks = int(gb * 1024)  # 1 MiB average chunks
per_pack, per_index = 4, 1000
n = 0
for i in range(0, chunks, per_pack * per_index):
    packs = []
    for p in range(per_index):
        blobs = []
        for b in range(per_pack):
            if n >= chunks:
                break
            blobs.append([hashlib.blake2s(b"c%d" % n).hexdigest(), b * 1048576, 1048576])
            n += 1
        if not blobs:
            break
        packs.append({"id": hashlib.blake2s(b"p%d-%d" % (i, p)).hexdigest(), "size": 4 * 1048576, "blobs": blobs})
    with open(os.path.join(out, "bench-%06d.json" % i), "w") as f:
        json.dump({"format": "drctl-chunk-index", "version": 1, "packs": packs}, f)
print(f"{n} chunk entries in {len(os.listdir(out))} indexes")
PY
INDEX_BYTES=$(find "$D/store-repo/chunks/$SCOPE/index" -name '*.json' -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')
echo changed >"$D/small/a.txt"
measure "small backup ($REPO_GB GB repository)" "$DRCTL" --config "$D/repo.toml" run tree

step "results ($(nproc) cores)"
printf 'tree: %d files; files cache after the second backup: %d bytes\n' "$FILES" "$CACHE_BYTES"
printf 'repository: %s GB as indexes (%d bytes of index JSON)\n' "$REPO_GB" "$INDEX_BYTES"
awk -F'\t' '{ printf "  %-44s %8ss  peak RSS %6d MiB\n", $1, $2, $3 / 1024 }' "$D/results"
