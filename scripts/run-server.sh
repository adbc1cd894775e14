#!/usr/bin/env bash
# Run the Nubis server: install dependencies, build the runtime images and the release binary, then
# exec `nubis server` with the given arguments (it replaces this shell, so Ctrl-C / SIGTERM reach it).
#
#   bash scripts/run-server.sh [--listen 127.0.0.1:9000] [--data-dir ./data] [--config config/nubis.toml]
#
# Runs from the repository root: relative paths are relative to it. The data dir defaults to ./data
# (env NUBIS_DATA_DIR or --data-dir override it). On the first start the server prints an admin
# access key once on stdout; `target/release/nubis admin create-key` makes more.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi

step() { echo "==> $*" >&2; }

step "install dependencies"
bash scripts/install-deps.sh >&2

step "build runtime images"
[ -f scripts/build-images.sh ] || { echo "scripts/build-images.sh is missing" >&2; exit 1; }
bash scripts/build-images.sh >&2

step "cargo build --release"
cargo build --release --bin nubis >&2

export NUBIS_DATA_DIR="${NUBIS_DATA_DIR:-./data}"
step "starting: target/release/nubis server $* (data dir default: $NUBIS_DATA_DIR)"
exec target/release/nubis server "$@"
