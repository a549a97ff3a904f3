#!/usr/bin/env bash
# The main job on the local lab: build 2 hosts out of network namespaces (each with its own sshd
# and dockerd), then `orch setup` and `orch verify` against them. Needs root on Linux.
#   bash tasks/demo.sh [HOSTS]     # then: .venv/bin/orch lab down
set -euo pipefail
cd "$(dirname "$0")/.."
bash tasks/bootstrap.sh
orch=.venv/bin/orch
"$orch" lab up --hosts "${1:-2}"
"$orch" -i .lab/hosts.toml setup
"$orch" -i .lab/hosts.toml verify
echo "lab still up: try .venv/bin/orch -i .lab/hosts.toml status; take it down with .venv/bin/orch lab down" >&2
