# shellcheck shell=bash
# scripts/lib/common.sh - helpers shared by scripts/services.sh, scripts/demo and bench/*.sh.
# Source it; it defines functions only (no side effects):
#   log MSG / die MSG            messages on stderr, prefixed with $LOG_TAG (default: the script name)
#   apt_ensure PKG...            apt-get install the missing packages (daemons are not started;
#                                apt-get update + retry once if the install fails)
#   rand_hex NBYTES              NBYTES random bytes as lowercase hex
#   port_in_use PORT             true when something accepts TCP connections on 127.0.0.1:PORT
#   wait_for DESC TIMEOUT CMD... run CMD until it succeeds or TIMEOUT seconds have passed
#   wait_service PIDFILE DESC TIMEOUT CMD...
#                                the same, but give up at once when PIDFILE's process has died
#   spawn PIDFILE LOGFILE CMD... start CMD in the background, record it in PIDFILE
#   pid_record PIDFILE PID       write PID and its /proc comm (the PID-reuse guard) to PIDFILE
#   pid_alive PIDFILE            true when PIDFILE's process runs and still has the recorded comm
#   pid_stop PIDFILE [SIG]       stop exactly that process (SIG, default TERM; KILL after 15 s)
#   log_tail FILE [N]            print the last N (default 30) lines of FILE on stderr
# Env knobs: APT_LOG (where apt output goes, default /tmp/drctl-apt.log).

LOG_TAG=${LOG_TAG:-$(basename "$0")}

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ $EUID -eq 0 ]] || die "missing packages (${missing[*]}) and not root: install them first"
  local apt_log=${APT_LOG:-/tmp/drctl-apt.log} made_policy=0 rc=0
  log "apt-get install ${missing[*]} (log: $apt_log)"
  # policy-rc.d exit 101 keeps maintainer scripts from starting system daemons on default ports
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
    log "install failed, running apt-get update and retrying"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; } \
      >>"$apt_log" 2>&1 || rc=$?
  fi
  ((made_policy == 0)) || rm -f /usr/sbin/policy-rc.d
  if ((rc != 0)); then
    log_tail "$apt_log"
    die "apt-get install ${missing[*]} failed"
  fi
}

rand_hex() { head -c "$1" /dev/urandom | od -An -v -tx1 | tr -d ' \n'; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local desc=$1 timeout=$2
  shift 2
  local end=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then
      log "timed out after ${timeout}s waiting for $desc"
      return 1
    fi
    sleep 0.2
  done
}

wait_service() {
  local pidfile=$1 desc=$2 timeout=$3
  shift 3
  local end=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$pidfile"; then
      log "$desc exited while starting"
      return 1
    fi
    if ((SECONDS >= end)); then
      log "timed out after ${timeout}s waiting for $desc"
      return 1
    fi
    sleep 0.2
  done
}

# running = exists and is not a zombie (a killed child of this shell stays a zombie until reaped)
proc_running() {
  local state
  state=$(sed -E 's/.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n "$state" && "$state" != Z ]]
}

pid_record() {
  local comm
  comm=$(cat "/proc/$2/comm" 2>/dev/null) || return 1
  printf '%s\n%s\n' "$2" "$comm" > "$1"
}

pid_alive() {
  [[ -f "$1" ]] || return 1
  local pid comm
  { read -r pid && read -r comm; } < "$1" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && proc_running "$pid" \
    && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]]
}

spawn() {
  local pidfile=$1 logfile=$2 pid
  shift 2
  # nohup execs CMD, so $! is the service's own pid
  nohup "$@" >"$logfile" 2>&1 </dev/null &
  pid=$!
  sleep 0.2
  proc_running "$pid" || return 1
  pid_record "$pidfile" "$pid"
}

pid_stop() {
  local pidfile=$1 sig=${2:-TERM} name pid comm cur
  name=$(basename "$pidfile" .pid)
  [[ -f "$pidfile" ]] || return 0
  { read -r pid && read -r comm; } < "$pidfile" || { rm -f "$pidfile"; return 0; }
  if [[ ! "$pid" =~ ^[0-9]+$ ]] || ! proc_running "$pid"; then
    log "$name: not running"
    rm -f "$pidfile"
    return 0
  fi
  cur=$(cat "/proc/$pid/comm" 2>/dev/null || echo '?')
  if [[ "$cur" != "$comm" ]]; then
    log "$name: pid $pid is now '$cur' (expected '$comm'), not touching it"
    rm -f "$pidfile"
    return 0
  fi
  kill -s "$sig" "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 150; i++)); do
    proc_running "$pid" || break
    sleep 0.1
  done
  if proc_running "$pid"; then
    log "$name: pid $pid ignored SIG$sig for 15s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  else
    log "$name: stopped (pid $pid)"
  fi
  rm -f "$pidfile"
}

log_tail() {
  local f=$1 n=${2:-30}
  if [[ -s "$f" ]]; then
    printf -- '----- last %s lines of %s -----\n' "$n" "$f" >&2
    tail -n "$n" "$f" >&2
    printf -- '-----\n' >&2
  else
    log "(no log at $f)"
  fi
}
