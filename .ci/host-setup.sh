#!/bin/bash
# Install the Debian packages kvmd's tests and demo need, only those that are missing.
# Idempotent; runs `apt-get update` first when anything must be installed.
set -euo pipefail
PKGS=(qemu-system-x86 qemu-utils ovmf libvirt-daemon-system libvirt-dev pkg-config
      linux-image-cloud-amd64 busybox-static qemu-guest-agent cpio xz-utils zstd iproute2
      socat iptables)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "host-setup: missing Debian packages (${missing[*]}); run as root" >&2
        exit 1
    fi
    echo "host-setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
