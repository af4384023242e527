"""The package's imports go one way: a layer imports only the layers below it,
and no modules import each other round in a circle. Read from the source with
ast, function-level imports included, so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import anime_cli

PKG = Path(anime_cli.__file__).parent

# lowest first; a module may import its own package and the rows above its own
LAYERS = ["errors", "options", "logs", "folder", "inputs", "engine", "models", "weights", "stylize", "faces",
          "kinds", "run", "serve", "cli"]
ENTRY = {"__init__", "__main__"}  # the package's own doors: they may point anywhere


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["anime_cli", *parts])


def imports_of(path: Path) -> set[str]:
    """The anime_cli modules `path` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("anime_cli")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            if not mod.startswith("anime_cli"):
                continue
            found.add(mod)
            for a in node.names:  # `from anime_cli.kinds import video` imports a module
                if (PKG / Path(*f"{mod}.{a.name}".split(".")[1:])).with_suffix(".py").exists():
                    found.add(f"{mod}.{a.name}")
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PKG.rglob("*.py")}


def layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in ENTRY:
        return None
    return LAYERS.index(parts[1])


def test_every_package_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert tops - ENTRY <= set(LAYERS), f"no layer for {sorted(tops - ENTRY - set(LAYERS))}"


def test_no_upward_import():
    upward = []
    for mod, deps in graph().items():
        here = layer(mod)
        for dep in deps:
            there = layer(dep)
            if here is None or there is None:
                continue
            same_package = mod.split(".")[1] == dep.split(".")[1]
            if there > here or (there == here and not same_package):
                upward.append(f"{mod} -> {dep}")
    assert not upward, "imports of a higher layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    g = graph()
    # a package's __init__ imported by its own modules is the package itself, not a cycle
    edges = {m: {d for d in deps if d in g and not m.startswith(d + ".")} for m, deps in g.items()}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in sorted(edges[m]):
            visit(d)
        stack.pop()

    for m in sorted(edges):
        visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("name", anime_cli.__all__)
def test_public_api_names_resolve(name):
    assert getattr(anime_cli, name) is not None


def test_no_private_name_is_imported_across_modules():
    """A leading underscore means "this module's own": another module must not reach for it."""
    reached = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("anime_cli")):
                reached += [f"{module_name(path)}: {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert not reached, "private names imported from another module:\n" + "\n".join(sorted(reached))
