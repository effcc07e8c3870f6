#!/usr/bin/env bash
# Makes sure etcd and etcdctl (3.4+) are installed, installing Debian's packages when possible.
set -euo pipefail

have_etcd() {
  if [[ -n "${ETCD_BIN:-}" ]]; then
    [[ -x "$ETCD_BIN" ]]
  else
    command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1
  fi
}

print_versions() {
  local etcd="${ETCD_BIN:-$(command -v etcd)}"
  local etcdctl="${ETCDCTL_BIN:-}"
  if [[ -z "$etcdctl" && -n "${ETCD_BIN:-}" && -x "$(dirname "$ETCD_BIN")/etcdctl" ]]; then
    etcdctl="$(dirname "$ETCD_BIN")/etcdctl"
  fi
  [[ -n "$etcdctl" ]] || etcdctl="$(command -v etcdctl || true)"
  echo "etcd:    $etcd"
  "$etcd" --version | sed -n 1p
  if [[ -n "$etcdctl" ]]; then
    echo "etcdctl: $etcdctl"
    ETCDCTL_API=3 "$etcdctl" version | sed -n 1p
  else
    echo "etcdctl: not found (only needed for interoperability tests)"
  fi
}

if have_etcd; then
  print_versions
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

if [[ "${SUDO[0]:-}" != none ]] && command -v apt-get >/dev/null 2>&1; then
  echo "etcd not found: installing etcd-server and etcd-client with apt-get"
  ${SUDO[@]+"${SUDO[@]}"} apt-get update
  ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client
  # The package may start a system etcd on the default ports; tests start their own members.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    ${SUDO[@]+"${SUDO[@]}"} systemctl stop etcd || true
    ${SUDO[@]+"${SUDO[@]}"} systemctl disable etcd || true
  fi
  if command -v service >/dev/null 2>&1; then
    ${SUDO[@]+"${SUDO[@]}"} service etcd stop >/dev/null 2>&1 || true
  fi
  if pgrep -x etcd >/dev/null 2>&1; then
    # Only a daemon started by the package (running as the etcd user, or with its config).
    for pid in $(pgrep -x -u etcd etcd 2>/dev/null || true); do
      ${SUDO[@]+"${SUDO[@]}"} kill "$pid" || true
    done
  fi
  if have_etcd; then
    print_versions
    exit 0
  fi
  echo "apt-get finished but etcd/etcdctl are still not on PATH" >&2
  exit 1
fi

cat >&2 <<'MSG'
etcd and etcdctl (3.4 or newer) are needed and could not be installed automatically
(apt-get needs root or passwordless sudo). Install them with one of:

  Debian/Ubuntu:  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client
  Fedora:         sudo dnf install -y etcd
  macOS:          brew install etcd
  Any Linux:      curl -fsSL https://github.com/etcd-io/etcd/releases/download/v3.5.17/etcd-v3.5.17-linux-amd64.tar.gz \
                    | tar -xz -C /tmp && sudo install /tmp/etcd-v3.5.17-linux-amd64/etcd{,ctl} /usr/local/bin/

or set ETCD_BIN (and ETCDCTL_BIN) to the binaries' paths. Then run this script again.
MSG
exit 1
