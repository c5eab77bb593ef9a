"""The package's shape (docs/design.md, "Layers"): every import goes to the same or a lower
layer, as the document lists them; no import cycle between modules; rich only in the command
line. Imports are read with ``ast`` (those inside functions count too); nothing is imported or
run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "speechrank"
DESIGN = REPO / "docs" / "design.md"


def _layers(text: str) -> list[tuple[str, list[str]]]:
    """The ``layers`` block of the design document: ``(name, modules)`` lowest first, each
    module as a full dotted name (``__init__`` is the package itself)."""
    found = re.search(r"^```layers\n(.*?)^```", text, re.S | re.M)
    assert found, "docs/design.md has no ```layers block"
    layers = []
    for line in found.group(1).splitlines():
        if line.strip():
            name, _, members = line.partition(":")
            layers.append((name.strip(), [
                "speechrank" if m == "__init__" else f"speechrank.{m}" for m in members.split()]))
    return layers


def _layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """The index of the layer holding ``module`` (its longest listed prefix)."""
    best: tuple[int, int] | None = None
    for index, (_, members) in enumerate(layers):
        for member in members:
            inside = module == member or (
                member != "speechrank" and module.startswith(member + "."))
            if inside and (best is None or len(member) > best[1]):
                best = (index, len(member))
    return best[0] if best else None


def _upward(layers: list[tuple[str, list[str]]]) -> list[str]:
    """Every import of a module from a later layer than its own."""
    mods = _modules()
    found = []
    for name, path in mods.items():
        own = _layer_of(name, layers)
        for target in _imports(name, path, mods):
            theirs = _layer_of(target, layers)
            if theirs is not None and own is not None and theirs > own:
                found.append(f"{name} ({layers[own][0]}) imports {target} "
                             f"({layers[theirs][0]})")
    return sorted(found)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Every ``speechrank`` module ``name`` imports (the deepest existing module of each)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else \
                    name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in mods:
                target = target.rpartition(".")[0]
            # a package's own __init__ importing its submodules is not a cycle edge upwards
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _rich_users(mods: dict[str, Path]) -> set[str]:
    users = set()
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            if any(n.split(".")[0] == "rich" for n in names):
                users.add(name)
    return users


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules() -> None:
    mods = _modules()
    assert len(mods) > 50  # the walk found the package
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert "speechrank.accumulate" in graph["speechrank.rank"]  # edges are seen
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_rich_only_in_the_cli() -> None:
    assert _rich_users(_modules()) == {"speechrank.cli"}


def test_the_layers_of_the_design_document_hold():
    mods = _modules()
    layers = _layers(DESIGN.read_text(encoding="utf-8"))
    listed = [member for _, members in layers for member in members]
    assert len(listed) == len(set(listed)), "a module is listed in two layers"
    assert not [m for m in listed if m not in mods], "the document lists a module that is gone"
    unplaced = sorted(m for m in mods if _layer_of(m, layers) is None)
    assert not unplaced, f"modules in no layer of docs/design.md: {unplaced}"
    upward = _upward(layers)
    assert not upward, "imports upwards:\n" + "\n".join(upward)


def test_the_layer_check_finds_upward_imports():
    layers = _layers(DESIGN.read_text(encoding="utf-8"))
    assert _layer_of("speechrank.probes.drivers", layers) == _layer_of("speechrank.rank", layers)
    assert _layer_of("speechrank", layers) == 0
    assert _layer_of("speechrank.nowhere", layers) is None
    assert any("speechrank.cli" in line for line in _upward(layers[::-1]))
    with pytest.raises(AssertionError, match="no ```layers block"):
        _layers("# nothing here\n")
