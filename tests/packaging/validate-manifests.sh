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
exec node deploy/validate/validate.mjs
