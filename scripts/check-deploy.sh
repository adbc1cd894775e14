#!/usr/bin/env bash
# Check the deployment files without deploying anything: deploy/ (systemd units, install.sh,
# example configs, nubis-nodes), docker-compose.yml and the Dockerfiles. Nothing here starts a
# service or talks to anything but this machine.
#
#   bash scripts/check-deploy.sh
#
# Checks, each a PASS or FAIL line:
#   - shell: bash -n and shellcheck of the deploy scripts; python3 compiles nubis-nodes and its
#     request signing reproduces the server's test vectors (src/api/auth.rs);
#   - units: systemd-analyze verify, in a staged root (no systemd needs to run here);
#   - install.sh into temporary roots: every file with its mode, a second run changing nothing,
#     configs kept or replaced (with a backup) as documented;
#   - install.sh for real (user, ownership) inside a throwaway container with no network, when
#     Docker and the nubis/base:bookworm image (scripts/build-images.sh) are there;
#   - config keys: every key in the example configs, the env template and docker-compose.yml
#     is one config/nubis.toml documents (sections still PENDING on another branch are reported,
#     not failed); then each example is loaded by the real binary (NUBIS_BIN, else
#     target/{debug,release}/nubis), run in an empty network namespace so nothing leaves the
#     machine, and must get past configuration loading;
#   - compose: `docker-compose config` (or `docker compose config`) accepts docker-compose.yml;
#     image names carry no registry host; every COPY source of the Dockerfile exists.
# Installs what it needs from Debian packages (systemd, shellcheck, docker-compose, python3,
# python3-yaml) when missing. The last line is `N passed, N failed`; the exit status is
# non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3     # Debian's Python: tomllib (3.11) and the yaml module docker-compose uses

# Sections of deploy/examples and docker-compose.yml that another branch is adding (store-sql):
# tolerated while config/nubis.toml does not document them, validated as soon as it does.
PENDING_SECTIONS=(database codestore)

PASSED=0
FAILED=0
WORK=$(mktemp -d /tmp/nubis-check-deploy.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
note() { echo "     $*"; }

# --- tools from Debian --------------------------------------------------------------------------
pkg_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]; }
need=()
for p in systemd shellcheck python3 python3-yaml; do pkg_installed "$p" || need+=("$p"); done
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  need+=(docker-compose)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=()
  [ "$(id -u)" = 0 ] || SUDO=(sudo -n)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q </dev/null >/dev/null
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
    --no-install-recommends "${need[@]}" </dev/null >/dev/null
fi

# --- shell and python ---------------------------------------------------------------------------
SCRIPTS=(deploy/install.sh scripts/check-deploy.sh)
for s in "${SCRIPTS[@]}"; do
  if out=$(bash -n "$s" 2>&1 && shellcheck -S warning "$s" 2>&1); then pass "shell: $s"; else fail "shell: $s"; echo "$out"; fi
done

if out=$("$PY" - "$ROOT/deploy/nubis-nodes" 2>&1 <<'EOF'
import importlib.machinery, importlib.util, sys
loader = importlib.machinery.SourceFileLoader("nubis_nodes", sys.argv[1])
spec = importlib.util.spec_from_loader("nubis_nodes", loader)
m = importlib.util.module_from_spec(spec)
loader.exec_module(m)
# doc_vector_get and query_and_header_canonicalisation in src/api/auth.rs
empty = m.sha256_hex(b"")
h = {"accept": "application/json", "host": "127.0.0.1:9000",
     "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
     "x-acs-action": "GetFunction", "x-acs-content-sha256": empty,
     "x-acs-date": "2024-01-01T00:00:00Z", "x-acs-signature-nonce": "0123456789abcdef0123456789abcdef",
     "x-acs-version": "2023-03-30"}
sts = m.string_to_sign(m.canonical_request("GET", "/2023-03-30/functions/demo", "qualifier=LATEST", h, empty))
assert sts == "ACS3-HMAC-SHA256\ne4ae74c915056ef52b101564daea0bf0b1ae24f322b4b122e3e62345dfba9175", sts
sig = m.signature("SECRET", sts)
assert sig == "f299fc316c1f4d4240ca91f8d4420d52e6aad9ab9131a3eb0ce7cbf338ed8f0b", sig
q = m.canonical_query("b=x+y&a=1%2B2&a=0&flag&c=&&z=%7e%2a")
assert q == "a=0&a=1%2B2&b=x%20y&c=&flag=&z=~%2A", q
assert m.main(["--help"]) == 0
EOF
); then pass "nubis-nodes: signs as the server verifies (auth.rs vectors)"; else fail "nubis-nodes"; echo "$out"; fi

# --- install.sh into staging roots --------------------------------------------------------------
STUB=$WORK/nubis-stub
printf '#!/bin/sh\necho "nubis 0.0.0 (check-deploy stub)"\n' >"$STUB"
chmod 0755 "$STUB"

# expect <root> <mode> <path>...: each path exists with that mode
expect() {
  local root=$1 mode=$2 p got bad=0
  shift 2
  for p in "$@"; do
    got=$(stat -c '%a' "$root$p" 2>/dev/null || echo missing)
    if [ "$got" != "$mode" ]; then echo "  $p: mode $got, expected $mode"; bad=1; fi
  done
  return "$bad"
}

check_install() {
  local r=$WORK/root out host
  bash deploy/install.sh server --binary "$STUB" --root "$r" >"$WORK/i1.log" 2>&1 || { cat "$WORK/i1.log"; return 1; }
  DESTDIR=$r bash deploy/install.sh agent --binary "$STUB" >"$WORK/i2.log" 2>&1 || { cat "$WORK/i2.log"; return 1; }
  expect "$r" 755 /usr/local/bin/nubis /usr/local/bin/nubis-nodes || return 1
  expect "$r" 750 /etc/nubis /var/lib/nubis /var/lib/nubis-agent || return 1
  expect "$r" 640 /etc/nubis/server.toml /etc/nubis/agent.toml || return 1
  expect "$r" 600 /etc/nubis/nubis.env || return 1
  expect "$r" 644 /etc/systemd/system/nubis-server.service /etc/systemd/system/nubis-agent.service || return 1
  cmp -s "$STUB" "$r/usr/local/bin/nubis" || { echo "  binary differs from --binary"; return 1; }
  cmp -s deploy/examples/controller.toml "$r/etc/nubis/server.toml" || { echo "  server.toml is not the example"; return 1; }
  host=$(hostname -s 2>/dev/null || hostname)
  grep -qx "node_id = \"$host\"" "$r/etc/nubis/agent.toml" || { echo "  agent.toml: node_id not set to $host"; return 1; }
  # Second run: nothing changes.
  bash deploy/install.sh agent --binary "$STUB" --root "$r" >"$WORK/i3.log" 2>&1 || { cat "$WORK/i3.log"; return 1; }
  if out=$(grep -E '  +(installed|updated|created)' "$WORK/i3.log"); then echo "  second run changed things:"; echo "$out"; return 1; fi
  # An operator's edits are kept; --config replaces them and keeps a backup.
  echo "# edited" >>"$r/etc/nubis/server.toml"
  bash deploy/install.sh server --binary "$STUB" --root "$r" >"$WORK/i4.log" 2>&1 || { cat "$WORK/i4.log"; return 1; }
  grep -q '^# edited' "$r/etc/nubis/server.toml" || { echo "  an edited server.toml was overwritten"; return 1; }
  bash deploy/install.sh server --binary "$STUB" --root "$r" --config deploy/examples/controller.toml >"$WORK/i5.log" 2>&1 \
    || { cat "$WORK/i5.log"; return 1; }
  cmp -s deploy/examples/controller.toml "$r/etc/nubis/server.toml" || { echo "  --config did not replace server.toml"; return 1; }
  grep -q '^# edited' "$r/etc/nubis/server.toml.bak" || { echo "  no backup of the replaced server.toml"; return 1; }
  # Refusals: no role, a missing binary, --start with --root.
  if bash deploy/install.sh --root "$r" >/dev/null 2>&1; then echo "  accepted no role"; return 1; fi
  if bash deploy/install.sh agent --binary "$WORK/nope" --root "$r" >/dev/null 2>&1; then echo "  accepted a missing binary"; return 1; fi
  if bash deploy/install.sh agent --binary "$STUB" --root "$r" --start >/dev/null 2>&1; then echo "  accepted --start with --root"; return 1; fi
  return 0
}
if out=$(check_install 2>&1); then pass "install.sh into a staging root (modes, idempotence, config policy)"; else fail "install.sh into a staging root"; echo "$out"; fi

# --- systemd units --------------------------------------------------------------------------------
check_units() {
  local r=$WORK/root out
  # verify --root wants the system's own units (sysinit.target, ...) under the root too.
  mkdir -p "$r/usr/lib/systemd"
  cp -a /usr/lib/systemd/system "$r/usr/lib/systemd/"
  # Any output is a finding: verify exits 0 on unknown keys and only warns.
  out=$(systemd-analyze verify --root="$r" "$r/etc/systemd/system/nubis-server.service" \
        "$r/etc/systemd/system/nubis-agent.service" 2>&1) || { echo "$out"; return 1; }
  if [ -n "$out" ]; then echo "$out"; return 1; fi
  # What the units promise in docs/operations.md.
  local u
  for u in nubis-server nubis-agent; do
    for want in 'Restart=on-failure' 'KillSignal=SIGTERM' 'EnvironmentFile=-/etc/nubis/nubis.env' 'NoNewPrivileges=yes' \
                'ProtectSystem=strict' 'User=nubis'; do
      grep -qx "$want" "deploy/$u.service" || { echo "  $u.service: no '$want'"; return 1; }
    done
  done
  grep -qx 'SupplementaryGroups=docker' deploy/nubis-agent.service || { echo "  agent: no docker group"; return 1; }
  # TimeoutStopSec above the shutdown grace: server 2 x grace + 30 s, agent grace + 60 s.
  local grace ts ta
  grace=$(awk -F' *= *' '/^shutdown_grace_secs/ {print $2; exit}' config/nubis.toml)
  ts=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' deploy/nubis-server.service)
  ta=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' deploy/nubis-agent.service)
  [ "${ts:-0}" -ge $((2 * grace + 30)) ] || { echo "  server TimeoutStopSec=$ts < 2 x $grace + 30"; return 1; }
  [ "${ta:-0}" -ge $((grace + 60)) ] || { echo "  agent TimeoutStopSec=$ta < $grace + 60"; return 1; }
}
if [ ! -d "$WORK/root/etc/systemd/system" ]; then
  fail "systemd units: the staging install failed, nothing to verify"
elif out=$(check_units 2>&1); then
  pass "systemd-analyze verify nubis-server.service nubis-agent.service"
else
  fail "systemd units"; echo "$out"
fi

# --- install.sh for real, in a throwaway container ----------------------------------------------
if ! docker info >/dev/null 2>&1; then
  note "skipped: install.sh as root in a container (no Docker engine here)"
elif ! docker image inspect nubis/base:bookworm >/dev/null 2>&1; then
  note "skipped: install.sh as root in a container (no nubis/base:bookworm: bash scripts/build-images.sh)"
else
  # --network none: nothing in it can reach anything. The checkout is mounted read-only.
  if out=$(docker run --rm --network none -v "$ROOT:/src:ro" -v "$STUB:/stub:ro" nubis/base:bookworm bash -c '
      set -e
      getent group docker >/dev/null || groupadd --system docker
      bash /src/deploy/install.sh agent --binary /stub
      bash /src/deploy/install.sh server --binary /stub
      second=$(bash /src/deploy/install.sh agent --binary /stub)
      echo "$second"
      if echo "$second" | grep -E "  +(installed|updated|created)"; then echo "second run changed things"; exit 1; fi
      getent passwd nubis | grep -q ":/usr/sbin/nologin$" || { echo "no system user nubis"; exit 1; }
      [ "$(stat -c %U:%G /var/lib/nubis-agent)" = nubis:nubis ] || { echo "data dir not owned by nubis"; exit 1; }
      [ "$(stat -c %U:%G /etc/nubis)" = root:nubis ] || { echo "/etc/nubis not root:nubis"; exit 1; }
      [ "$(stat -c %U:%G:%a /etc/nubis/nubis.env)" = root:root:600 ] || { echo "nubis.env not root-only"; exit 1; }
      [ "$(stat -c %U:%G:%a /etc/nubis/agent.toml)" = root:nubis:640 ] || { echo "agent.toml not root:nubis 0640"; exit 1; }
      # The service user can read its config but not the secrets.
      runuser -u nubis -- cat /etc/nubis/agent.toml >/dev/null
      if runuser -u nubis -- cat /etc/nubis/nubis.env >/dev/null 2>&1; then echo "nubis can read nubis.env"; exit 1; fi
    ' 2>&1); then
    pass "install.sh as root in a container (system user, ownership, idempotence)"
  else
    fail "install.sh as root in a container"; echo "$out"
  fi
fi

# --- config keys --------------------------------------------------------------------------------
COMPOSE=(docker-compose)
command -v docker-compose >/dev/null 2>&1 || COMPOSE=(docker compose)
# Interpolated by compose itself, so the env check sees what containers would get.
"${COMPOSE[@]}" -f docker-compose.yml config >"$WORK/compose.yml" 2>"$WORK/compose.err" || true

if out=$("$PY" - "$WORK" "${PENDING_SECTIONS[*]}" 2>&1 <<'EOF'
import re, sys, tomllib, yaml
work, pending = sys.argv[1], set(sys.argv[2].split())
documented = tomllib.load(open("config/nubis.toml", "rb"))
FREE_MAPS = {("agent", "images")}       # BTreeMap<String, String> in src/config.rs: any key
main_rs = open("src/main.rs").read()
FLAG_ENV = set(re.findall(r'env = "(NUBIS_[A-Z_]+)"', main_rs))
bad, warned = [], set()

def check(path, value, where):
    node = documented
    for i, part in enumerate(path):
        if tuple(path[:i]) in FREE_MAPS:
            return
        if not isinstance(node, dict) or part not in node:
            if path[0] in pending and path[0] not in documented:
                warned.add(path[0])
                return
            bad.append(f"{where}: {'.'.join(path)} is not a key of config/nubis.toml")
            return
        node = node[part]
    if value is not None and not isinstance(node, dict) and type(node) is not type(value):
        bad.append(f"{where}: {'.'.join(path)} is a {type(value).__name__}, config/nubis.toml has a {type(node).__name__}")

def walk(table, prefix, where):
    for k, v in table.items():
        if isinstance(v, dict) and tuple(prefix + [k]) not in FREE_MAPS:
            if not v:
                check(prefix + [k], None, where)
            walk(v, prefix + [k], where)
        else:
            check(prefix + [k], v, where)

def env_var(name, where):
    if name in FLAG_ENV or not name.startswith("NUBIS_"):
        return
    if "__" not in name:
        bad.append(f"{where}: {name} is neither a NUBIS_<SECTION>__<KEY> nor a flag's env var")
        return
    check(name[len("NUBIS_"):].lower().split("__"), None, where)

for f in ("deploy/examples/controller.toml", "deploy/examples/agent.toml"):
    walk(tomllib.load(open(f, "rb")), [], f)
for line in open("deploy/nubis.env.example"):
    m = re.match(r"^#?(NUBIS_[A-Z0-9_]+)=", line.strip())
    if m:
        env_var(m.group(1), "deploy/nubis.env.example")
compose = yaml.safe_load(open(f"{work}/compose.yml")) or {}
for name, svc in (compose.get("services") or {}).items():
    env = svc.get("environment") or {}
    for k in (env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]):
        env_var(k, f"docker-compose.yml {name}")
    if name in ("controller", "agent-1", "agent-2") and not any(k.startswith("NUBIS_") for k in env):
        bad.append(f"docker-compose.yml {name}: no NUBIS_ settings seen (did `config` fail?)")
for s in sorted(warned):
    print(f"     PENDING [{s}]: not in config/nubis.toml yet (store-sql branch); not validated")
if bad:
    print("\n".join(bad))
    sys.exit(1)
EOF
); then
  pass "config keys of deploy/examples, nubis.env.example and docker-compose.yml are documented keys"
  [ -z "$out" ] || echo "$out"
else
  fail "config keys"; echo "$out"
fi

# The real loader, which refuses unknown keys. In an empty network namespace, so the example
# addresses (10.0.0.x) are unreachable by construction: the process gets past loading the
# config (which fails within milliseconds when a key is wrong), then retries etcd, Kafka and
# OpenSearch, or exits on what it cannot reach, and is stopped after 5 s either way.
BIN=${NUBIS_BIN:-}
if [ -n "$BIN" ] && [ ! -x "$BIN" ]; then note "NUBIS_BIN=$BIN is not an executable; looking for a built one"; BIN=""; fi
if [ -z "$BIN" ]; then
  for b in "${CARGO_TARGET_DIR:-$ROOT/target}/debug/nubis" "${CARGO_TARGET_DIR:-$ROOT/target}/release/nubis"; do
    if [ -x "$b" ]; then BIN=$b; break; fi
  done
fi
load_with() { # load_with <server|agent> <config file> : prints the output
  local d
  d=$(mktemp -d "$WORK/load.XXXXXX")
  (cd "$d" && env -i PATH="$PATH" RUST_LOG=warn NUBIS_CLUSTER__SECRET=check-deploy \
     timeout 5 unshare --net -- "$BIN" "$1" --config "$2" --data-dir "$d/data" --listen 127.0.0.1:0 </dev/null 2>&1) || true
}
check_load() {
  local f role out stripped
  # Sanity first: the binary does refuse an unknown key, so a pass below means something.
  printf '[server]\nno_such_key = 1\n' >"$WORK/bogus.toml"
  out=$(load_with server "$WORK/bogus.toml")
  echo "$out" | grep -q 'loading configuration' || { echo "  the binary accepted an unknown key:"; echo "$out"; return 1; }
  for f in controller agent; do
    role=server; [ "$f" = agent ] && role=agent
    stripped=$WORK/$f.toml
    # Pending sections the binary cannot know yet are left out (reported above).
    "$PY" - "deploy/examples/$f.toml" "$stripped" "${PENDING_SECTIONS[*]}" <<'EOF'
import re, sys, tomllib
src, dst, pending = sys.argv[1], sys.argv[2], sys.argv[3].split()
known = tomllib.load(open("config/nubis.toml", "rb"))
drop = {s for s in pending if s not in known}
out, skipping = [], False
for line in open(src):
    m = re.match(r"^\[([A-Za-z0-9_.]+)\]", line)
    if m:
        skipping = m.group(1).split(".")[0] in drop
    if not skipping:
        out.append(line)
open(dst, "w").write("".join(out))
EOF
    out=$(load_with "$role" "$stripped")
    if echo "$out" | grep -q 'loading configuration'; then echo "  deploy/examples/$f.toml:"; echo "$out"; return 1; fi
    echo "  deploy/examples/$f.toml: loaded; then: $(echo "$out" | grep -m1 -E 'WARN|ERROR|Error' | cut -c1-150)"
  done
}
if [ -z "$BIN" ]; then
  note "skipped: loading the examples with the binary (none built; set NUBIS_BIN)"
elif ! unshare --net -- true 2>/dev/null; then
  note "skipped: loading the examples with the binary (cannot make a network namespace here)"
elif out=$(check_load 2>&1); then
  pass "the examples load in $BIN"; echo "$out"
else
  fail "the examples do not load in $BIN"; echo "$out"
fi

# --- compose and images -------------------------------------------------------------------------
if [ -s "$WORK/compose.yml" ] && ! grep -qi 'error' "$WORK/compose.err"; then
  services=$("${COMPOSE[@]}" -f docker-compose.yml config --services 2>/dev/null | sort | tr '\n' ' ')
  want="agent-1 agent-2 controller etcd kafka minio minio-init opensearch postgres "
  if [ "$services" = "$want" ]; then
    pass "${COMPOSE[*]} config: docker-compose.yml is valid ($services)"
  else
    fail "docker-compose.yml services: got '$services', expected '$want'"
  fi
else
  fail "${COMPOSE[*]} config"; cat "$WORK/compose.err"
fi

check_images() {
  local bad=0 ref src
  # Plain image names only: a registry host in a reference (a dot or a port before the first
  # slash) would tie the files to one registry.
  while read -r ref; do
    case ${ref%%/*} in
      *.*|*:*) if [[ $ref == */* ]]; then echo "  image '$ref' names a registry host"; bad=1; fi ;;
    esac
  done < <(sed -n 's/^ *image: *//p' docker-compose.yml; awk 'toupper($1) == "FROM" {print $2}' Dockerfile deploy/compose/etcd/Dockerfile)
  # Every COPY source of the root Dockerfile is in the build context.
  while read -r src; do
    [ -e "$src" ] || { echo "  Dockerfile: COPY $src: no such path"; bad=1; }
    if grep -qx "$src" .dockerignore; then echo "  Dockerfile: COPY $src is excluded by .dockerignore"; bad=1; fi
  done < <(awk 'toupper($1) == "COPY" && $2 !~ /^--/ {for (i = 2; i < NF; i++) print $i}' Dockerfile)
  return "$bad"
}
if out=$(check_images 2>&1); then pass "Dockerfiles and images: plain image names, COPY sources present"; else fail "Dockerfiles and images"; echo "$out"; fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
