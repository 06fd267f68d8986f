"""What a release must agree on: one version in the package, `--version` and CHANGELOG.md; the LICENSE
that pyproject.toml names; the man page equal to what the commands' help makes of it; shell completion
through click's own mechanism."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from hanna_sync import __version__

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "hanna-sync"  # the installed console script of this venv


def test_the_package_the_command_and_the_changelog_say_the_same_version():
    assert version("hanna-sync") == __version__  # pyproject.toml reads it (dynamic), so pip show agrees
    shown = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, check=True).stdout
    assert shown == f"hanna-sync, version {__version__}\n"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and '\nversion = "' not in pyproject  # written once only
    top = re.search(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert top and top.group(1) == __version__


def test_the_license_is_the_mit_one_pyproject_names():
    assert 'license = {text = "MIT"}' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the hanna-sync authors\n")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text
