#!/usr/bin/env bash
# Makes a fresh clone runnable: etcd installed, dependencies installed, TypeScript built.
# `npm run demo`, `npm test` and `npm run bench` call it first, so each works on a new machine.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-etcd.sh

# Install dependencies when they are missing or older than the lock file.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "installing dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi

# The Go peer of the interoperability tests (after `npm ci`: it lives in node_modules/.cache) and
# Debian's chromium for the dashboard's browser test (about 45 s the first time, with apt-get
# update). `npm run demo`, `npm run bench` and `npm run chaos` need neither.
if [[ "${npm_lifecycle_event:-}" != predemo && "${npm_lifecycle_event:-}" != prebench && "${npm_lifecycle_event:-}" != prechaos ]]; then
  bash scripts/ensure-go-peer.sh
  bash scripts/ensure-chromium.sh
fi

# A clean build, so no stale compiled test lingers in dist/.
rm -rf dist
npx --no-install tsc -p tsconfig.json
