# shellcheck shell=bash
# bench/lib.sh - what the benchmarks share: a work directory removed at exit (BENCH_KEEP=1 keeps it),
# step headings, and `measure`, which times a command with GNU time.
#
#   . "$HERE/lib.sh"; bench_workdir drctl-NAME     # sets D
#   measure NAME CMD...                            # prints, and appends "NAME<TAB>wall<TAB>rss_kib" to $D/results
#   result NAME wall|rss                           # the median wall time / the largest peak RSS of NAME
#   build_drctl                                    # cargo build --release; sets DRCTL
#   peers_env                                      # restic's and borg's passwords and borg's dirs under $D
#   bench_keys                                     # $D/age.key (RECIPIENT) and $D/chunk.key; after build_drctl
#   config_head FILE CATALOG_DB TARGET_DIR JOB     # a config: catalog, keys, fs target `local`, `[jobs.JOB]`

# shellcheck source=../scripts/lib/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/scripts/lib/common.sh"

bench_workdir() {
  mkdir -p "${BENCH_DIR:-/tmp}"
  D=$(mktemp -d "${BENCH_DIR:-/tmp}/$1.XXXXXX")
  trap bench_cleanup EXIT
}

# shellcheck disable=SC2317 # invoked by the trap
bench_cleanup() {
  local rc=$?
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "kept $D (BENCH_KEEP=1)"; else rm -rf "$D"; fi
  exit "$rc"
}

step() { printf '\n==> %s\n' "$*"; }

measure() {
  local name=$1 wall rss
  shift
  /usr/bin/time -f '%e %M' -o "$D/time.out" "$@" >"$D/cmd.out" 2>"$D/cmd.err" || {
    cat "$D/cmd.err" >&2
    die "$name failed"
  }
  read -r wall rss <"$D/time.out"
  printf '%-32s %8ss  peak RSS %8s KiB\n' "$name" "$wall" "$rss"
  printf '%s\t%s\t%s\n' "$name" "$wall" "$rss" >>"$D/results"
}

result() {
  case $2 in
    wall) awk -F'\t' -v n="$1" '$1 == n { print $2 }' "$D/results" | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }' ;;
    rss) awk -F'\t' -v n="$1" '$1 == n { print $3 }' "$D/results" | sort -n | tail -1 ;;
  esac
}

build_drctl() {
  step "building drctl (cargo build --release)"
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo build --release --quiet)
  DRCTL="${CARGO_TARGET_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target}/release/drctl"
  [[ -x "$DRCTL" ]] || die "$DRCTL not found after cargo build --release"
}

peers_env() {
  export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
  export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR="$D/borg-base"
}

bench_keys() {
  age-keygen -o "$D/age.key" 2>/dev/null
  RECIPIENT=$(age-keygen -y "$D/age.key")
  "$DRCTL" keygen --chunk-key "$D/chunk.key" 2>/dev/null
}

# the job's own lines follow on stdin
config_head() {
  {
    cat <<TOML
[catalog]
url = "sqlite://$2"
[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$D/age.key"
chunk_key_file = "$D/chunk.key"
[targets.local]
type = "fs"
path = "$3"
[jobs.$4]
TOML
    cat
  } >"$1"
}
