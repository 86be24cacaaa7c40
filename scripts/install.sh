#!/usr/bin/env bash
# Install Skyfleet on a fresh Debian/Ubuntu machine: the servers the lab and the tests run
# (redis-server, haproxy, iproute2 for network namespaces, nftables for the packet-loss fault),
# as root also podman, runc and debootstrap (`skyfleet lab image build` and tests/image), and a
# Python venv in .venv.
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

# Containers run with rootful podman on runc (crun fails on hybrid cgroups); the base image is
# debootstrapped. Only as root: rootless, the image tests skip and say why.
if [ "$(id -u)" = 0 ]; then
  need_image=""
  for bin in podman runc debootstrap; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need_image=1
  done
  if [ -n "$need_image" ]; then
    echo "installing podman, runc and debootstrap (apt)..."
    [ -n "$need_apt" ] || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
echo "installing Python packages into .venv${extras:+ (with dev tools)}..."
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
