#!/usr/bin/env bash
# ctest packaging_manifests: installs deploy/validate's pinned npm packages when
# they are missing (npm ci from the committed lockfile), then validates.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ ! -d deploy/validate/node_modules/kubernetes-models ]] ||
   [[ deploy/validate/package-lock.json -nt deploy/validate/node_modules/.package-lock.json ]]; then
  echo "validate-manifests: npm ci --prefix deploy/validate"
  npm ci --prefix deploy/validate --no-audit --no-fund --loglevel=error
fi
# --require-all: under ctest a check that cannot run (no promtool, no CANARYD_BIN)
# fails instead of being skipped.
exec node deploy/validate/validate.mjs --require-all
