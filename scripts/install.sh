#!/usr/bin/env bash
# Install Skyfleet on a fresh Debian/Ubuntu machine: the servers the lab and the tests run
# (redis-server, haproxy, iproute2 for network namespaces, nftables for the packet-loss fault),
# as root also podman, runc and debootstrap (`skyfleet lab image build` and tests/integration/image), and a
# Python venv in .venv.
#   scripts/install.sh          runtime only (the dependency ranges of pyproject.toml)
#   scripts/install.sh --dev    the dev environment as locked in requirements-dev.lock: plus the
#                               test and lint tools
#   --python-only               the venv alone, no system packages (lint, the gate, the unit tier)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=""
python_only=""
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --python-only) python_only=1 ;;
    *) echo "scripts/install.sh: unknown option $arg (--dev, --python-only)" >&2; exit 2 ;;
  esac
done

need_apt=""
for bin in redis-server haproxy ip tc nft busybox; do
  [ -z "$python_only" ] || break
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need_apt=1
done
if [ -n "$need_apt" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing redis-server, haproxy, iproute2, nftables and busybox (apt)..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server haproxy iproute2 nftables busybox >/dev/null
fi

# Containers run with rootful podman on runc (crun fails on hybrid cgroups); the base image is
# debootstrapped. Only as root: rootless, the image tests skip and say why.
if [ "$(id -u)" = 0 ] && [ -z "$python_only" ]; then
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
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "$dev" ]; then
  # The dev environment exactly as locked (hash-checked; scripts/lock.sh regenerates the lock),
  # then the project itself without resolving its dependencies again.
  echo "installing Python packages into .venv from requirements-dev.lock..."
  .venv/bin/python -m pip install -q --require-hashes -r requirements-dev.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  .venv/bin/python -m pip check >/dev/null || {
    .venv/bin/python -m pip check
    echo "requirements-dev.lock does not satisfy pyproject.toml: run scripts/lock.sh" >&2
    exit 1
  }
else
  echo "installing Python packages into .venv..."
  .venv/bin/python -m pip install -q -e .
fi
