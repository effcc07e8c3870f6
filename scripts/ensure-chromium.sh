#!/usr/bin/env bash
# Makes sure Debian's chromium is installed, for the dashboard's browser test
# (test/dashboard-browser.test.ts drives it with playwright-core, which never downloads a browser).
# Installs the package with apt-get when missing (as root or with passwordless sudo); otherwise
# says what to install and exits 0: the browser test then skips with the same message, the rest of
# `npm test` runs. Set ETCDC_CHROMIUM to use another binary. `npm run demo` does not need it.
set -euo pipefail

BIN=${ETCDC_CHROMIUM:-/usr/bin/chromium}

if [[ -x "$BIN" ]]; then
  echo "chromium: $BIN"
  exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    SUDO=(none)
  fi
fi

if [[ "${SUDO[0]:-}" != none && -z "${ETCDC_CHROMIUM:-}" ]] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found: installing Debian's chromium with apt-get (takes a minute or two)"
  started=$SECONDS
  ${SUDO[@]+"${SUDO[@]}"} apt-get update -qq
  # --no-install-recommends: none of the extras a headless test does not need; one font family so
  # the screenshot has readable text on a bare machine.
  ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  if [[ -x "$BIN" ]]; then
    echo "chromium: $BIN (installed in $((SECONDS - started)) s)"
    exit 0
  fi
  echo "apt-get finished but $BIN is still missing" >&2
  exit 1
fi

cat >&2 <<MSG
chromium not found at $BIN and not installed automatically (apt-get needs root or passwordless
sudo). The dashboard's browser test will be skipped. To run it, install Debian's chromium:

  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

or set ETCDC_CHROMIUM to a Chromium binary.
MSG
exit 0
