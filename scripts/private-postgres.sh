# Sourced by scripts/test and scripts/demo: starts a private PostgreSQL cluster that belongs to
# this checkout, so nothing on the machine's own server is touched.
#
#   start_private_postgres DIR PORT   → exports PRIVATE_PG_URL; stop it with stop_private_postgres
#
# initdb refuses to run as root, so as root the cluster runs as the `postgres` user (created by
# Debian's postgresql packages) or `nobody`.

find_pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    echo "PostgreSQL server binaries not found. Install them with: apt-get install postgresql" >&2
    return 1
  fi
  echo "$dir"
}

as_cluster_user() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$PRIVATE_PG_USER" -- "$@"
  else
    "$@"
  fi
}

start_private_postgres() {
  local dir=$1 port=$2 bin
  bin=$(find_pg_bin) || return 1
  PRIVATE_PG_USER=$(id -un)
  if [ "$(id -u)" -eq 0 ]; then
    if id postgres >/dev/null 2>&1; then PRIVATE_PG_USER=postgres; else PRIVATE_PG_USER=nobody; fi
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" -eq 0 ] && chown "$PRIVATE_PG_USER" "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_cluster_user "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; return 1; }
  fi
  if ! as_cluster_user "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    as_cluster_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off" start >/dev/null \
      || { tail -n 20 "$dir/server.log" >&2; return 1; }
  fi
  PRIVATE_PG_DIR=$dir
  PRIVATE_PG_BIN=$bin
  export PRIVATE_PG_URL="postgresql://postgres@127.0.0.1:$port/postgres"
}

stop_private_postgres() {
  [ -n "${PRIVATE_PG_DIR:-}" ] || return 0
  as_cluster_user "$PRIVATE_PG_BIN/pg_ctl" -D "$PRIVATE_PG_DIR/data" -m fast stop >/dev/null 2>&1 || true
}
