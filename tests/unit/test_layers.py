"""Dependencies point one way. Every module of lcrag's packages is parsed with `ast` (imports inside
functions and `TYPE_CHECKING` blocks count too) and each import is checked against the layering rules:

- `lcrag/cli.py` may import anything; server, ui, evals, bench and finetune never import the CLI;
- rag and compression are the bottom layer: they import none of server, ui, evals, bench, lcrag, finetune;
- the server imports the UI only in server/app.py, to mount it;
- the UI may import evals (its Evaluate view runs a suite in-process), evals and bench never import the UI;
- `lcrag/client.py`, the one HTTP client, imports neither the CLI nor server, ui, evals, bench;
- nothing imports `tests` (it is not installed; shared test data lives in `bench.corpus`, `bench.models`).

A failure lists every offending import as `file:line`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lcrag", "server", "rag", "compression", "finetune", "ui", "evals", "bench")
SCANNED = (*PACKAGES, "docs")  # docs' scripts (screenshots) only fall under "nothing imports tests"


@dataclass(frozen=True)
class Rule:
    why: str
    importers: tuple[str, ...]  # files or folders (relative, `/`-separated) the rule holds for
    forbidden: tuple[str, ...]  # dotted module prefixes they may not import
    allowed_in: tuple[str, ...] = ()  # files under `importers` the rule does not hold for


RULES = (
    Rule(
        "only the CLI imports the CLI",
        ("server/", "ui/", "evals/", "bench/", "finetune/"),
        ("lcrag.cli",),
    ),
    Rule(
        "rag and compression are the bottom layer",
        ("rag/", "compression/"),
        ("server", "ui", "evals", "bench", "lcrag", "finetune"),
    ),
    Rule("the server imports the UI only to mount it", ("server/",), ("ui",), allowed_in=("server/app.py",)),
    Rule("evals and bench never import the UI", ("evals/", "bench/"), ("ui",)),
    Rule(
        "lcrag.client stands below the CLI, server, UI, evals and bench",
        ("lcrag/client.py",),
        ("lcrag.cli", "server", "ui", "evals", "bench"),
    ),
    Rule("nothing imports tests (not installed)", tuple(f"{name}/" for name in SCANNED), ("tests",)),
)


@dataclass(frozen=True)
class Import:
    path: str  # the importing file, relative to the root
    line: int
    module: str  # dotted; `from a import b` gives both `a` and `a.b` (b may be a module)


def module_files(root: Path) -> Iterator[Path]:
    for name in SCANNED:
        yield from sorted((root / name).rglob("*.py"))


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    relative = path.relative_to(root).as_posix()
    package = path.relative_to(root).with_suffix("").parts[:-1]  # the file's package, for relative imports
    for node in ast.walk(ast.parse(path.read_text(), filename=relative)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(relative, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module:
                yield Import(relative, node.lineno, module)
            for alias in node.names:
                yield Import(relative, node.lineno, f"{module}.{alias.name}" if module else alias.name)


def applies(rule: Rule, path: str) -> bool:
    return path not in rule.allowed_in and any(path.startswith(importer) for importer in rule.importers)


def breaks(rule: Rule, module: str) -> bool:
    return any(module == prefix or module.startswith(f"{prefix}.") for prefix in rule.forbidden)


def violations(root: Path) -> list[str]:
    """`file:line imports module (rule)` for every import that breaks a rule, once per line and rule."""
    found: dict[tuple[str, int, str], str] = {}
    for path in module_files(root):
        for imported in imports_of(root, path):
            for rule in RULES:
                key = (imported.path, imported.line, rule.why)
                if key not in found and applies(rule, imported.path) and breaks(rule, imported.module):
                    found[key] = f"{imported.path}:{imported.line} imports {imported.module} ({rule.why})"
    return [found[key] for key in sorted(found)]


def test_every_import_points_down_the_layers() -> None:
    assert list(module_files(ROOT)), f"no modules found under {ROOT}"
    offending = violations(ROOT)
    assert not offending, "imports against the layering rules:\n" + "\n".join(offending)


def test_the_check_names_each_offending_file_and_line(tmp_path: Path) -> None:
    files = {
        "rag/store.py": "import os\nfrom server.app import build\n",
        "compression/x.py": "def f():\n    from lcrag import settings\n",
        "server/api/y.py": "from ui import views\n",
        "server/app.py": "from ui.mount import mount_ui\n",  # allowed: app.py mounts the UI
        "evals/z.py": "from ..ui.client import LcragClient\n",  # relative, resolves to ui.client
        "bench/b.py": "from lcrag import cli\nfrom lcrag.client import connect\n",
        "lcrag/client.py": "import evals.api\n",
        "lcrag/cli.py": "import ui.app\nimport evals\n",  # the CLI may import anything
        "ui/app.py": "from evals.collection import run\n",  # the UI may import evals
        "docs/shots.py": "from tests.documents import make_pdf\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert [line.split(" (")[0] for line in violations(tmp_path)] == [
        "bench/b.py:1 imports lcrag.cli",
        "compression/x.py:2 imports lcrag",
        "docs/shots.py:1 imports tests.documents",
        "evals/z.py:1 imports ui.client",
        "lcrag/client.py:1 imports evals.api",
        "rag/store.py:2 imports server.app",
        "server/api/y.py:1 imports ui",
    ]
