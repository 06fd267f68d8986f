#!/usr/bin/env bash
# Installs what the tests need (Dovecot, a venv with the test extras), checks lint and types, runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The house rules CI cannot see otherwise: lint and types (configured in pyproject.toml), then the suite.
.venv/bin/ruff check hanna_sync tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
