#!/usr/bin/env bash
# Builds the Go peer of the interoperability tests (test/go-peer) and prints the binary's path.
#
# The peer runs etcd 3.4's own Go recipes. It is built offline, in GOPATH mode, from Debian's
# packaged sources: golang-go (the toolchain) and golang-etcd-server-dev (etcd's Go source under
# /usr/share/gocode, with everything it imports). They are installed with apt-get when missing.
# The binary goes to node_modules/.cache/etcd-go-peer/go-peer and is rebuilt only when the peer's
# source, the toolchain or the Debian Go packages changed. Messages go to stderr; stdout gets the
# binary's path only, so `bin=$(bash scripts/ensure-go-peer.sh)` works.
#
# Environment: ETCDC_GO_BIN (a go binary to use instead of Debian's), ETCDC_GO_PEER_CACHE (output dir).
set -euo pipefail
cd "$(dirname "$0")/.."

GOCODE=/usr/share/gocode
ETCD_SRC=$GOCODE/src/go.etcd.io/etcd
CACHE_DIR=${ETCDC_GO_PEER_CACHE:-$PWD/node_modules/.cache/etcd-go-peer}
BIN=$CACHE_DIR/go-peer
STAMP=$CACHE_DIR/go-peer.stamp
# Bump when the build command below changes, to force a rebuild.
BUILD_RECIPE=1

find_go() {
  if [[ -n "${ETCDC_GO_BIN:-}" ]]; then
    [[ -x "$ETCDC_GO_BIN" ]] && echo "$ETCDC_GO_BIN"
  elif [[ -x /usr/lib/go/bin/go ]]; then
    echo /usr/lib/go/bin/go # Debian's golang-go, the toolchain its Go packages are built for
  else
    command -v go || true
  fi
}

have_deps() {
  [[ -n "$(find_go)" ]] &&
    [[ -f $ETCD_SRC/clientv3/concurrency/mutex.go ]] &&
    [[ -f $ETCD_SRC/contrib/recipes/rwmutex.go ]] &&
    [[ -d $ETCD_SRC/clientv3/naming/endpoints ]]
}

if ! have_deps; then
  SUDO=()
  if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO=(sudo -n)
    else
      SUDO=(none)
    fi
  fi
  if [[ "${SUDO[0]:-}" != none ]] && command -v apt-get >/dev/null 2>&1; then
    echo "go-peer: installing golang-go and golang-etcd-server-dev with apt-get" >&2
    ${SUDO[@]+"${SUDO[@]}"} apt-get update >&2
    ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends golang-go golang-etcd-server-dev >&2
  fi
  if ! have_deps; then
    cat >&2 <<'MSG'
The Go peer of the interoperability tests (test/go-peer) needs Debian's Go toolchain and etcd 3.4
Go sources, which could not be installed automatically (apt-get needs root or passwordless sudo):

  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends golang-go golang-etcd-server-dev

Then run `bash scripts/ensure-go-peer.sh` again.
MSG
    exit 1
  fi
fi

GO=$(find_go)

# Everything the binary depends on: the peer's source, the toolchain, the Debian Go packages.
fingerprint() {
  {
    echo "recipe $BUILD_RECIPE"
    "$GO" version
    dpkg-query -W -f='${Package} ${Version}\n' 'golang-*' 2>/dev/null | LC_ALL=C sort || true
    find test/go-peer -type f -name '*.go' | LC_ALL=C sort | xargs sha256sum
  } | sha256sum | cut -d' ' -f1
}

want=$(fingerprint)
if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  # Up to date by content; newer than its source by mtime too (test/fixtures/go-peer.ts checks
  # that, and a checkout may have touched the source without changing it).
  touch "$BIN"
  echo "$BIN"
  exit 0
fi

echo "go-peer: building test/go-peer with $("$GO" version | cut -d' ' -f3) (GOPATH mode, offline)" >&2
mkdir -p "$CACHE_DIR/gopath"
build_env=(
  GO111MODULE=off
  GOPATH="$CACHE_DIR/gopath:$GOCODE"
  GOFLAGS=
  GOPROXY=off
  GOTOOLCHAIN=local
  CGO_ENABLED=0
)
# Go's shared build cache when there is one (a rebuild then takes a second), else our own.
gocache=${GOCACHE:-$("$GO" env GOCACHE 2>/dev/null || true)}
if [[ -z "$gocache" || "$gocache" == off ]] || ! mkdir -p "$gocache" 2>/dev/null; then
  gocache=$CACHE_DIR/gocache
fi
build_env+=(GOCACHE="$gocache")

start=$(date +%s)
tmp=$BIN.tmp.$$
if ! env "${build_env[@]}" "$GO" build -o "$tmp" ./test/go-peer >&2; then
  rm -f "$tmp"
  echo "go-peer: build failed" >&2
  exit 1
fi
mv -f "$tmp" "$BIN"
# The stamp is written last: an interrupted build is redone next time.
echo "$want" >"$STAMP"
echo "go-peer: built in $(($(date +%s) - start)) s" >&2
echo "$BIN"
