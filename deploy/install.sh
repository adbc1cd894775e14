#!/usr/bin/env bash
# Install Nubis on this machine, as a cluster controller (server) or a worker node (agent),
# under systemd. See docs/operations.md for the whole cluster.
#
#   deploy/install.sh server|agent [--binary PATH] [--config FILE] [--root DIR] [--enable] [--start]
#
#   --binary PATH  the nubis binary to install (default: target/release/nubis of this checkout)
#   --config FILE  the config to install. Without it the example (deploy/examples/) is installed
#                  the first time and an existing config is kept; with it an existing, different
#                  config is replaced and saved as <file>.bak.
#   --root DIR     install into DIR instead of / (also: DESTDIR=DIR), for packaging and tests:
#                  no user is created, nothing is chowned, systemctl is not called.
#   --enable       systemctl enable the unit (start at boot).
#   --start        systemctl start the unit if it is not running. A running unit is never
#                  restarted: drain an agent first (docs/operations.md), then restart it yourself.
#
# Lays down:
#   /usr/local/bin/nubis, /usr/local/bin/nubis-nodes (admin client for node cordon/drain)
#   /etc/nubis/server.toml or /etc/nubis/agent.toml   root:nubis 0640
#   /etc/nubis/nubis.env (secrets template, only if missing)   root:root 0600
#   /var/lib/nubis (server) or /var/lib/nubis-agent (agent)    nubis:nubis 0750
#   /etc/systemd/system/nubis-server.service or nubis-agent.service
# and the system user `nubis`. Idempotent: a second run changes nothing and says so; files
# that differ are replaced (configs and the env file excepted, see above). Without --enable or
# --start, nothing is enabled or started.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "install.sh: $*" >&2; exit 1; }
say() { printf '  %-44s %s\n' "$1" "$2"; }

ROLE=""
BINARY=""
CONFIG=""
ROOT=${DESTDIR:-}
ENABLE=0
START=0
while [ $# -gt 0 ]; do
  case $1 in
    server|agent) [ -z "$ROLE" ] || die "one role at a time"; ROLE=$1 ;;
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; BINARY=$2; shift ;;
    --binary=*) BINARY=${1#*=} ;;
    --config) [ $# -ge 2 ] || die "--config needs a file"; CONFIG=$2; shift ;;
    --config=*) CONFIG=${1#*=} ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift ;;
    --root=*) ROOT=${1#*=} ;;
    --enable) ENABLE=1 ;;
    --start) START=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
  shift
done
[ -n "$ROLE" ] || { usage >&2; exit 2; }
ROOT=${ROOT%/}
if [ -n "$ROOT" ]; then
  [ "$ENABLE$START" = 00 ] || die "--enable/--start act on this machine's systemd: not with --root"
elif [ "$(id -u)" != 0 ]; then
  die "run as root (or use --root DIR to stage the files somewhere else)"
fi

case $ROLE in
  server) UNIT=nubis-server.service; CONF=server.toml; EXAMPLE=$HERE/examples/controller.toml; DATA=/var/lib/nubis ;;
  agent) UNIT=nubis-agent.service; CONF=agent.toml; EXAMPLE=$HERE/examples/agent.toml; DATA=/var/lib/nubis-agent ;;
esac
BINARY=${BINARY:-$REPO/target/release/nubis}
if [ ! -f "$BINARY" ] || [ ! -x "$BINARY" ]; then
  die "no executable nubis at $BINARY: build it (cargo build --release) or pass --binary PATH"
fi
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "--config $CONFIG: no such file"
for f in "$HERE/$UNIT" "$HERE/nubis-nodes" "$HERE/nubis.env.example" "$EXAMPLE"; do
  [ -f "$f" ] || die "missing $f (run install.sh from a Nubis checkout)"
done

if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
fi

USER_NAME=nubis
CHANGED=()      # what a running service would need a restart for

own() { # own <user:group> <path>: only on a real install (a staging root has no such user)
  [ -n "$ROOT" ] || chown "$1" "$2"
}

ensure_dir() { # ensure_dir <path> <mode> <owner>: ours, so its mode and owner are enforced
  local d=$ROOT$1
  if [ -d "$d" ]; then say "$1/" "present"; else mkdir -p "$d"; say "$1/" "created"; fi
  chmod "$2" "$d"
  own "$3" "$d"
}

parent_dir() { # parent_dir <path>: a system directory; created if missing, never re-moded
  [ -d "$ROOT$1" ] || install -d -m 0755 "$ROOT$1"
}

# put <source> <path> <mode> <owner> <policy>: policy `replace` overwrites a different file,
# `backup` overwrites it after saving <path>.bak, `keep` leaves it as it is. The new file is
# written beside the old and renamed over it, so a running binary is never modified in place.
put() {
  local src=$1 path=$2 mode=$3 owner=$4 policy=$5 dest=$ROOT$2 tmp state
  if [ -e "$dest" ] && cmp -s "$src" "$dest"; then
    state=unchanged
  elif [ -e "$dest" ] && [ "$policy" = keep ]; then
    say "$path" "kept (differs from $(basename "$src"); yours is left alone)"
    return 0
  else
    if [ -e "$dest" ]; then
      state=updated
      if [ "$policy" = backup ]; then cp -p "$dest" "$dest.bak"; state="updated (old one saved as $path.bak)"; fi
    else
      state=installed
    fi
    tmp=$(mktemp "$(dirname "$dest")/.nubis-install.XXXXXX")
    cat "$src" >"$tmp"
    mv -f "$tmp" "$dest"
    CHANGED+=("$path")
  fi
  chmod "$mode" "$dest"
  own "$owner" "$dest"
  say "$path" "$state"
}

echo "Installing the Nubis $ROLE${ROOT:+ into $ROOT}"

# --- system user ------------------------------------------------------------------------------
if [ -n "$ROOT" ]; then
  say "user $USER_NAME" "not created (--root)"
elif getent passwd "$USER_NAME" >/dev/null; then
  say "user $USER_NAME" "present"
else
  group_opt=(--user-group)
  if getent group "$USER_NAME" >/dev/null; then group_opt=(--gid "$USER_NAME"); fi
  useradd --system "${group_opt[@]}" --home-dir /var/lib/nubis --no-create-home \
    --shell /usr/sbin/nologin --comment "Nubis" "$USER_NAME"
  say "user $USER_NAME" "created (system user, no login)"
fi
if [ "$ROLE" = agent ] && [ -z "$ROOT" ] && ! getent group docker >/dev/null; then
  echo "  WARNING: no group 'docker': install Docker (apt-get install docker.io) before starting" \
       "the agent; the unit reaches the Docker socket through that group." >&2
fi

# --- files ------------------------------------------------------------------------------------
parent_dir /usr/local/bin
put "$BINARY" /usr/local/bin/nubis 0755 root:root replace
put "$HERE/nubis-nodes" /usr/local/bin/nubis-nodes 0755 root:root replace

parent_dir /etc
ensure_dir /etc/nubis 0750 "root:$USER_NAME"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -n "$CONFIG" ]; then
  put "$CONFIG" "/etc/nubis/$CONF" 0640 "root:$USER_NAME" backup
else
  cp "$EXAMPLE" "$WORK/$CONF"
  if [ "$ROLE" = agent ]; then
    # Every agent needs its own node id; the host name is unique and stable on most fleets.
    node=$(hostname -s 2>/dev/null || hostname)
    sed -i "s/^node_id = .*/node_id = \"$node\"/" "$WORK/$CONF"
  fi
  put "$WORK/$CONF" "/etc/nubis/$CONF" 0640 "root:$USER_NAME" keep
fi
put "$HERE/nubis.env.example" /etc/nubis/nubis.env 0600 root:root keep

parent_dir /var/lib
ensure_dir "$DATA" 0750 "$USER_NAME:$USER_NAME"

parent_dir /etc/systemd/system
put "$HERE/$UNIT" "/etc/systemd/system/$UNIT" 0644 root:root replace

# --- systemd ----------------------------------------------------------------------------------
if [ -n "$ROOT" ]; then
  echo "Staged into $ROOT; systemd was not touched."
  exit 0
fi
if [ ! -d /run/systemd/system ]; then
  echo "systemd is not running here: start it by hand, as the nubis user, with the env file:"
  echo "  set -a; . /etc/nubis/nubis.env; set +a; /usr/local/bin/nubis $ROLE --config /etc/nubis/$CONF"
  [ "$ENABLE$START" = 00 ] || die "--enable/--start need systemd"
  exit 0
fi
systemctl daemon-reload
say "systemctl daemon-reload" "done"
if [ "$ENABLE" = 1 ]; then systemctl enable "$UNIT" >/dev/null 2>&1; say "systemctl enable $UNIT" "done"; fi
active=0
systemctl is-active --quiet "$UNIT" && active=1
if [ "$active" = 1 ] && [ ${#CHANGED[@]} -gt 0 ]; then
  echo "$UNIT is running and these changed: ${CHANGED[*]}"
  echo "It was not restarted. When ready (drain an agent first, see docs/operations.md):"
  echo "  systemctl restart $UNIT"
elif [ "$START" = 1 ] && [ "$active" = 0 ]; then
  systemctl start "$UNIT"
  say "systemctl start $UNIT" "done"
elif [ "$active" = 1 ]; then
  say "$UNIT" "running, nothing to restart"
fi

echo
echo "Next:"
echo "  - edit /etc/nubis/$CONF (addresses, node id) and put the secrets in /etc/nubis/nubis.env"
[ "$ROLE" = agent ] && echo "  - build the runtime images on this node: bash scripts/build-images.sh"
[ "$START" = 1 ] || echo "  - systemctl enable --now $UNIT"
echo "  - journalctl -u $UNIT -f"
