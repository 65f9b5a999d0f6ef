#!/usr/bin/env bash
# Source this file: it starts a throw-away PostgreSQL server on 127.0.0.1 (installing Debian's
# postgresql package first when it is missing and we are root), exports NTKLAB_TEST_PG_URL, and
# stops the server and removes its files when the sourcing shell exits.
ntklab_pg_start() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql); PostgreSQL tests will not run" >&2
      return 0
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local bin dir port as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  dir=$(mktemp -d /tmp/ntklab-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    as=(runuser -u postgres --)
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${as[@]}" "$bin/initdb" -D "$dir/data" --auth=trust --username=ntklab >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
  export NTKLAB_TEST_PG_URL="postgresql://ntklab@127.0.0.1:$port/postgres"
  NTKLAB_PG_STOP="${as[*]} $bin/pg_ctl -D $dir/data -m immediate stop; rm -rf $dir"
  trap 'eval "$NTKLAB_PG_STOP" >/dev/null 2>&1' EXIT
  echo "PostgreSQL test server at $NTKLAB_TEST_PG_URL" >&2
}
ntklab_pg_start
