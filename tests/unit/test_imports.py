"""No import cycle among a package's modules, and no module imported for its side effects.

A cycle makes what a module holds depend on which of its importers ran first; an import
kept only for what the module does when it runs hides who depends on whom (the operations
commands once registered themselves on the `payherald` app that way). Both are read from
the source with ast: every import, at a module's top or inside a function, under
TYPE_CHECKING too, so that a cycle cannot hide in a function body.

The checks take the scope (a package) as a parameter: all of ``payherald``, and its
``cli`` on its own. The same reading finds SQL outside the store: only ``payherald.store``
(and the migrations it runs) may import SQLAlchemy or Alembic.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

SCOPES = ["payherald", "payherald.cli"]


@dataclass(frozen=True)
class Module:
    tree: ast.Module
    is_package: bool


def read_modules(directory: Path, package: str) -> dict[str, Module]:
    """Every module of ``package`` (whose files are in ``directory``), parsed, by name."""
    modules = {}
    for file in sorted(directory.rglob("*.py")):
        parts = [package, *file.relative_to(directory).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        modules[".".join(parts)] = Module(tree, is_package)
    return modules


def scope_modules(package: str) -> dict[str, Module]:
    spec = importlib.util.find_spec(package)
    assert spec is not None, f"{package} is not importable"
    assert spec.submodule_search_locations, f"{package} is not a package"
    return read_modules(Path(next(iter(spec.submodule_search_locations))), package)


def imported(name: str, module: Module, known: set[str]) -> list[str]:
    """The modules module ``name`` imports, at any depth: for ``from a import b``, ``a.b``
    when that is one of the ``known`` modules, else ``a``."""
    package = name if module.is_package else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append(full if full in known else base)
    return found


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Which modules of the scope each module of it imports."""
    known = set(modules)
    return {
        name: {target for target in imported(name, module, known) if target in known} - {name}
        for name, module in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (its modules in order, the first repeated at the end),
    or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        path.append(name)
        for target in sorted(graph[name]):
            if cycle := visit(target):
                return cycle
        path.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        if cycle := visit(name):
            return cycle
    return None


def unused_imports(modules: dict[str, Module]) -> list[str]:
    """Every name an import binds that its module never reads (nor lists in ``__all__``):
    an import kept for its side effects. ``from __future__`` imports are the compiler's."""
    unused = []
    for name, module in modules.items():
        tree = module.tree
        read = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        read |= _exported(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    bound = alias.asname or alias.name.partition(".")[0]
                    if bound not in read:
                        unused.append(f"{name}:{node.lineno} imports {alias.name} unused")
    return unused


def _exported(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


@pytest.mark.parametrize("scope", SCOPES)
def test_no_import_cycle_among_the_modules(scope: str) -> None:
    modules = scope_modules(scope)
    assert len(modules) > 1, f"{scope} has no modules to check"
    assert find_cycle(import_graph(modules)) is None


@pytest.mark.parametrize("scope", SCOPES)
def test_no_module_is_imported_for_its_side_effects(scope: str) -> None:
    assert unused_imports(scope_modules(scope)) == []


def write_package(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return read_modules(root, "pkg")


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    modules = write_package(
        tmp_path,
        {
            "__init__.py": "from pkg import commands\n\napp = commands.run\n",
            "commands.py": "def run():\n    from pkg.output import say\n    say()\n",
            "output.py": "def say():\n    from . import app\n    app()\n",
        },
    )
    assert find_cycle(import_graph(modules)) == ["pkg", "pkg.commands", "pkg.output", "pkg"]


def test_modules_that_import_only_downwards_have_no_cycle(tmp_path: Path) -> None:
    modules = write_package(
        tmp_path,
        {
            "__init__.py": "from pkg import commands\n\napp = commands.run\n",
            "commands.py": "from pkg.output import say\n\ndef run():\n    say()\n",
            "output.py": "def say():\n    pass\n",
        },
    )
    assert import_graph(modules) == {
        "pkg": {"pkg.commands"},
        "pkg.commands": {"pkg.output"},
        "pkg.output": set(),
    }
    assert find_cycle(import_graph(modules)) is None


def test_an_import_kept_for_its_side_effects_is_found(tmp_path: Path) -> None:
    modules = write_package(
        tmp_path,
        {
            "__init__.py": (
                "from __future__ import annotations\n\n"
                "__all__ = ['app']\n\n"
                "from pkg.output import app\n"
                "from pkg import operations  # noqa: F401\n"
            ),
            "operations.py": "import pkg\n\npkg.app.extra = True\n",
            "output.py": "app = object()\n",
        },
    )
    assert unused_imports(modules) == ["pkg:6 imports operations unused"]


# The packages that speak SQL, and the modules that may import them.
DATABASE_LIBRARIES = ("sqlalchemy", "alembic")
MAY_SPEAK_SQL = ("payherald.store", "payherald.migrations")


def database_imports(modules: dict[str, Module]) -> list[str]:
    """Every import of a database library (at any depth, as ``imported`` reads them) by a
    module outside ``payherald.store`` and ``payherald.migrations``."""
    found: set[str] = set()
    known = set(modules)
    for name, module in modules.items():
        if any(name == home or name.startswith(f"{home}.") for home in MAY_SPEAK_SQL):
            continue
        for target in imported(name, module, known):
            if target.partition(".")[0] in DATABASE_LIBRARIES:
                found.add(f"{name} imports {target}")
    return sorted(found)


def test_only_the_store_and_the_migrations_import_sqlalchemy() -> None:
    modules = scope_modules("payherald")
    assert any(name.startswith("payherald.store.") for name in modules)
    assert database_imports(modules) == []


def test_an_import_of_sqlalchemy_inside_a_function_is_found(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    modules = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "retention.py": (
                "from typing import TYPE_CHECKING\n\n"
                "if TYPE_CHECKING:\n    import alembic.command\n\n"
                "def prune():\n    from sqlalchemy import delete\n    return delete\n"
            ),
            "store/__init__.py": "import sqlalchemy\n",
        },
    )
    renamed = {name.replace("pkg", "payherald", 1): module for name, module in modules.items()}
    assert database_imports(renamed) == [
        "payherald.retention imports alembic.command",
        "payherald.retention imports sqlalchemy",
    ]
