#!/usr/bin/env bash
# Installs lamina with its test dependencies and fetches the three real test models.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install --disable-pip-version-check -q -e '.[dev]'
python3 -m lamina.testing.models
