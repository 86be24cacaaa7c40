#!/usr/bin/env bash
# Install Skyfleet on a fresh Debian/Ubuntu machine: the servers the lab and the tests run
# (redis-server, haproxy, iproute2 for network namespaces, nftables for the packet-loss fault)
# and a Python venv in .venv.
#   scripts/install.sh          runtime only
#   scripts/install.sh --dev    plus test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

need_apt=""
for bin in redis-server haproxy ip tc nft; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need_apt=1
done
if [ -n "$need_apt" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing redis-server, haproxy, iproute2 and nftables (apt)..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server haproxy iproute2 nftables >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
echo "installing Python packages into .venv${extras:+ (with dev tools)}..."
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
