"""The package's layers stack one way (docs/architecture.md), read from the source with ``ast``.

ground floor → codec → engine → playlist → sinks → station → control → application: a module may
import its own layer and the layers below it, never one above; no two modules import each other
(directly or round a longer loop); nothing is imported by a string (``__import__``,
``importlib.import_module``). Every import counts, also those inside functions and under
``TYPE_CHECKING``: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "riffradio"

#: bottom to top; a module belongs to the first layer one of whose prefixes it starts with
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground floor", ("riffradio.core", "riffradio.errors", "riffradio.metrics")),
    ("codec", ("riffradio.spectrogram",)),
    ("engine", ("riffradio.engine",)),
    ("playlist", ("riffradio.playlist",)),
    ("sinks", ("riffradio.sinks",)),
    ("station", ("riffradio.station",)),
    ("control", ("riffradio.control",)),
    ("application", ("riffradio.app", "riffradio.__main__")),
)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """Index of ``module``'s layer; None for the top package ``riffradio`` (its version only)."""
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The riffradio modules ``path`` imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            if target == "riffradio" or target.startswith("riffradio."):
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                if target != name:
                    found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, name, known) for name, path in found.items()}


def test_every_module_has_a_layer() -> None:
    assert [name for name in modules() if name != "riffradio" and layer_of(name) is None] == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for name, targets in graph().items():
        own = layer_of(name)
        for target in sorted(targets):
            their = layer_of(target)
            if own is not None and their is not None and their > own:
                upward.append(f"{name} ({LAYERS[own][0]}) imports {target} ({LAYERS[their][0]})")
    assert upward == []


def test_the_ground_floor_imports_nothing_else_of_riffradio() -> None:
    ground = {name: targets for name, targets in graph().items() if layer_of(name) == 0}
    assert ground and all(layer_of(target) == 0 for targets in ground.values() for target in targets), ground


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(edges.get(name, ())):
            if target == "riffradio":
                continue
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif state.get(target) is None:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if state.get(name) is None:
            visit(name)
    assert cycles == []


def test_nothing_is_imported_by_a_string() -> None:
    calls = []
    for name, path in modules().items():
        calls += _import_calls(name, ast.parse(path.read_text(encoding="utf-8")))
    assert calls == []


def _import_calls(name: str, tree: ast.AST) -> list[str]:
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        called = function.id if isinstance(function, ast.Name) else function.attr if isinstance(function, ast.Attribute) else ""
        if called in ("__import__", "import_module"):
            calls.append(f"{name}:{node.lineno}: {called}(...)")
    return calls


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The parser finds relative, function-level and TYPE_CHECKING imports (so the tests above can fail)."""
    source = tmp_path / "riffradio" / "sinks" / "probe.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from riffradio.station import state\n"
        "def f():\n    from ..control import osc\n"
    )
    known = {"riffradio.station.state", "riffradio.control.osc", "riffradio.sinks.probe"}
    found = imports_of(source, module_name(source, tmp_path / "riffradio"), known)
    assert found == {"riffradio.station.state", "riffradio.control.osc"}
    assert all(layer_of(target) > layer_of("riffradio.sinks.probe") for target in found)
    assert _import_calls("probe", ast.parse("import importlib\nimportlib.import_module('riffradio.x')\n__import__('y')"))
