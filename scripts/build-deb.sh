#!/usr/bin/env bash
# Builds the Debian package hanna-sync_VERSION_ARCH.deb from this checkout.
#   bash scripts/build-deb.sh [OUTDIR]      (default: ./dist; prints the .deb's path last)
# Needs Debian's python3 with python3-venv and dpkg-deb (Debian 12: apt-get install python3-venv), and PyPI
# for the dependencies (imapclient, sqlite-utils, publicsuffixlist, ... are not in Debian 12), which go into
# a self-contained environment under /opt/hanna-sync, built for Debian's own /usr/bin/python3.
set -euo pipefail
umask 022  # what dpkg installs is what was staged: readable by the service user and every shell
cd "$(dirname "$0")/.."
repo=$PWD
out=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)

python=/usr/bin/python3  # Debian's: the package depends on it, never on a python of this build machine's
fail() { echo "Error: $*" >&2; exit 2; }
[ -x "$python" ] || fail "$python not found: apt-get install python3 python3-venv"
"$python" -c 'import ensurepip, venv' 2>/dev/null || fail "Debian's python3 cannot make a venv: apt-get install python3-venv"
command -v dpkg-deb >/dev/null || fail "dpkg-deb not found: build on Debian or Ubuntu"
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[ "$pyver" = 3.11 ] || fail "Debian's python3 is $pyver here; debian/control.in says 3.11 (Debian 12): adjust both"

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' hanna_sync/__init__.py)
[ -n "$version" ] || fail "no __version__ in hanna_sync/__init__.py"
arch=$(dpkg --print-architecture)
stage=$(mktemp -d /tmp/hanna-sync-deb.XXXXXX)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
venv=$stage/opt/hanna-sync

echo "Building hanna-sync $version ($arch): the environment under /opt/hanna-sync ..." >&2
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile "$repo"
# Upgrades come as a new package: no pip in a tree dpkg owns.
"$venv/bin/python" -m pip uninstall -q -y pip setuptools >/dev/null 2>&1 || true
rm -f "$venv"/bin/pip* "$venv"/bin/activate* "$venv"/bin/Activate.ps1
find "$venv" -name direct_url.json -path '*hanna_sync*' -delete  # it names this checkout
# The venv was made at $venv: every path in it must be /opt/hanna-sync once installed.
grep -rlI --null "$stage" "$venv" | xargs -0r sed -i "s|$stage||g"
"$venv/bin/python" -m compileall -q -j 0 -s "$stage" -p / "$venv/lib" >/dev/null
if grep -rl "$stage" "$venv" >/dev/null; then
  fail "the build directory is still named in: $(grep -rl "$stage" "$venv" | head -3 | tr '\n' ' ')"
fi

echo "... the command, units, man page, completion, documents" >&2
hs() { "$venv/bin/python" -m hanna_sync "$@"; }  # bin/hanna-sync names /opt/..., not here yet
install -d "$stage/usr/bin"
ln -s /opt/hanna-sync/bin/hanna-sync "$stage/usr/bin/hanna-sync"
units() {  # the units as `setup-guide systemd` prints them, for /usr/bin/hanna-sync
  "$venv/bin/python" -c 'import sys
from hanna_sync.admin.setup_guide import systemd_unit
print(systemd_unit(sys.argv[1], sys.argv[2] == "user", "/usr/bin/hanna-sync"), end="")' "$1" "$2"
}
for scope in system user; do
  install -d "$stage/usr/lib/systemd/$scope"
  units service "$scope" > "$stage/usr/lib/systemd/$scope/hanna-sync.service"
  units timer "$scope" > "$stage/usr/lib/systemd/$scope/hanna-sync.timer"
  units web "$scope" > "$stage/usr/lib/systemd/$scope/hanna-sync-web.service"
done
install -d "$stage/usr/share/man/man1"
hs setup-guide man | gzip -9n > "$stage/usr/share/man/man1/hanna-sync.1.gz"
install -d "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
  "$stage/usr/share/fish/vendor_completions.d"
_HANNA_SYNC_COMPLETE=bash_source hs > "$stage/usr/share/bash-completion/completions/hanna-sync"
_HANNA_SYNC_COMPLETE=zsh_source hs > "$stage/usr/share/zsh/vendor-completions/_hanna-sync"
_HANNA_SYNC_COMPLETE=fish_source hs > "$stage/usr/share/fish/vendor_completions.d/hanna-sync.fish"
doc=$stage/usr/share/doc/hanna-sync
install -d "$doc"
install -m 0644 README.md config.example.toml "$doc/"
gzip -9n < CHANGELOG.md > "$doc/changelog.gz"
{ cat packaging/debian/copyright.in; sed -n '3,$p' LICENSE | sed -e 's/^$/./' -e 's/^/ /'; } > "$doc/copyright"

install -d "$stage/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" packaging/debian/control.in \
  > "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
  | xargs -0 md5sum > DEBIAN/md5sums)
find "$stage" -path "$stage/DEBIAN" -prune -o -type d -exec chmod 0755 {} +

deb=$out/hanna-sync_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz -z6 --build "$stage" "$deb" >/dev/null
echo "$deb"
