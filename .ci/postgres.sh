#!/usr/bin/env bash
# A throw-away PostgreSQL for the swarm store's PostgreSQL tests (tests/swarm/test_db_postgres.py).
#
#   eval "$(bash .ci/postgres.sh)"     # prints: export ATOMLAB_TEST_POSTGRES_URL=postgresql+psycopg://...
#   bash .ci/postgres.sh stop          # stops the cluster and removes its directory
#
# Installs PostgreSQL with apt-get when initdb is missing, then runs one cluster on 127.0.0.1:55432
# in a temp directory (as the postgres user when run as root). Running it again reuses the running
# cluster. When PostgreSQL cannot be had (no apt, no network) it prints nothing and exits 0: the
# PostgreSQL tests then skip. Only the export line goes to stdout; everything else to stderr.
set -euo pipefail

PORT="${ATOMLAB_PG_PORT:-55432}"
DIR="${ATOMLAB_PG_DIR:-${TMPDIR:-/tmp}/atomlab-postgres-${PORT}}"
DB=atomlab_test
ROLE=atomlab
PASSWORD=atomlab
URL="postgresql+psycopg://${ROLE}:${PASSWORD}@127.0.0.1:${PORT}/${DB}"

say() { echo "postgres.sh: $*" >&2; }

bin_dir() {
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$found" && -x "$found/initdb" ]]; then
    echo "$found"
  elif command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  fi
}

as_owner() {  # run a command as the cluster's owner: postgres when we are root, else ourselves
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

install_postgres() {
  command -v apt-get >/dev/null 2>&1 || { say "no apt-get"; return 1; }
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || { say "not root"; return 1; }
    sudo=(sudo -n)
  fi
  say "installing PostgreSQL with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  local limit=()  # an unreachable mirror must not hold CI up for long
  command -v timeout >/dev/null 2>&1 && limit=(timeout 600)
  "${sudo[@]}" "${limit[@]}" apt-get update -qq -o Acquire::Retries=0 >&2 || return 1
  "${sudo[@]}" "${limit[@]}" apt-get install -y -qq postgresql >&2 || return 1
}

start() {  # everything to stderr; the URL to fd 3
  local bin
  bin="$(bin_dir)"
  if [[ -z "$bin" ]]; then
    install_postgres || return 1
    bin="$(bin_dir)"
    [[ -n "$bin" ]] || { say "initdb not found after installing"; return 1; }
  fi
  if [[ ! -f "$DIR/PG_VERSION" ]]; then
    mkdir -p "$DIR"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$DIR"
    chmod 700 "$DIR"
    as_owner "$bin/initdb" -D "$DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --no-locale >&2
  fi
  if ! as_owner "$bin/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
    as_owner "$bin/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w -t 60 \
      -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >&2 3>&-  # the server must not hold our stdout pipe open
  fi
  local psql=("$bin/psql" -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA)
  if [[ -z "$(as_owner "${psql[@]}" -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" ]]; then
    as_owner "${psql[@]}" -d postgres -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'" >&2
  fi
  if [[ -z "$(as_owner "${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]]; then
    as_owner "${psql[@]}" -d postgres -c "CREATE DATABASE $DB OWNER $ROLE" >&2
  fi
  echo "$URL" >&3
}

stop() {
  local bin
  bin="$(bin_dir)"
  if [[ -n "$bin" && -f "$DIR/PG_VERSION" ]]; then
    as_owner "$bin/pg_ctl" -D "$DIR" -m fast -w stop >&2 || true
  fi
  rm -rf "$DIR"
}

case "${1:-start}" in
  start)
    # The work runs in a child bash so that `set -e` holds inside it; any failure there means
    # "no PostgreSQL here", which must not fail CI.
    if url="$(bash "${BASH_SOURCE[0]}" __start 3>&1 1>&2)" && [[ -n "$url" ]]; then
      echo "export ATOMLAB_TEST_POSTGRES_URL=$url"
    else
      say "PostgreSQL unavailable; the PostgreSQL tests will skip"
    fi
    ;;
  __start) start ;;
  stop) stop ;;
  *)
    say "usage: $0 [start|stop]"
    exit 3
    ;;
esac
