"""The import graph of both packages: no cycle, and no import from a lower layer to a
higher one (docs/architecture.md draws the layers)."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("deephys_lightning", "tensorboard_plugin_deephys")

# Layer of each module (by longest matching prefix), and the layers it may import.
LAYERS = {
    "tensorboard_plugin_deephys.log": "log",
    "deephys_lightning.metrics": "kernels",
    "deephys_lightning.detection": "kernels",
    "deephys_lightning.head_detectors": "kernels",
    "deephys_lightning.calibration": "kernels",
    "deephys_lightning.contributions": "kernels",
    "deephys_lightning.fast_crc": "kernels",
    "deephys_lightning.cbor": "kernels",
    "deephys_lightning.event_files": "kernels",
    "deephys_lightning.recording": "recording",
    "deephys_lightning.writing": "writing",
    "deephys_lightning.options": "glue",
    "deephys_lightning.callback": "glue",
    "deephys_lightning.reader": "readers",
    "deephys_lightning.scores": "readers",
    "deephys_lightning.export": "readers",
    "deephys_lightning.report": "readers",
    "deephys_lightning.cli": "readers",
    "deephys_lightning.__main__": "readers",
    "deephys_lightning.demo": "top",
    "deephys_lightning": "top",  # the package's own __init__: its public names
    "tensorboard_plugin_deephys": "plugin",
}
MAY_IMPORT = {
    "log": {"log"},
    "kernels": {"log", "kernels"},
    "recording": {"log", "kernels", "recording"},
    "writing": {"log", "kernels", "recording", "writing"},
    "glue": {"log", "kernels", "recording", "writing", "glue"},
    "readers": {"log", "kernels", "readers"},
    "plugin": {"log", "plugin"},
    "top": {"log", "kernels", "recording", "writing", "glue", "readers", "top"},
}


def _modules() -> dict[str, str]:
    """Dotted module name -> path, for every module of both packages."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _layer(module: str) -> str:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def _imports(module: str, path: str, modules: dict[str, str]) -> set[str]:
    """The project modules ``module`` imports (at any depth of its code)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    is_package = path.endswith("__init__.py")
    base = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{anchor}.{node.module}" if node.module else anchor
            else:
                source = node.module or ""
            for alias in node.names:  # a submodule, else a name defined in ``source``
                submodule = f"{source}.{alias.name}"
                names.add(submodule if submodule in modules else source)
    return {name for name in names if name in modules and name != module}


def test_no_import_goes_up_a_layer():
    modules = _modules()
    upward = []
    for module, path in modules.items():
        for imported in _imports(module, path, modules):
            if _layer(imported) not in MAY_IMPORT[_layer(module)]:
                upward.append(f"{module} ({_layer(module)}) -> {imported} ({_layer(imported)})")
    assert upward == []


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph = {module: _imports(module, path, modules) for module, path in modules.items()}
    # A package's __init__ re-exporting its submodules is not a cycle of logic.
    graph = {
        module: {i for i in imports if not module.startswith(i + ".")}
        for module, imports in graph.items()
    }
    state: dict[str, int] = {}  # 1: on the path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycles.append(path[path.index(imported) :] + [imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_callback_is_glue_only():
    """callback.py keeps the options, the hooks, the workers and state_dict."""
    with open(os.path.join(ROOT, "deephys_lightning", "callback.py"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= 450
