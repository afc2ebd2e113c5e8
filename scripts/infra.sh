#!/usr/bin/env bash
# Project-local PostgreSQL and RabbitMQ on loopback, data under .run/ (git-ignored).
# Usage: scripts/infra.sh install|up|down|status|reset-test-vhost, and for the chaos suite's own pair
# (IDSYNC_INFRA_DIR and ports set) rmq-restart|rmq-crash|rmq-stop|rmq-kill|rmq-start|pg-restart|pg-stop|pg-start
# (IDSYNC_PG_STOP_MODE=immediate stops PostgreSQL like a crash)
# Idempotent: "up" on a running stack does nothing but check it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN="$ROOT/.run"
# IDSYNC_INFRA_DIR puts a second PostgreSQL + RabbitMQ pair elsewhere (the chaos suite restarts its own)
INFRA="${IDSYNC_INFRA_DIR:-$RUN}"
PG_PORT=${IDSYNC_PG_PORT:-5433}
AMQP_PORT=${IDSYNC_AMQP_PORT:-5673}
MGMT_PORT=${IDSYNC_MGMT_PORT:-15673}
DIST_PORT=${IDSYNC_DIST_PORT:-25673}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
PGDATA="$INFRA/pg/data"
PGSOCK="$INFRA/pg/sock"
RMQ="$INFRA/rabbitmq"
export RABBITMQ_NODENAME=${IDSYNC_RMQ_NODE:-idsync@localhost}
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$AMQP_PORT
export RABBITMQ_DIST_PORT=$DIST_PORT
export RABBITMQ_MNESIA_BASE="$RMQ/mnesia"
export RABBITMQ_LOG_BASE="$RMQ/log"
export RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ/enabled_plugins"
export RABBITMQ_CONFIG_FILE="$RMQ/rabbitmq"
export RABBITMQ_PID_FILE="$RMQ/rabbitmq.pid"
export RABBITMQ_CONF_ENV_FILE="$RMQ/rabbitmq-env.conf"
export ERL_EPMD_ADDRESS=127.0.0.1
# keep Erlang distribution on loopback too
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export HOME=${HOME:-/root}

as_pg() {  # initdb and postgres refuse to run as root: use the postgres account then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
  local need=()
  command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || need+=(postgresql)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "need root to apt-get install ${need[*]}" >&2; exit 1; }
    echo "installing ${need[*]} with apt" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  fi
}

pg_up() {
  mkdir -p "$INFRA/pg" "$PGSOCK" "$RUN/logs"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$INFRA/pg"; chmod 755 "$RUN" "$INFRA" 2>/dev/null || true; fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust --auth-local=trust -E UTF8 >/dev/null
    # loopback and the project's socket only
    cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGSOCK'
max_connections = 300
fsync = on
shared_buffers = 256MB
CONF
    # application roles authenticate with a password even on loopback; the superuser only through the socket
    cat > "$PGDATA/pg_hba.conf" <<CONF
local all postgres trust
local all all scram-sha-256
host  all postgres 127.0.0.1/32 reject
host  all all 127.0.0.1/32 scram-sha-256
CONF
  fi
  if as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then return 0; fi
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$INFRA/pg/postgres.log" -w -t 60 start >/dev/null
}

pg_down() {
  [ -s "$PGDATA/PG_VERSION" ] || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1 || return 0
  # IDSYNC_PG_STOP_MODE=immediate stops like a crash (no checkpoint; recovery on the next start)
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m "${IDSYNC_PG_STOP_MODE:-fast}" -w stop >/dev/null
}

rmq_ctl() { /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBITMQ_NODENAME" "$@"; }

rmq_up() {
  mkdir -p "$RMQ/mnesia" "$RMQ/log" "$RUN/logs"
  echo "[rabbitmq_management]." > "$RMQ/enabled_plugins"
  cat > "$RMQ/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
loopback_users = none
log.console = false
log.file.level = ${IDSYNC_RMQ_LOG_LEVEL:-warning}
disk_free_limit.absolute = 200MB
CONF
  : > "$RMQ/rabbitmq-env.conf"
  # running (its rabbit app perhaps still booting): wait for it. A node that does not answer may be
  # on its way down (a shutdown in progress): wait until it is gone, then start it.
  if rmq_ctl --timeout 90 await_startup >/dev/null 2>&1; then rmq_users; return 0; fi
  for _ in $(seq 1 60); do rmq_ctl status >/dev/null 2>&1 || break; sleep 1; done
  [ -f "$HOME/.erlang.cookie" ] || { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$HOME/.erlang.cookie"; chmod 400 "$HOME/.erlang.cookie"; }
  nohup /usr/lib/rabbitmq/bin/rabbitmq-server > "$RMQ/log/stdout.log" 2>&1 &
  echo $! > "$RMQ/server.pid"
  for _ in $(seq 1 120); do
    if rmq_ctl await_startup >/dev/null 2>&1; then rmq_users; return 0; fi
    sleep 1
  done
  echo "RabbitMQ did not start; see $RMQ/log" >&2; tail -n 30 "$RMQ/log/stdout.log" >&2; exit 1
}

rmq_users() {
  # the product's own user and vhosts (idsync for the stack, idsync_test for the tests); guest is removed
  local pw marker
  pw=$(grep '^IDSYNC_AMQP_PASSWORD=' "$RUN/secrets.env" | cut -d= -f2-)
  [ -n "$pw" ] || { echo "no IDSYNC_AMQP_PASSWORD in $RUN/secrets.env" >&2; exit 1; }
  # done once per node data directory and password (each rabbitmqctl call costs seconds on a busy
  # machine): the marker lives in the node's own data, so a fresh node is set up again
  marker="$RMQ/mnesia/$RABBITMQ_NODENAME/.idsync-users-$(printf '%s' "$pw" | sha256sum | cut -c1-16)"
  [ -f "$marker" ] && return 0
  rmq_ctl list_users -q 2>/dev/null | grep -q '^idsync\b' || rmq_ctl add_user idsync "$pw" >/dev/null
  rmq_ctl change_password idsync "$pw" >/dev/null
  rmq_ctl set_user_tags idsync management >/dev/null
  for vh in idsync idsync_test; do
    rmq_ctl list_vhosts -q | grep -qx "$vh" || rmq_ctl add_vhost "$vh" >/dev/null
    rmq_ctl set_permissions -p "$vh" idsync '.*' '.*' '.*' >/dev/null
  done
  rmq_ctl list_users -q 2>/dev/null | grep -q '^guest\b' && rmq_ctl delete_user guest >/dev/null || true
  rm -f "$RMQ/mnesia/$RABBITMQ_NODENAME"/.idsync-users-*
  touch "$marker"
}

rmq_down() {
  if ! rmq_ctl status >/dev/null 2>&1; then rm -f "$RMQ/server.pid"; return 0; fi
  rmq_ctl shutdown >/dev/null 2>&1 || true
  rm -f "$RMQ/server.pid"
  # the Erlang port mapper was started with our node: stop it too when no other node uses it.
  # Never for a second pair (IDSYNC_INFRA_DIR): the first pair's node may be registered there, and a
  # port mapper killed under a running node leaves that node unreachable for rabbitmqctl.
  if [ -z "${IDSYNC_INFRA_DIR:-}" ] && command -v epmd >/dev/null && ! epmd -names 2>/dev/null | grep -q '^name '; then
    epmd -kill >/dev/null 2>&1 || true
  fi
}

rmq_kill() {
  # SIGKILL this pair's broker (the Erlang VM whose pid RabbitMQ wrote into our own pid file, checked
  # to run on our data directory): a crash, not a shutdown
  local pid
  pid=$(cat "$RMQ/rabbitmq.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx -- "RABBITMQ_MNESIA_BASE=$RMQ/mnesia"; then
    kill -9 "$pid"
    for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
  fi
  rm -f "$RMQ/server.pid"
}

status() {
  if as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then echo "postgresql  up    127.0.0.1:$PG_PORT"; else echo "postgresql  down"; fi
  if rmq_ctl status >/dev/null 2>&1; then echo "rabbitmq    up    127.0.0.1:$AMQP_PORT (management $MGMT_PORT)"; else echo "rabbitmq    down"; fi
}

chaos_only() {  # the outage commands exist for a second pair only: never against the developer's one
  [ -n "${IDSYNC_INFRA_DIR:-}" ] || { echo "$1 needs IDSYNC_INFRA_DIR (the chaos suite's own pair)" >&2; exit 2; }
}

case "${1:-}" in
  install) install ;;
  up) install; pg_up; rmq_up ;;
  down) rmq_down; pg_down ;;
  status) status ;;
  rmq-restart) rmq_down; rmq_up ;;
  rmq-crash) chaos_only "$1"; rmq_kill; rmq_up ;;
  # the chaos suite's outages of some seconds: stop (or kill) one, wait, then "up"
  rmq-stop) chaos_only "$1"; rmq_down ;;
  rmq-kill) chaos_only "$1"; rmq_kill ;;
  pg-stop) chaos_only "$1"; pg_down ;;
  pg-start) pg_up ;;
  rmq-start) rmq_up ;;
  browser)  # the portal's browser tests drive Debian's Chromium through Playwright
    if ! [ -x /usr/bin/chromium ]; then
      [ "$(id -u)" = 0 ] || { echo "need root to apt-get install chromium" >&2; exit 1; }
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    fi ;;
  reset-test-vhost)  # the tests start from an empty broker, like their empty database
    vhost="idsync_${IDSYNC_TEST_NAME:-test}"
    rmq_ctl delete_vhost "$vhost" >/dev/null 2>&1 || true
    rmq_ctl add_vhost "$vhost" >/dev/null
    rmq_ctl set_permissions -p "$vhost" idsync '.*' '.*' '.*' >/dev/null
    rmq_users ;;
  pg-restart) pg_down; pg_up ;;
  *) echo "usage: $0 install|up|down|status|reset-test-vhost|rmq-restart|rmq-crash|rmq-stop|rmq-kill|rmq-start|pg-restart|pg-stop|pg-start" >&2; exit 2 ;;
esac
