#!/usr/bin/env bash
# Run every Nubis test: install dependencies, build the test runtime images, build (debug profile,
# shared with `cargo test`), run `cargo test`, then the end-to-end test through the official Python
# SDK against a real `nubis server` (tests/sdk/test_sdk.py). Exit status is non-zero on any failure.
# Then scripts/check-deploy.sh checks deploy/, docker-compose.yml and the Dockerfiles (one check).
# The last line of output is the overall `N passed, N failed` (cargo tests + SDK tests + server
# checks + deploy checks).
#
#   bash scripts/test.sh
#
# Env: NUBIS_TEST_SERVICES   space-separated services for scripts/test-services.sh to start first
#                            (default: "kafka opensearch postgres mariadb s3 etcd": the
#                            Kafka-protocol broker of the queue tests, the OpenSearch-API server
#                            of the log shipping tests, PostgreSQL and MariaDB of the store
#                            conformance and cluster tests, the S3 server of the code store tests,
#                            etcd of the cluster tests; a test whose service is missing fails
#                            rather than skips)
#      NUBIS_TEST_HEALTH_WAIT seconds to wait for the server's /health (default 90)
#      NUBIS_TEST_STOP_WAIT   seconds the server may take to exit after SIGTERM (default 30)
#      CARGO_TEST_ARGS        extra arguments for `cargo test` (e.g. "-- --test-threads=1")
# Logs: target/test-logs/ (cargo-test.log, sdk-server.log, sdk-test.log, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LOGS=$TARGET/test-logs
NUBIS=$TARGET/debug/nubis
VENV=$TARGET/sdk-venv
HEALTH_WAIT=${NUBIS_TEST_HEALTH_WAIT:-90}
STOP_WAIT=${NUBIS_TEST_STOP_WAIT:-30}
TEST_SERVICES=${NUBIS_TEST_SERVICES-kafka opensearch postgres mariadb s3 etcd}
if [ -n "${CI:-}" ]; then export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}; fi
# Everything below talks to 127.0.0.1 only: never through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
mkdir -p "$LOGS"

T_START=$(date +%s)
SUMMARY=()          # one line per section
SECTIONS_FAILED=0
TESTS_PASSED=0      # cargo tests + SDK tests + server checks
TESTS_FAILED=0
SERVER_PID=""
SDK_TMP=""
SERVICES_STARTED=""

# ---------------------------------------------------------------------------------------- helpers
elapsed() { echo $(( $(date +%s) - $1 )); }

section() { # section <title> <function> : run one step, print header / result / elapsed time
  local title=$1 fn=$2 t0 rc=0 dt
  t0=$(date +%s)
  echo
  echo "================ $title ================"
  # The functions check every command themselves (`|| return 1`): set -e does not apply inside `||`.
  "$fn" || rc=$?
  dt=$(elapsed "$t0")
  if [ "$rc" -eq 0 ]; then
    echo "---------------- $title: OK (${dt}s)"
    SUMMARY+=("$(printf '  %-22s %-7s %6ss' "$title" OK "$dt")")
  else
    echo "---------------- $title: FAILED (exit $rc, ${dt}s)"
    SUMMARY+=("$(printf '  %-22s %-7s %6ss' "$title" FAILED "$dt")")
    SECTIONS_FAILED=$((SECTIONS_FAILED + 1))
  fi
  return "$rc"
}

skip() { # skip <title> <reason>
  echo
  echo "================ $1: SKIPPED ($2) ================"
  SUMMARY+=("$(printf '  %-22s %-7s %6s   %s' "$1" SKIPPED - "$2")")
  SECTIONS_FAILED=$((SECTIONS_FAILED + 1))
}

log_tail() { # log_tail <file> [lines]
  [ -f "$1" ] || return 0
  echo "-------- last ${2:-60} lines of $1"
  tail -n "${2:-60}" "$1"
  echo "--------"
}

stop_server() { # stop_server <seconds> : SIGTERM, wait; SIGKILL after the deadline. Sets SERVER_RC.
  SERVER_RC=""
  [ -n "$SERVER_PID" ] || return 0
  local deadline=$(( $(date +%s) + $1 ))
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "server (pid $SERVER_PID) still running $1 s after SIGTERM: killing it"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
      wait "$SERVER_PID" 2>/dev/null || true
      SERVER_PID=""; SERVER_RC=timeout
      return 1
    fi
    sleep 0.1
  done
  SERVER_RC=0
  wait "$SERVER_PID" 2>/dev/null || SERVER_RC=$?
  SERVER_PID=""
}

leftover_containers() { # containers that still mount something from our temp dir
  [ -n "$SDK_TMP" ] || return 0
  local ids
  ids=$(docker ps -aq 2>/dev/null) || return 0
  [ -n "$ids" ] || return 0
  # shellcheck disable=SC2086
  docker inspect --format '{{.Id}} {{range .Mounts}}{{.Source}} {{end}}' $ids 2>/dev/null \
    | awk -v d="$SDK_TMP" 'index($0, d) {print substr($1, 1, 12)}'
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$SERVER_PID" ]; then stop_server 10 >/dev/null 2>&1 || true; fi
  if [ -n "$SDK_TMP" ]; then
    local left; left=$(leftover_containers)
    # shellcheck disable=SC2086
    if [ -n "$left" ]; then docker rm -f $left >/dev/null 2>&1 || true; fi
    rm -rf "$SDK_TMP"
  fi
  if [ -n "$SERVICES_STARTED" ]; then
    # shellcheck disable=SC2086
    bash scripts/test-services.sh stop $SERVICES_STARTED >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT
trap 'echo "terminated"; exit 143' TERM

# ---------------------------------------------------------------------------------------- steps
step_install_deps() {
  bash scripts/install-deps.sh || return 1
}

step_services() {
  SERVICES_STARTED=$TEST_SERVICES   # stop them at exit even if starting fails half-way
  # shellcheck disable=SC2086
  bash scripts/test-services.sh start $TEST_SERVICES || return 1
  eval "$(bash scripts/test-services.sh env)" || return 1
}

step_images() {
  if [ ! -f scripts/build-images.sh ]; then echo "scripts/build-images.sh is missing"; return 1; fi
  bash scripts/build-images.sh --test-images || return 1
}

step_build() {
  cargo --version || return 1
  cargo build --bin nubis || return 1
  cargo test --no-run || return 1
  [ -x "$NUBIS" ] || { echo "$NUBIS was not built"; return 1; }
}

step_cargo_test() {
  local rc=0 p f
  # shellcheck disable=SC2086
  cargo test --no-fail-fast ${CARGO_TEST_ARGS:-} 2>&1 | tee "$LOGS/cargo-test.log" || rc=$?
  # Sum the per-binary result lines: "test result: ok. 12 passed; 0 failed; 1 ignored; ..."
  read -r p f < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
                       END { print p + 0, f + 0 }' "$LOGS/cargo-test.log")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # a build error or a crashed test binary
  TESTS_PASSED=$((TESTS_PASSED + p)); TESTS_FAILED=$((TESTS_FAILED + f))
  echo "cargo test: $p passed, $f failed"
  return "$rc"
}

sdk_venv() {
  local stamp want
  want=$( { cat tests/sdk/requirements.txt; python3 --version; } | sha256sum | cut -d' ' -f1)
  stamp=$(cat "$VENV/.nubis-stamp" 2>/dev/null || true)
  if [ -x "$VENV/bin/python" ] && [ "$stamp" = "$want" ]; then
    echo "SDK venv: cached ($VENV)"
    return 0
  fi
  echo "SDK venv: creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || return 1
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/sdk/requirements.txt </dev/null || return 1
  echo "$want" >"$VENV/.nubis-stamp"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

step_sdk_e2e() {
  local port key ak sk deadline t0 rc=0 last p f left
  sdk_venv || return 1
  "$VENV/bin/python" -c 'import importlib.metadata as m; print("SDK: alibabacloud-fc20230330", m.version("alibabacloud-fc20230330"))' || return 1

  SDK_TMP=$(mktemp -d /tmp/nubis-sdk-e2e.XXXXXX) || return 1
  echo "data dir: $SDK_TMP/data"
  key=$("$NUBIS" admin create-key --data-dir "$SDK_TMP/data" --output json 2>"$LOGS/sdk-admin.log") \
    || { echo "nubis admin create-key failed"; log_tail "$LOGS/sdk-admin.log"; return 1; }
  # stdout is {"accessKeyId": ..., "accessKeySecret": ...} (compact or pretty-printed)
  read -r ak sk < <(printf '%s' "$key" | python3 -c '
import json, sys
text = sys.stdin.read()
try:
    d = json.loads(text)
except ValueError:
    d = next(json.loads(l) for l in text.splitlines() if l.strip().startswith("{"))
print(d["accessKeyId"], d["accessKeySecret"])' 2>/dev/null) || true
  if [ -z "${ak:-}" ] || [ -z "${sk:-}" ]; then echo "create-key did not print the expected JSON: $key"; return 1; fi

  port=$(free_port) || return 1
  echo "starting in $SDK_TMP: $NUBIS server --listen 127.0.0.1:$port --data-dir data (log $LOGS/sdk-server.log)"
  # A relative --data-dir, as in the quick start (`--data-dir ./data`): its paths must still
  # reach Docker as absolute bind mounts.
  (cd "$SDK_TMP" && exec "$NUBIS" server --config "$ROOT/config/nubis.toml" --listen "127.0.0.1:$port" --data-dir data --node-id "sdk-e2e-$$") </dev/null >"$LOGS/sdk-server.log" 2>&1 &
  SERVER_PID=$!

  t0=$(date +%s); deadline=$(( t0 + HEALTH_WAIT ))
  until curl -fsS --noproxy '*' -o /dev/null --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      rc=0; wait "$SERVER_PID" 2>/dev/null || rc=$?; SERVER_PID=""
      echo "FAIL: the server exited (status $rc) before answering /health"
      log_tail "$LOGS/sdk-server.log"
      TESTS_FAILED=$((TESTS_FAILED + 1)); return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "FAIL: /health did not answer 200 within ${HEALTH_WAIT}s"
      log_tail "$LOGS/sdk-server.log"
      TESTS_FAILED=$((TESTS_FAILED + 1)); return 1
    fi
    sleep 0.2
  done
  echo "server ready after $(elapsed "$t0")s (pid $SERVER_PID)"

  rc=0
  NUBIS_ENDPOINT="127.0.0.1:$port" NUBIS_AK="$ak" NUBIS_SK="$sk" \
    "$VENV/bin/python" tests/sdk/test_sdk.py </dev/null 2>&1 | tee "$LOGS/sdk-test.log" || rc=$?
  last=$(tail -n 1 "$LOGS/sdk-test.log")
  if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    p=${BASH_REMATCH[1]}; f=${BASH_REMATCH[2]}
  else
    echo "FAIL: the SDK test did not end with 'N passed, N failed' (exit $rc)"; p=0; f=1
  fi
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  TESTS_PASSED=$((TESTS_PASSED + p)); TESTS_FAILED=$((TESTS_FAILED + f))
  [ "$f" -eq 0 ] || log_tail "$LOGS/sdk-server.log"

  echo "stopping the server with SIGTERM (must exit 0 within ${STOP_WAIT}s)"
  t0=$(date +%s)
  if stop_server "$STOP_WAIT" && [ "$SERVER_RC" = 0 ]; then
    echo "PASS server graceful shutdown ($(elapsed "$t0")s)"
    TESTS_PASSED=$((TESTS_PASSED + 1))
  else
    echo "FAIL server graceful shutdown: exit status $SERVER_RC"
    log_tail "$LOGS/sdk-server.log" 30
    TESTS_FAILED=$((TESTS_FAILED + 1)); rc=1
  fi
  left=$(leftover_containers)
  if [ -n "$left" ]; then
    echo "WARNING: containers left behind by the server after shutdown (removing): $(echo "$left" | tr '\n' ' ')"
  fi
  [ "$f" -eq 0 ] && [ "$rc" -eq 0 ]
}

step_deploy_checks() { # one check in the totals; its own PASS/FAIL lines are in the log
  local rc=0
  NUBIS_BIN=$NUBIS bash scripts/check-deploy.sh 2>&1 | tee "$LOGS/check-deploy.log" || rc=$?
  if [ "$rc" -eq 0 ]; then TESTS_PASSED=$((TESTS_PASSED + 1)); else TESTS_FAILED=$((TESTS_FAILED + 1)); fi
  return "$rc"
}

# ---------------------------------------------------------------------------------------- run
if ! section "install deps" step_install_deps; then
  skip "build" "dependencies missing"
else
  if [ -n "$TEST_SERVICES" ]; then section "test services" step_services || true; fi
  section "runtime images" step_images || true
  if section "build" step_build; then
    section "cargo test" step_cargo_test || true
    section "sdk e2e" step_sdk_e2e || true
  else
    TESTS_FAILED=$((TESTS_FAILED + 1))
    skip "cargo test" "build failed"
    skip "sdk e2e" "build failed"
  fi
  section "deploy checks" step_deploy_checks || true
fi

echo
echo "================ summary ================"
printf '%s\n' "${SUMMARY[@]}"
echo "  total: $(elapsed "$T_START")s; logs in $LOGS"
if [ "$SECTIONS_FAILED" -gt 0 ] && [ "$TESTS_FAILED" -eq 0 ]; then TESTS_FAILED=1; fi  # e.g. images failed
echo "$TESTS_PASSED passed, $TESTS_FAILED failed"
[ "$SECTIONS_FAILED" -eq 0 ] && [ "$TESTS_FAILED" -eq 0 ]
