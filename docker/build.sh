#!/usr/bin/env bash
# Builds canaryd's images from a context that holds only what the Dockerfile
# needs (a tar stream on stdin), so build dirs and node_modules never reach the
# daemon, with or without a .dockerignore. Makes the debian:bookworm base first
# when it is missing (scripts/docker-base.sh). Every build uses --network host.
#
#   docker/build.sh                        canaryd:latest + canaryd:VERSION (full multi-stage build)
#   docker/build.sh --mock                 also canaryd-mock:latest (the compose demo's upstreams)
#   docker/build.sh --prebuilt BINARY [--tag T] [--prebuilt-mock MOCK_BINARY]
#                                          runtime image around a binary built by the CI build
#                                          (and canaryd-mock:TAG's version around the mock's)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
docker=${DOCKER:-docker}
# The classic builder: no buildx plugin needed, and it honours --network host.
export DOCKER_BUILDKIT=0

prebuilt=""
prebuilt_mock=""
tag=""
mock=0
while (($#)); do
  case "$1" in
    --prebuilt) prebuilt=$(realpath "$2"); shift 2 ;;
    --prebuilt-mock) prebuilt_mock=$(realpath "$2"); shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --mock) mock=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
version=$(sed -n 's/^project(canaryd VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")

"$repo/scripts/docker-base.sh" debian:bookworm

log=$(mktemp /tmp/canaryd-docker-build.XXXXXX)
trap 'rm -f "$log"' EXIT
build() {  # build ARGS... < context tar; the log is shown only when it fails
  if ! $docker build --network host "$@" - >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "build.sh: docker build $* failed" >&2
    exit 1
  fi
}
runtime_files=(docker/Dockerfile docker/Dockerfile.prebuilt docker/healthcheck.sh scripts/install-deps.sh config)

if [[ -n "$prebuilt" ]]; then
  [[ -x "$prebuilt" ]] || { echo "build.sh: $prebuilt is not an executable" >&2; exit 1; }
  tag=${tag:-canaryd:prebuilt}
  tar -C "$repo" -c "${runtime_files[@]}" | build -f docker/Dockerfile --target runtime-base -t canaryd-runtime-base:latest
  tar -C "$repo" -c docker/Dockerfile.prebuilt \
      -C "$(dirname "$prebuilt")" --transform "s|^$(basename "$prebuilt")\$|.prebuilt/canaryd|" "$(basename "$prebuilt")" |
    build -f docker/Dockerfile.prebuilt -t "$tag"
  if [[ -n "$prebuilt_mock" ]]; then
    [[ -x "$prebuilt_mock" ]] || { echo "build.sh: $prebuilt_mock is not an executable" >&2; exit 1; }
    tar -C "$repo" -c docker/Dockerfile.prebuilt-mock \
        -C "$(dirname "$prebuilt_mock")" --transform "s|^$(basename "$prebuilt_mock")\$|.prebuilt/mock-upstream|" "$(basename "$prebuilt_mock")" |
      build -f docker/Dockerfile.prebuilt-mock -t "canaryd-mock:${tag##*:}"
  fi
  echo "$tag"
  exit 0
fi

tag=${tag:-canaryd:$version}
src_files=("${runtime_files[@]}" CMakeLists.txt include src tools)
tar -C "$repo" --exclude='*/node_modules' -c "${src_files[@]}" |
  build -f docker/Dockerfile -t "$tag" -t canaryd:latest
if ((mock)); then
  tar -C "$repo" -c "${src_files[@]}" | build -f docker/Dockerfile --target mock -t canaryd-mock:latest
fi
echo "$tag"
