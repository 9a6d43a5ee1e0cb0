#!/usr/bin/env bash
# Installs lamina with its test dependencies (Chromium included), fetches the three real test models
# and compiles the kernels for this CPU.
set -euo pipefail
cd "$(dirname "$0")"
# Debian's Chromium (and its driver), for the web page's browser tests (tests/test_webui.py)
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
python3 -m pip install --disable-pip-version-check -q -e '.[dev]'
python3 -m lamina.testing.models
# compile the kernels for this CPU now, so the first run after set-up starts at once
python3 -m lamina.kernels.warm
