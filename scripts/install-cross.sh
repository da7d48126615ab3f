#!/usr/bin/env bash
# Install the Debian cross toolchains and qemu-user that ember's edge targets need:
#   aarch64 -> g++-aarch64-linux-gnu, armv7 -> g++-arm-linux-gnueabihf,
#   riscv64 -> g++-riscv64-linux-gnu, running foreign binaries in tests -> qemu-user.
# Idempotent and quick when everything is present. Needs root (CI runs as root) or sudo.
# Usage: scripts/install-cross.sh            (all of the above)
#        EMBER_SKIP_CROSS=1 scripts/install-cross.sh   (do nothing; edge tests then skip)
set -euo pipefail

if [[ "${EMBER_SKIP_CROSS:-0}" == "1" ]]; then
  echo "install-cross: EMBER_SKIP_CROSS=1, skipping"; exit 0
fi

packages=(g++-aarch64-linux-gnu g++-arm-linux-gnueabihf g++-riscv64-linux-gnu qemu-user)
tools=(aarch64-linux-gnu-g++ arm-linux-gnueabihf-g++ riscv64-linux-gnu-g++ qemu-aarch64)

missing=0
for t in "${tools[@]}"; do command -v "$t" >/dev/null 2>&1 || missing=1; done
if [[ $missing == 0 ]]; then
  echo "install-cross: cross compilers and qemu-user already installed"; exit 0
fi

sudo=""
if [[ $(id -u) != 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "install-cross: not root and no sudo; install ${packages[*]} yourself" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
for t in "${tools[@]}"; do command -v "$t" >/dev/null || { echo "install-cross: $t missing after install" >&2; exit 1; }; done
echo "install-cross: installed ${packages[*]}"
