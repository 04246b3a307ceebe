#!/usr/bin/env bash
# Install scratchlm with its test extras into .venv and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The web chat's test drives Debian's chromium (tests/infer/test_web_chat.py says it skips without it):
# install it when it is missing and this job may (as root, or with password-less sudo).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  if ! { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/dev/null 2>&1; then
    echo "chromium could not be installed; the web chat's browser test will be skipped"
  fi
fi
bash scripts/setup.sh test
.venv/bin/ruff check .
# One worker per core (each test keeps torch to one thread); a file's tests stay on one worker, so the
# module-scoped runs they share are trained once.
.venv/bin/python -m pytest -n "${TEST_WORKERS:-auto}" --dist loadfile "$@"
