"""The library's layout: no import cycle between modules, no private name imported across subpackages, and each
factory in its package's __init__. Read from the source with `ast` (imports inside functions included), so nothing
is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parent.parent / "e2p_lib"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of e2p_lib (a package is named by its __init__)."""
    modules = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
        modules[".".join(parts).removesuffix(".__init__")] = path
    return modules


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every import in `module`, at any depth."""
    found = []
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            found.extend((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.extend((base, alias.name, node.lineno) for alias in node.names)
    return found


def _edges(module: str) -> set[str]:
    """The e2p_lib modules `module` imports (a submodule taken by `from package import submodule` counts as such)."""
    targets = set()
    for imported, name, _ in _imports(module):
        if name is not None and f"{imported}.{name}" in MODULES:
            targets.add(f"{imported}.{name}")
        elif imported in MODULES:
            targets.add(imported)
    targets.discard(module)
    return targets


def _subpackage(module: str) -> str:
    """The package a module belongs to: "e2p_lib.embed" for e2p_lib.embed.local and for e2p_lib.embed itself."""
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def test_the_walk_sees_the_layout():
    assert {
        "e2p_lib",
        "e2p_lib.embed",
        "e2p_lib.store",
        "e2p_lib.lm",
        "e2p_lib.embed.base",
        "e2p_lib.store.pinecone",
        "e2p_lib.lm.cache",
    } <= set(MODULES)
    assert "e2p_lib.embed.base" in _edges("e2p_lib.embed.local")
    assert "e2p_lib.embed.cache" in _edges("e2p_lib.models.forward")  # `from e2p_lib.embed import cache as ...`


def test_no_import_cycle():
    graph = {module: _edges(module) for module in MODULES}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_is_imported_across_subpackages():
    offences = []
    for module in MODULES:
        for imported, name, line in _imports(module):
            if name is None or not name.startswith("_") or not imported.startswith("e2p_lib"):
                continue
            source = f"{imported}.{name}" if f"{imported}.{name}" in MODULES else imported
            if source in MODULES and _subpackage(source) != _subpackage(module):
                offences.append(f"{MODULES[module].relative_to(LIBRARY.parent)}:{line} imports {name} from {imported}")
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize(
    "package, factory",
    [("e2p_lib.embed", "make_embedder"), ("e2p_lib.lm", "make_lm"), ("e2p_lib.store", "make_vector_store")],
)
def test_each_factory_is_defined_in_its_package_init(package, factory):
    assert MODULES[package].name == "__init__.py"
    defined = {node.name for node in TREES[package].body if isinstance(node, ast.FunctionDef)}
    assert factory in defined
    elsewhere = [
        module
        for module, tree in TREES.items()
        if module != package
        and any(isinstance(node, ast.FunctionDef) and node.name == factory for node in ast.walk(tree))
    ]
    assert not elsewhere, f"{factory} is also defined in {elsewhere}"


def test_the_library_keeps_decisions_not_evidence():
    """Experiment scripts, tables and intervals live in docs/ and experiments/: the library cites no bench or
    experiment script and carries no bootstrap interval (a comment points to docs/experiments.md instead)."""
    import re

    evidence = re.compile(r"bench/|experiments/[a-z_]+\.py|\[[+-]?\d\.\d{3}, [+-]?\d\.\d{3}\]")
    found = [
        f"{path.relative_to(LIBRARY.parent)}:{number}: {line.strip()}"
        for path in MODULES.values()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if evidence.search(line)
    ]
    assert not found, found


def test_experiment_scripts_stand_alone():
    """Each script in experiments/ runs on its own through the library: no import of another script, no private
    name, no sys.path edit."""
    folder = LIBRARY.parent / "experiments"
    scripts = sorted(folder.glob("*.py"))
    assert scripts, "experiments/ holds no script"
    names = {p.stem for p in scripts}
    for path in scripts:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(m.split(".")[0] in names for m in modules), (path.name, modules)
                taken = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
                assert not any(name.startswith("_") for name in taken), (path.name, taken)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                raise AssertionError(f"{path.name} uses the private {node.attr}")
        assert "sys.path" not in path.read_text(), path.name
