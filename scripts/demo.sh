#!/usr/bin/env bash
# Sets everything up and runs the main job end to end on built-in sample data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hanna-sync demo "$@"
