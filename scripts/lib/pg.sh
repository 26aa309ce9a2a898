# shellcheck shell=bash
# scripts/lib/pg.sh - start/stop a throwaway PostgreSQL 15 cluster in a directory of its own.
# Used by scripts/services.sh (tests), scripts/demo and bench/pg_backup_restore.sh. Source
# scripts/lib/common.sh first. Defines functions only:
#   pg_start DIR PORT PIDFILE   initdb DIR/data (once), start it on 127.0.0.1:PORT with its socket in
#                               DIR and its log in DIR/postgres.log; record the postmaster in PIDFILE.
#                               Leaves an already running cluster (PIDFILE alive) alone.
#   pg_stop PIDFILE             fast shutdown (SIGINT) of exactly that postmaster
#   pg_url PORT [DB]            postgres://postgres@127.0.0.1:PORT/DB (DB default: postgres)
#   pg_psql PORT DB ARGS...     psql against it (no psqlrc, stop on the first error)
# The cluster trusts every local connection and runs with fsync=off: for tests and benchmarks only.
# When run as root, initdb and the server run as user postgres (initdb refuses root), so DIR's parent
# directories must be traversable by that user (mktemp -d makes 0700 dirs: chmod 0711 them).
# Env knobs: PG_BIN (default /usr/lib/postgresql/15/bin), PG_EXTRA_OPTS (more server options).

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
# shellcheck disable=SC2034 # used by the scripts sourcing this file
PG_PACKAGES=(postgresql-15 postgresql-client-15)

pg_start() {
  local dir=$1 port=$2 pidfile=$3 run=()
  if pid_alive "$pidfile"; then
    log "postgres: already running (pid $(head -n1 "$pidfile"), port $port)"
    return 0
  fi
  [[ -x "$PG_BIN/initdb" ]] || { log "postgres: $PG_BIN/initdb not found (apt-get install ${PG_PACKAGES[*]})"; return 1; }
  if port_in_use "$port"; then
    log "postgres: port $port is already in use by something else"
    return 1
  fi
  # callers may run this inside `if`, where set -e is off: check every step
  mkdir -p "$dir" || return 1
  if [[ $EUID -eq 0 ]]; then
    chown postgres:postgres "$dir" || return 1
    run=(runuser -u postgres --)
    if ! runuser -u postgres -- test -w "$dir"; then
      log "postgres: user postgres cannot write $dir (a parent directory is not traversable, e.g. a 0700 mktemp dir)"
      return 1
    fi
  fi
  if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    if ! "${run[@]}" "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1; then
      log_tail "$dir/initdb.log"
      return 1
    fi
  fi
  local opts="-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off"
  opts+=" -c full_page_writes=off ${PG_EXTRA_OPTS:-}"
  if ! "${run[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 -s -o "$opts" start; then
    log_tail "$dir/postgres.log"
    return 1
  fi
  pid_record "$pidfile" "$(head -n1 "$dir/data/postmaster.pid")"
}

pg_stop() { pid_stop "$1" INT; }

pg_url() { printf 'postgres://postgres@127.0.0.1:%s/%s\n' "$1" "${2:-postgres}"; }

pg_psql() {
  local port=$1 db=$2
  shift 2
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}
