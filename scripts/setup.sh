#!/usr/bin/env bash
# Create .venv and install scratchlm into it. Pass extras as arguments: scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first and pinned: the CPU build comes from the local wheel where one exists, and an
# unpinned torch would pull several GB of CUDA packages.
.venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0"
extras=${1:+[$1]}
.venv/bin/pip install --quiet --disable-pip-version-check -e ".${extras}"
