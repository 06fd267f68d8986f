"""The package's floors: every import points down (or stays in its own package), and none goes round in a
circle, also through imports inside functions. `if TYPE_CHECKING:` imports are for annotations only and
are left out. README "Development" draws the same picture."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "hanna_sync"

# Lower numbers are lower floors. A module may import its own package or any package on a lower floor; the
# bottom floor's modules (records, errors, config, the parser) may also import one another.
RANKS = {
    "models": 0, "errors": 0, "config": 0, "lock": 0, "uidset": 0, "mail": 0,
    "db": 1, "credentials": 1,
    "remote": 2, "linking": 2,
    "scan": 3, "diagnose": 3,
    "admin": 4,
    "demo": 5,
    "cli": 6, "web": 6,
    "__main__": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The hanna_sync modules a file imports at run time (anywhere in it, TYPE_CHECKING blocks aside)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("hanna_sync"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("hanna_sync"):
                continue
            for alias in node.names:  # `from hanna_sync.remote import imap` imports the module remote.imap
                candidate = f"{base}.{alias.name}"
                found.add(candidate if (ROOT.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                          or (ROOT.parent / candidate.replace(".", "/") / "__init__.py").exists() else base)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_import_points_down_or_stays_in_its_package():
    wrong = []
    for module, imported in graph().items():
        if top(module) == "__init__":
            continue
        for target in imported:
            if target == "hanna_sync" or top(target) == top(module):
                continue
            if RANKS[top(target)] > RANKS[top(module)] or RANKS[top(target)] == RANKS[top(module)] > 0:
                wrong.append(f"{module} -> {target}")
    assert wrong == [], "imports that point up or sideways:\n  " + "\n  ".join(sorted(wrong))


def test_every_package_has_a_floor():
    for path in ROOT.iterdir():
        name = path.stem if path.suffix == ".py" else path.name
        if name in ("__init__", "__pycache__") or path.suffix not in (".py", ""):
            continue
        assert name in RANKS, f"{name}: give it a floor in RANKS (and in README's Development diagram)"


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import circles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_no_module_over_600_lines():
    long = {module_name(p): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}, f"split these along their seams: {long}"


def test_a_function_of_more_than_four_parameters_takes_the_rest_by_name():
    """Past four, positional arguments are read by counting: `add(store, secrets, box, pw, True, 10, False)`
    says nothing about what True and 10 are, and a reordering breaks every caller silently."""
    crowded = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                positional = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                if len(positional) > 4:
                    crowded.append(f"{module_name(path)}.{node.name}({', '.join(positional)})")
    assert crowded == [], "make the parameters past the fourth keyword-only:\n  " + "\n  ".join(crowded)
