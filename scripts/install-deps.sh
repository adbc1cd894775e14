#!/usr/bin/env bash
# Install what building and running Nubis needs on Debian 12, and make sure the Docker engine runs.
# Idempotent: installs only missing packages (one `apt-get update` when something is missing),
# starts dockerd only when `docker info` does not answer. Safe to run repeatedly.
#
#   bash scripts/install-deps.sh
#
# Env: NUBIS_RUN_DIR (default /tmp/nubis-run): dockerd.log and dockerd.pid go there when this script
#      starts dockerd itself. DOCKERD_WAIT (default 60): seconds to wait for the engine.
set -euo pipefail

RUN=${NUBIS_RUN_DIR:-/tmp/nubis-run}
DOCKERD_WAIT=${DOCKERD_WAIT:-60}
# chromium + chromium-driver: the console's browser tests (tests/api/console_browser.rs, WebDriver).
PACKAGES=(docker.io debootstrap protobuf-compiler pkg-config python3-venv curl ca-certificates gcc g++ chromium chromium-driver)

log() { echo "[install-deps] $*"; }
die() { echo "[install-deps] ERROR: $*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); else SUDO=(__need_root__); fi
fi
as_root() {
  [ "${SUDO[0]:-}" = __need_root__ ] && die "must run as root (or with passwordless sudo) to run: $*"
  "${SUDO[@]}" "$@"
}

# --- Debian packages --------------------------------------------------------------------------
pkg_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]; }

command -v dpkg-query >/dev/null 2>&1 || die "this script supports Debian/Ubuntu (dpkg/apt) only"
missing=()
for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q </dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q "${missing[@]}" </dev/null
  for p in "${missing[@]}"; do pkg_installed "$p" || die "package $p did not install"; done
else
  log "packages present: ${PACKAGES[*]}"
fi

# --- Docker engine ----------------------------------------------------------------------------
docker_up() { docker info >/dev/null 2>&1; }

wait_docker() { # wait_docker <seconds>
  local deadline=$(( $(date +%s) + $1 ))
  until docker_up; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "[install-deps] ERROR: Docker engine not ready after $1 s" >&2
      [ -f "$RUN/dockerd.log" ] && { echo "--- last lines of $RUN/dockerd.log:" >&2; tail -n 30 "$RUN/dockerd.log" >&2; }
      exit 1
    fi
    sleep 0.2
  done
}

if docker_up; then
  log "dockerd: already running"
else
  mkdir -p "$RUN"
  pid=""
  [ -f "$RUN/dockerd.pid" ] && pid=$(cat "$RUN/dockerd.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] \
     && [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; then
    log "dockerd: started earlier (pid $pid), waiting for it"
  elif pgrep -x dockerd >/dev/null 2>&1; then
    log "dockerd: a dockerd process exists, waiting for it"
  elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    log "dockerd: starting the docker service with systemctl"
    as_root systemctl start docker </dev/null
  else
    [ -x /usr/sbin/dockerd ] || die "/usr/sbin/dockerd not found (package docker.io)"
    log "dockerd: starting (log $RUN/dockerd.log)"
    [ "${SUDO[0]:-}" = __need_root__ ] && die "must run as root (or with passwordless sudo) to start dockerd"
    # Not a process-group leader here, so setsid execs dockerd in place: $! is dockerd's PID (as root).
    "${SUDO[@]}" setsid /usr/sbin/dockerd --host unix:///var/run/docker.sock </dev/null >>"$RUN/dockerd.log" 2>&1 &
    echo $! >"$RUN/dockerd.pid"
  fi
  wait_docker "$DOCKERD_WAIT"
  log "dockerd: ready"
fi

# --- Rust toolchain ---------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    die "cargo is installed in $HOME/.cargo/bin but not on PATH: run 'source \"\$HOME/.cargo/env\"' (or add it to PATH) and retry"
  fi
  die "cargo not found: install the Rust toolchain (rustup, stable) first; Nubis is built with cargo"
fi
log "cargo: $(cargo --version)"
log "done"
