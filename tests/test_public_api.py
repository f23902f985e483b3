"""The public API is what privatellm.__all__ names; the import graph runs one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import privatellm

PACKAGE = Path(privatellm.__file__).parent

PUBLIC = [
    "Answer",
    "Chunk",
    "Citation",
    "ConfigError",
    "DocumentRecord",
    "FileOutcome",
    "IngestReport",
    "ModelError",
    "NotFoundError",
    "PrivateLLMError",
    "Reply",
    "ScoredChunk",
    "Service",
    "Settings",
    "Status",
    "Upload",
    "create_app",
    "load_settings",
]


def test_all_is_pinned_and_every_name_resolves() -> None:
    assert privatellm.__all__ == PUBLIC
    assert set(privatellm._HOMES) == set(PUBLIC)  # every public name has a home to load from
    for name in PUBLIC:
        value = getattr(privatellm, name)
        assert value.__name__ == name


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        privatellm.nothing_here  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as e:
        assert "nothing_here" in str(e)
    else:
        raise AssertionError("no AttributeError")


def test_import_privatellm_loads_nothing_heavy() -> None:
    code = (
        "import sys, privatellm; "
        "print(sorted(m for m in ('numpy', 'chromadb', 'torch', 'privatellm.service') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Returns the privatellm modules path imports, at run time or for type checking alike
    (`from privatellm.api import schemas` imports the submodule, not the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= submodules or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found & modules


def _graph() -> dict[str, set[str]]:
    paths = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    modules = set(paths)
    return {
        name: _imports(path, modules) - {name}
        for name, path in paths.items()
        if name != "privatellm"  # the package root re-exports the public API lazily
    }


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path, name]))
        if name in done:
            return
        for dependency in sorted(graph.get(name, ())):
            visit(dependency, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())


def test_nothing_below_the_service_imports_it() -> None:
    graph = _graph()
    above = {"privatellm.cli", "privatellm.langchain", "privatellm.evaluate", "privatellm.watching"}
    above |= {"privatellm.watchfolders"}
    above |= {name for name in graph if name.startswith("privatellm.api")}
    for name, dependencies in graph.items():
        if "privatellm.service" in dependencies:
            assert name in above, f"{name} imports the service it is part of"
