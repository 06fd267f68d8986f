#!/usr/bin/env bash
# The benchmark in one command, as root on Debian/Ubuntu: installs what it needs (Dovecot and the venv
# through scripts/setup.sh, mbsync from isync, GNU time, iproute2 for tc and network namespaces), then
# runs bench/bench.py (loopback), or with "distance" first bench/distance.py (latency proxy, shaped link).
# Options go to it:
#   sudo bash bench/run.sh [--letters N] [--mailboxes N] [--seed N] [--workdir DIR] [--profile DIR]
#   sudo bash bench/run.sh distance [--rtt 0,50,150] [--concurrency default,32] [--mailboxes N] [--letters N] ...
set -euo pipefail
cd "$(dirname "$0")/.."
script=bench/bench.py
if [ "${1:-}" = distance ]; then
  script=bench/distance.py
  shift
fi
bash scripts/setup.sh

missing=()
command -v mbsync >/dev/null || missing+=(isync)
[ -x /usr/bin/time ] || missing+=(time)
{ command -v ip >/dev/null && command -v tc >/dev/null; } || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "Error: run as root to install ${missing[*]} (or install them yourself)" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

exec .venv/bin/python "$script" "$@"
