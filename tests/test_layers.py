"""The package's layers point down only: a module imports nothing from a layer above its own.

The layers follow the data flow (`LAYERS`, bottom first); a folder is one unit, and so is each module of
the ground floor. Every `import` counts, including those inside functions (a lazy import is still a
dependency). The facade `gssm_jax/__init__.py` sits above everything: it names the public API.
"""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gssm_jax")
# Bottom first. Units in the same row may not import each other either.
LAYERS = (
    ("errors", "files", "threefry", "lazy"),
    ("locks",),
    ("keys", "statistics", "parallel", "compilation_cache"),
    ("gssm",),
    ("sampling",),
    ("inference",),
    ("data",),
    ("difficulty",),
    ("learners",),
    ("training",),
    ("experiment1",),
    ("configs",),
    ("cli",),
)
RANK = {unit: rank for rank, row in enumerate(LAYERS) for unit in row}


def _imports(path: str, module: str) -> set[str]:
    """Every `gssm_jax...` module (or name) `path` imports, resolved to dotted names."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("gssm_jax.")}


def _unit(dotted: str) -> str | None:
    """The layer unit of `gssm_jax.<unit>...`, or None for the facade."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else None


def edges() -> list[tuple[str, str]]:
    """(importing module, imported name) for every import inside the package, the facade left out."""
    found = []
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
            module = relative.removesuffix(".__init__")
            if module == "gssm_jax":
                continue
            found += [(module, imported) for imported in sorted(_imports(path, module))]
    return found


def test_every_unit_has_a_layer():
    units = {entry.removesuffix(".py") for entry in os.listdir(PACKAGE)
             if entry != "__init__.py" and (entry.endswith(".py") or os.path.isdir(os.path.join(PACKAGE, entry, "")))
             and entry != "__pycache__"}
    assert units == set(RANK), "add the new unit to LAYERS (tests/test_layers.py) at its place in the data flow"


def test_imports_point_down_only():
    upward = [f"{module} imports {imported}" for module, imported in edges()
              if _unit(module) != _unit(imported) and RANK[_unit(imported)] >= RANK[_unit(module)]]
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)
