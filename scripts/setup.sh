#!/usr/bin/env bash
# Installs what hanna-sync needs on Debian/Ubuntu (as root) and the package into ./.venv.
#   bash scripts/setup.sh          the tool and the demo's Dovecot
#   bash scripts/setup.sh test     also what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(dovecot-imapd python3-venv ca-certificates)
# The tests check the units `setup-guide systemd` prints with systemd-analyze verify, and drive the web view
# in a headless Chromium (tests/test_web_browser.py); tests/test_package.py builds the Debian package and
# reads its man page with man-db; tests/test_bench_distance.py runs the bench small (mbsync from isync, GNU
# time, tc from iproute2).
[ "${1:-}" = test ] && packages+=(systemd chromium chromium-driver groff-base man-db isync time iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "Error: run as root to install ${missing[*]} (or install them yourself)" >&2
    exit 2
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests and the demo start their own Dovecot on 127.0.0.1; the system one the package just
  # started is not wanted on a machine that did not have it.
  if printf '%s\n' "${missing[@]}" | grep -qx dovecot-imapd && command -v systemctl >/dev/null; then
    systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
extras=""
[ "${1:-}" = test ] && extras="[test]"
.venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
