#!/usr/bin/env bash
# `make test` on a stock Debian 12, where Node.js is Debian's own nodejs 18 and
# npm 9 (not NodeSource's): in a debian:bookworm container it apt-installs
# Debian's nodejs and npm, runs scripts/install-deps.sh, npm ci for every
# package.json (make e2e-deps) and the unit, e2e and browser suites through
# ctest. Not part of `make test` (it needs Docker); re-run it after changing a
# Node.js pin, install-deps.sh or the Node.js test harness.
#
#   scripts/node18-test.sh                    build inside the container: make test CTEST_ARGS='-L ...'
#                                             (slow: a full build on this machine's cores)
#   scripts/node18-test.sh --build-dir build  reuse a build made on this host (Debian 12 too): copied
#                                             into the container at the same path, ctest -L there
#   --rev REV                                 the tree of commit REV (git archive) instead of the
#                                             working tree, e.g. --rev HEAD while others have edits open
#   --labels 'unit|e2e|browser'               the ctest -L regex (default)
#   -V                                        ctest -V: every test's output (the node --test spec lines)
#
# The container gets a copy of the working tree (tracked and untracked files,
# no node_modules, no build dirs) or of --rev's tree: nothing it does writes to
# this checkout.
# Docker runs as elsewhere in this repo: without a bridge (this starts
# `dockerd --bridge=none --iptables=false` when no daemon answers and we are
# root, and stops it at the end), --network host on every build and run, and
# the base image made by scripts/docker-base.sh (debootstrap) when missing.
# Exit 0 passed, 1 failed, 77 skipped (Docker cannot run here, or the base
# image cannot be made; the reason is printed).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
docker=${DOCKER:-docker}
export DOCKER_BUILDKIT=0
image=canaryd-node18:bookworm

build_dir="" rev="" labels='unit|e2e|browser' verbose=0
while (($#)); do
  case "$1" in
    --build-dir) build_dir=$(realpath "$2"); shift 2 ;;
    --rev) rev=$2; shift 2 ;;
    --labels) labels=$2; shift 2 ;;
    -V|--verbose) verbose=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "node18-test: unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$repo"
if [[ -n "$rev" ]] && ! git rev-parse -q --verify "$rev^{commit}" >/dev/null; then
  echo "node18-test: --rev $rev is not a commit" >&2; exit 2
fi
if [[ -n "$build_dir" && ! -f "$build_dir/CTestTestfile.cmake" ]]; then
  echo "node18-test: $build_dir is not a configured build dir (no CTestTestfile.cmake)" >&2; exit 2
fi

skip() { echo "SKIPPED: node18-test: $*"; exit 77; }
say() { echo "node18-test: $*"; }

tmp=$(mktemp -d /tmp/canaryd-node18-test.XXXXXX)
dockerd_pid=""
cleanup() {
  if [[ -n "$dockerd_pid" ]]; then
    kill -TERM "$dockerd_pid" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- Can Docker run here? (as scripts/docker-test.sh) ---------------------------
command -v "$docker" >/dev/null 2>&1 ||
  { echo "node18-test: no docker CLI (scripts/install-deps.sh installs it: apt-get install docker.io)" >&2; exit 1; }
if ! timeout 20 $docker info >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v dockerd >/dev/null 2>&1 && ! pgrep -x dockerd >/dev/null; then
    say "no Docker daemon answers; starting dockerd --bridge=none --iptables=false"
    dockerd --bridge=none --iptables=false >"$tmp/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 300); do
      timeout 5 $docker info >/dev/null 2>&1 && break
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.1
    done
    if ! timeout 20 $docker info >/dev/null 2>&1; then
      tail -5 "$tmp/dockerd.log" | sed 's/^/  dockerd: /'
      skip "dockerd did not start here (see its log above)"
    fi
  else
    skip "no Docker daemon reachable (not running, or no permission on its socket: $($docker info 2>&1 | tail -1))"
  fi
fi
"$repo/scripts/docker-base.sh" debian:bookworm 2>"$tmp/base.err"
base_rc=$?
sed 's/^/  /' "$tmp/base.err" >&2
if ((base_rc == 3)); then
  skip "$(tail -1 "$tmp/base.err" | sed 's/^docker-base: //')"
elif ((base_rc != 0)); then
  echo "node18-test: scripts/docker-base.sh failed ($base_rc)" >&2; exit 1
fi
if ! $docker run --rm --network host --entrypoint /bin/true debian:bookworm 2>"$tmp/run.err"; then
  tail -3 "$tmp/run.err" | sed 's/^/  docker: /'
  skip "Docker cannot start containers here (see above)"
fi

# --- The image: Debian's nodejs + npm, then install-deps.sh ----------------------
# Cached by Docker: rebuilt only when install-deps.sh changes.
mkdir -p "$tmp/ctx"
cp "$repo/scripts/install-deps.sh" "$tmp/ctx/"
cat >"$tmp/ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm
ARG DEBIAN_FRONTEND=noninteractive
# No service starts inside the container (redis-server, prometheus, docker ...).
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
# Node.js and npm from Debian's own archive, as on a stock Debian 12.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
COPY install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh
DOCKERFILE
say "building $image (debian:bookworm + Debian's nodejs and npm + scripts/install-deps.sh; minutes the first time)"
if ! $docker build --network host -t "$image" "$tmp/ctx" >"$tmp/build.log" 2>&1; then
  tail -30 "$tmp/build.log"; echo "node18-test: docker build failed" >&2; exit 1
fi
if grep -q '^install-deps: installing' "$tmp/build.log"; then
  grep '^install-deps: installing' "$tmp/build.log" | sed 's/^/  /'
else
  say "$image is up to date (Docker's cache; install-deps.sh unchanged)"
fi

# --- The run ----------------------------------------------------------------------
# Inside: the working tree at this checkout's path, so a host build dir's
# absolute paths (CTestTestfile.cmake) hold unchanged.
inner=$(cat <<'INNER'
set -euo pipefail
mkdir -p "$REPO" && tar -x -C "$REPO"
cd "$REPO"
echo "node18-test: node $(node --version), npm $(npm --version)," \
  "Debian package nodejs $(dpkg-query -W -f='${Version}' nodejs), $(chromium --version 2>/dev/null)"
case "$(dpkg-query -W -f='${Version}' nodejs)" in
  18.*) ;; *) echo "node18-test: nodejs is not Debian 12's 18.x" >&2; exit 1 ;;
esac
[[ "$(command -v node)" == /usr/bin/node ]] || { echo "node18-test: node is not Debian's /usr/bin/node" >&2; exit 1; }
echo "node18-test: scripts/install-deps.sh (again: must have nothing left to install)"
scripts/install-deps.sh
if [[ -n "$HOST_BUILD" ]]; then
  echo "node18-test: the host's build $HOST_BUILD (binaries and ctest files, no objects)"
  mkdir -p "$HOST_BUILD"
  tar -C /host-build --exclude='*.o' --exclude='*.a' --exclude='*.gch' --exclude='*.pch' \
    --exclude=Testing -c . | tar -x -C "$HOST_BUILD"
  make --no-print-directory e2e-deps
  cd "$HOST_BUILD" && ctest --output-on-failure --timeout 600 -j 2 -L "$LABELS" $CTEST_V
else
  make --no-print-directory test CTEST_ARGS="-L '$LABELS' $CTEST_V"
fi
INNER
)
mounts=()
[[ -n "$build_dir" ]] && mounts=(-v "$build_dir:/host-build:ro")
# npm ci reaches the registry with the host's CA bundle: where the network
# intercepts TLS with a CA this host trusts, the container trusts it too.
ca=/etc/ssl/certs/ca-certificates.crt
[[ -f "$ca" ]] && mounts+=(-v "$ca:$ca:ro" -e NODE_EXTRA_CA_CERTS="$ca")
tree() {  # the source tree as a tar stream on stdout
  if [[ -n "$rev" ]]; then
    git archive --format=tar "$rev"
  else
    git ls-files -z -co --exclude-standard |
      while IFS= read -r -d '' f; do [[ -e "$f" || -L "$f" ]] && printf '%s\0' "$f"; done |
      tar --null -T - -c
  fi
}
say "running ${build_dir:+(build: $build_dir) }${rev:+(tree of $rev = $(git rev-parse --short "$rev")) }ctest -L '$labels' in $image"
tree |
  $docker run --rm -i --network host "${mounts[@]}" \
    -e REPO="$repo" -e HOST_BUILD="$build_dir" -e LABELS="$labels" -e CTEST_V="$( ((verbose)) && echo -V)" \
    "$image" bash -c "$inner"
rc=${PIPESTATUS[1]}
if ((rc == 0)); then say "passed on Debian 12's Node.js 18"; else say "FAILED (exit $rc)"; fi
((rc == 0))
