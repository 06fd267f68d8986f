#!/usr/bin/env bash
# The benchmark in one command, as root on Debian/Ubuntu: installs what it needs (Dovecot and the venv
# through scripts/setup.sh, mbsync from isync, GNU time), then runs bench/bench.py. Options go to it:
#   sudo bash bench/run.sh [--letters N] [--mailboxes N] [--seed N] [--workdir DIR] [--profile DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

missing=()
command -v mbsync >/dev/null || missing+=(isync)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "Error: run as root to install ${missing[*]} (or install them yourself)" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

exec .venv/bin/python bench/bench.py "$@"
