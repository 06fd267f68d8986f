#!/usr/bin/env bash
# Installs what the tests need (Dovecot, a venv with the test extras) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -q "$@"
