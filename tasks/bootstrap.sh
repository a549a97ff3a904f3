#!/usr/bin/env bash
# Install what orch and its lab need on a Debian 12 machine (as root), then orch itself into
# .venv with its dev tools. Idempotent and quiet when everything is there already.
#   bash tasks/bootstrap.sh          # runtime + lab packages
#   bash tasks/bootstrap.sh --test   # also what the test suite needs (vagrant for `vagrant validate`)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker.io openssh-server openssh-client busybox-static iputils-ping iproute2 nftables
          iptables sudo util-linux)
if [ "${1:-}" = "--test" ]; then
  packages+=(vagrant)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # policy-rc.d: packages must not start their own daemons; the lab starts its own per host.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: orch needs Python >= 3.11 ($py is $("$py" -V 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv 2>/dev/null || {
    apt-get install -y -qq python3-venv >/dev/null && "$py" -m venv .venv
  }
fi
stamp=.venv/.orch-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing orch into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
