#!/usr/bin/env bash
# Rebuild the editor into a temporary folder and fail if it differs from the committed web/dist/.
# CI calls this: the committed build must be what the sources give (the build is reproducible).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
npx tsc --noEmit -p .
npx vite build --logLevel error --outDir "$tmp/dist" --emptyOutDir >/dev/null
if ! diff -r "$tmp/dist" dist >/dev/null 2>&1; then
  echo "web/dist is out of date with the sources: run 'make -C web build' and commit web/dist" >&2
  diff -rq "$tmp/dist" dist >&2 || true
  exit 1
fi
echo "web/dist matches the sources"
