#!/usr/bin/env bash
# Prepare a fresh Debian machine: system packages (when root) and the project venv.
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# the lab's packages (real IKEv2/ESP with strongSwan) are listed in scripts/lab_packages.txt
mapfile -t LAB_PACKAGES < <(grep -v '^#' scripts/lab_packages.txt | grep -v '^$')
DEB_PACKAGES=(iproute2 nftables iputils-ping fping procps systemd openssl "${LAB_PACKAGES[@]}")

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

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
