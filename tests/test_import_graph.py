"""The import graph of ``plugin/`` and ``mm_models/``, read from the source: no circle in either,
nothing in ``plugin/`` importing a layer above its own, FiftyOne kept out of ``mm_models`` and of
``plugin/data``.

Every import counts, at module level and inside functions alike (an import deferred into a
function still closes a circle when it runs); those under ``if TYPE_CHECKING:`` never run and
do not. ``from package import name`` is an edge to the module that defines ``name`` when the
package's ``__init__`` re-exports it lazily (``_EXPORTS``), to the submodule ``name`` when there
is one, else to the package's ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the installed name of each folder checked
PACKAGES = {"cilp_plugin": REPO / "plugin", "mm_models": REPO / "mm_models"}
#: plugin/'s layers, bottom to top: a module may import its own layer and those below it
#: (``plugin/__init__.py`` states the same order; ``_exports`` is below them all)
LAYERS = ("_exports", "data", "dataset", "runs", "writeback", "service", "cli")
FIFTYONE = ("fiftyone",)
OUR_UPPER_PACKAGES = ("cilp_plugin", "cilp_operators")


def _modules(package: str, root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (a package's is its ``__init__.py``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def _runtime_imports(tree: ast.AST):
    """The ``Import`` / ``ImportFrom`` nodes that run: everywhere but under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in _runtime_imports_of(child))
            continue
        yield from _runtime_imports_of(node)


def _runtime_imports_of(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _runtime_imports(node)


def imports_of(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """``(module, name or None, line)`` of every import in the module ``name`` (file ``path``),
    relative imports made absolute."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
            continue
        if node.level:
            base = here[: len(here) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module
        found += [(module, alias.name, node.lineno) for alias in node.names]
    return found


def _lazy_exports(path: Path) -> dict[str, str]:
    """Name -> module of a package ``__init__``'s ``_EXPORTS`` (module -> names), if it has one."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return {n: module for module, names in ast.literal_eval(node.value).items() for n in names}
    return {}


def import_graph(package: str, root: Path) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the same package: line} for every module under ``root``."""
    modules = _modules(package, root)
    exports = {name: _lazy_exports(path) for name, path in modules.items() if path.name == "__init__.py"}
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        for module, imported, line in imports_of(name, path):
            if module.split(".")[0] != package:
                continue
            if imported and f"{module}.{imported}" in modules:
                target = f"{module}.{imported}"
            elif imported and imported in exports.get(module, {}):
                target = f"{module}.{exports[module][imported]}"
            else:
                target = module
            assert target in modules, f"{path}:{line}: imports {target}, which is not a module of {root}"
            if target != name:
                graph[name].setdefault(target, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One circle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once every way out is explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]], root: Path) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
    return f"import circle in {root.name}/: " + "; ".join(steps)


def _layer(module: str) -> str | None:
    """The layer of a ``cilp_plugin`` module; ``None`` for ``plugin/__init__.py`` (the entry point)."""
    parts = module.split(".")[1:]
    return parts[0] if parts else None


def _foreign_imports(package: str, banned: tuple[str, ...]) -> list[str]:
    root = PACKAGES[package]
    return [f"{path.relative_to(REPO)}:{line}: imports {module}"
            for name, path in _modules(package, root).items()
            for module, _, line in imports_of(name, path) if module.split(".")[0] in banned]


# --------------------------------------------------------------------------- plugin/


def test_plugin_has_no_import_circle():
    graph = import_graph("cilp_plugin", PACKAGES["cilp_plugin"])
    cycle = find_cycle(graph)
    assert cycle is None, describe(cycle, graph, PACKAGES["cilp_plugin"])


def test_plugin_layers_import_only_downwards():
    graph = import_graph("cilp_plugin", PACKAGES["cilp_plugin"])
    unknown = sorted({_layer(m) for m in graph} - set(LAYERS) - {None})
    assert not unknown, f"plugin/ has folders or modules outside the layers {LAYERS}: {unknown} (add them to LAYERS " \
                        f"and to the order in plugin/__init__.py)"
    upwards = [f"{module} (line {line}) imports {target}: layer '{_layer(target)}' is above '{_layer(module)}'"
               for module, targets in graph.items() if _layer(module) for target, line in targets.items()
               if LAYERS.index(_layer(target) or "cli") > LAYERS.index(_layer(module))]
    assert not upwards, "imports running up the layers " + " < ".join(LAYERS) + ":\n" + "\n".join(upwards)


def test_plugin_entry_point_imports_only_the_operators():
    """FiftyOne runs ``plugin/__init__.py`` under a name of its own; it registers the operators and
    imports nothing of the plugin, which the operators in turn import."""
    graph = import_graph("cilp_plugin", PACKAGES["cilp_plugin"])
    assert graph["cilp_plugin"] == {}
    above = [line for line in _foreign_imports("cilp_plugin", ("cilp_operators",))
             if not line.startswith("plugin/__init__.py:")]
    assert not above, "plugin/ imports the operators, which sit on top of it:\n" + "\n".join(above)


def test_plugin_data_imports_no_fiftyone():
    data = [line for line in _foreign_imports("cilp_plugin", FIFTYONE) if line.startswith("plugin/data/")]
    assert not data, "plugin/data/ is the FiftyOne-free layer:\n" + "\n".join(data)


# --------------------------------------------------------------------------- mm_models/


def test_mm_models_has_no_import_circle():
    graph = import_graph("mm_models", PACKAGES["mm_models"])
    cycle = find_cycle(graph)
    assert cycle is None, describe(cycle, graph, PACKAGES["mm_models"])


def test_mm_models_imports_neither_fiftyone_nor_the_plugin():
    found = _foreign_imports("mm_models", FIFTYONE + OUR_UPPER_PACKAGES)
    assert not found, "mm_models is torch only:\n" + "\n".join(found)


# --------------------------------------------------------------------------- the checker itself


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path):
    root = tmp_path / "pkg"
    (root / "low").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "low" / "__init__.py").write_text('_EXPORTS = {"b": ("helper",)}\n')
    (root / "a.py").write_text("from .low import helper\n")
    (root / "low" / "b.py").write_text("def helper():\n    from ..a import x\n")
    (root / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    graph = import_graph("pkg", root)
    assert graph["pkg.c"] == {}  # under TYPE_CHECKING: never runs
    cycle = find_cycle(graph)
    assert cycle == ["pkg.a", "pkg.low.b", "pkg.a"]
    assert "pkg.low.b (line 2) -> pkg.a" in describe(cycle, graph, root)
    (root / "low" / "b.py").write_text("def helper():\n    pass\n")
    assert find_cycle(import_graph("pkg", root)) is None



def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def test_each_reexported_name_is_defined_where_its_package_says():
    """A sub-package's ``_EXPORTS`` names what each module defines, and no name hides a module."""
    modules = _modules("cilp_plugin", PACKAGES["cilp_plugin"])
    wrong = []
    for package, path in modules.items():
        if path.name != "__init__.py":
            continue
        for name, module in _lazy_exports(path).items():
            source = modules.get(f"{package}.{module}")
            if source is None or name not in _top_level_names(source):
                wrong.append(f"{package}: {name} is not defined in {package}.{module}")
            if f"{package}.{name}" in modules:
                wrong.append(f"{package}: the name {name} would hide the module {package}.{name}")
    assert not wrong, "\n".join(wrong)
