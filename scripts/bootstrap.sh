#!/usr/bin/env bash
# Prepare a fresh Debian machine: system packages (when root) and the project venv.
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# the lab's packages (real IKEv2/ESP with strongSwan) are listed in scripts/lab_packages.txt
mapfile -t LAB_PACKAGES < <(grep -v '^#' scripts/lab_packages.txt | grep -v '^$')
DEB_PACKAGES=(iproute2 nftables iputils-ping fping procps systemd openssl "${LAB_PACKAGES[@]}")

# Real VPP 26.06 for the lab's real-VPP tier: the release tarball beside the repository
# (../shared/vpp, or $PEERING_SHARED/vpp) is unpacked into the user's cache, never into
# the repository; VPP_PREFIX names an installed VPP 26.06 instead. Nothing is downloaded.
SHARED=${PEERING_SHARED:-../shared}
VPP_TARBALL="$SHARED/vpp/vpp-26.06-x86_64.tar.gz"
VPP_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/peering-agent
if [ -z "${VPP_PREFIX:-}" ] && [ -f "$VPP_TARBALL" ]; then
    mapfile -t VPP_PACKAGES < <(grep -v '^#' scripts/vpp_packages.txt | grep -v '^$')
    DEB_PACKAGES+=("${VPP_PACKAGES[@]}")
fi

if [ "${1:-}" = "--list-packages" ]; then  # what a fresh machine gets (checked by a test)
    printf '%s\n' "${DEB_PACKAGES[@]}"
    exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${DEB_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "bootstrap: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

if [ -n "${VPP_PREFIX:-}" ]; then
    [ -x "$VPP_PREFIX/bin/vpp" ] || { echo "bootstrap: VPP_PREFIX=$VPP_PREFIX has no bin/vpp" >&2; exit 1; }
elif [ -f "$VPP_TARBALL" ]; then
    # unpacked once per tarball (its checksum is the stamp); a new tarball replaces it
    sum=$(sha256sum "$VPP_TARBALL" | cut -c1-16)
    if [ ! -e "$VPP_CACHE/vpp-26.06/.unpacked-$sum" ]; then
        echo "bootstrap: unpacking VPP 26.06 into $VPP_CACHE/vpp-26.06"
        mkdir -p "$VPP_CACHE"
        tmp=$(mktemp -d "$VPP_CACHE/unpack.XXXXXX")
        tar -xzf "$VPP_TARBALL" -C "$tmp"
        touch "$tmp/vpp-26.06/.unpacked-$sum"
        rm -rf "$VPP_CACHE/vpp-26.06"
        mv "$tmp/vpp-26.06" "$VPP_CACHE/vpp-26.06"
        rmdir "$tmp"
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test,lab]'  # lab: vppsim's strongSwan backend
    rm -f .venv/.installed-*
    touch "$stamp"
fi
