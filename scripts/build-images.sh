#!/usr/bin/env bash
# Builds the images Nubis runs function instances in (see docs/contract.md).
# Usage: scripts/build-images.sh [--test-images]
#   NUBIS_BASE_IMAGE=debian:bookworm-slim  use a registry image as base instead of making one offline.
# An image is rebuilt only when its directory, its base or its parent image changed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_TAG=nubis/base:bookworm
TEST_IMAGES=0
LOG=$(mktemp)
WORK=""

die() { echo "build-images: $*" >&2; exit 1; }

cleanup() {
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    # debootstrap mounts proc/sys inside the target; an interrupted run must not rm through them.
    awk -v r="$WORK/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l || true
    rm -rf --one-file-system "$WORK"
  fi
  rm -f "$LOG"
}
trap cleanup EXIT

for arg in "$@"; do
  case $arg in
    --test-images) TEST_IMAGES=1 ;;
    -h|--help) sed -n '2,5s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

# Order matters: test images build FROM nubis/runtime-custom-debian12.
DIRS=("$ROOT/runtimes/python3" "$ROOT/runtimes/nodejs" "$ROOT/runtimes/custom-debian12")
if [ "$TEST_IMAGES" = 1 ]; then
  for d in "$ROOT"/tests/images/*/; do [ -f "$d/Dockerfile" ] && DIRS+=("${d%/}"); done
fi
TOTAL=$((${#DIRS[@]} + 1))
STEP=0

progress() { printf '[%d/%d] %s: %s\n' "$STEP" "$TOTAL" "$1" "$2"; }

fail() {
  progress "$1" "FAILED ($2); last lines of the log:" >&2
  tail -n 40 "$LOG" | sed 's/^/    /' >&2
  exit 1
}

# The mirror is whatever this host's apt already uses, so nothing site-specific lives in the repo.
apt_mirror() {
  local m=""
  [ -f /etc/apt/sources.list.d/debian.sources ] &&
    m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  [ -z "$m" ] && [ -f /etc/apt/sources.list ] &&
    m=$(awk '$1 == "deb" && !/security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) {print $i; exit}}' \
      /etc/apt/sources.list)
  [ -n "$m" ] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
  echo "$m"
}

# No registry is reachable on our machines, so the base is made from Debian packages alone.
make_base() {
  [ "$(id -u)" = 0 ] || die "making $BASE_TAG needs root (debootstrap); or set NUBIS_BASE_IMAGE"
  if ! command -v debootstrap >/dev/null; then
    progress "$BASE_TAG" "installing debootstrap..."
    { apt-get install -y debootstrap || { apt-get update && apt-get install -y debootstrap; }; } >"$LOG" 2>&1 ||
      fail "$BASE_TAG" "apt-get install debootstrap"
  fi
  local mirror t0=$SECONDS
  mirror=$(apt_mirror)
  progress "$BASE_TAG" "missing, running debootstrap (minbase bookworm)..."
  WORK=$(mktemp -d /var/tmp/nubis-base.XXXXXX)
  # A subdirectory, because mktemp's 0700 mode would become the image's / and lock out uid 10001.
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$LOG" 2>&1 || fail "$BASE_TAG" debootstrap
  chmod 0755 "$WORK/rootfs"
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
  tar -C "$WORK/rootfs" --numeric-owner -c . |
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' - "$BASE_TAG" >"$LOG" 2>&1 || fail "$BASE_TAG" "docker import"
  rm -rf --one-file-system "$WORK"
  WORK=""
  progress "$BASE_TAG" "made in $((SECONDS - t0))s"
}

ensure_base() {
  STEP=1
  if [ -n "${NUBIS_BASE_IMAGE:-}" ]; then
    BASE=$NUBIS_BASE_IMAGE
    if docker image inspect "$BASE" >/dev/null 2>&1; then
      progress "$BASE" "present (NUBIS_BASE_IMAGE)"
    else
      progress "$BASE" "pulling (NUBIS_BASE_IMAGE)..."
      docker pull "$BASE" >"$LOG" 2>&1 || fail "$BASE" "docker pull"
    fi
  else
    BASE=$BASE_TAG
    if docker image inspect "$BASE" >/dev/null 2>&1; then progress "$BASE" "present"; else make_base; fi
  fi
}

# Files (sorted, path + content), the base name, and the ids of the FROM images: a rebuilt parent
# must rebuild its children even though their own files did not change.
content_hash() {
  local dir=$1
  {
    (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    echo "base $BASE"
    awk 'toupper($1) == "FROM" {for (i = 2; i <= NF; i++) if ($i !~ /^--/) {print $i; break}}' "$dir/Dockerfile" |
      while read -r ref; do
        ref=${ref//"\${BASE}"/$BASE}
        ref=${ref//"\$BASE"/$BASE}
        echo "from $ref $(docker image inspect -f '{{.Id}}' "$ref" 2>/dev/null)"
      done
  } | sha256sum | cut -c1-64
}

build() {
  local dir=$1 name hash current old t0=$SECONDS
  case $dir in
    "$ROOT"/runtimes/*) name=nubis/runtime-$(basename "$dir") ;;
    *) name=nubis/test-$(basename "$dir") ;;
  esac
  hash=$(content_hash "$dir")
  current=$(docker image inspect -f '{{index .Config.Labels "nubis.content-hash"}}' "$name:latest" 2>/dev/null || true)
  if [ "$current" = "$hash" ]; then
    progress "$name" "up to date"
    return
  fi
  progress "$name" "building..."
  old=$(docker image inspect -f '{{.Id}}' "$name:latest" 2>/dev/null || true)
  docker build --network host --force-rm --build-arg "BASE=$BASE" --label "nubis.content-hash=$hash" \
    -t "$name:latest" "$dir" >"$LOG" 2>&1 || fail "$name" "docker build"
  # The replaced image would linger as <none>; leave it if a container still uses it.
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$name:latest")" ]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
  progress "$name" "built in $((SECONDS - t0))s"
}

docker info >/dev/null 2>&1 || die "the docker daemon is not reachable (is dockerd running?)"
ensure_base
for dir in "${DIRS[@]}"; do
  STEP=$((STEP + 1))
  build "$dir"
done
