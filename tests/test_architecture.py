"""The package's own architecture, checked from its source (ast, nothing imported):

- every module sits on a floor (FLOORS, the table of docs/architecture.md) and imports only from lower floors
  or from its own subpackage; module-level and function-level imports alike;
- no import cycle, between modules or between subpackages;
- the environment is read in config.py only (writing a variable for a spawned child is allowed);
- the product never imports the tests' modules (test doubles, fault injection) nor names their hooks.

The checks are plain functions over an import graph; the last tests feed them bad graphs so they can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "virnucpro"
TESTS = REPO / "tests"

# Unit (top-level module or subpackage of virnucpro) -> floor. A unit imports only units on lower floors.
FLOORS = {
    "virnucpro": 0, "errors": 0, "config": 0,  # the package root holds only __version__
    "io": 1,
    "prep": 2, "tokenize": 2, "pack": 2, "outputs": 2,
    "models": 3,
    "reference": 4,
    "store": 5,
    "testing": 6,
    "engine": 7,
    "run": 8,
    "slurm": 9, "bench": 9, "selftest": 9,
    "commands": 10,
    "cli": 11,
    "__main__": 12,
}
# Beyond the floors: the engine loads the files it is given (names are resolved by run through store), and the
# run machinery never touches test-model writers or oracles.
NOT_IMPORTED_BY = {"store": {"engine"}, "testing": {"engine", "run", "slurm"}, "reference": {"engine", "run", "slurm"}}
ENVIRONMENT_READERS = {"virnucpro.config"}
# Where a process starts: the only places that build an EnvConfig from the environment (cli.main; a SLURM job's task:
# shard, aggregation, prep job).
ENTRY_POINTS = {"virnucpro.cli", "virnucpro.slurm.tasks", "virnucpro.slurm.prep_job"}
FAULT_INJECTION_WORDS = ("VIRNUCPRO_TEST_", "SIGKILL", "os.kill(")


# ------------------------------------------------------------------------------------------ the graph


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of the package that `module` imports anywhere in its body (`from a import b` -> a.b if a module)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {_known_prefix(name, known) for name in found} - {None}


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _known_prefix(name: str, known: set[str]) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imported_modules(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known) - {name}
            for name, path in modules.items()}


# ------------------------------------------------------------------------------------------ the rules


def floor_violations(graph: dict[str, set[str]], floors: dict[str, int],
                     not_imported_by: dict[str, set[str]] = NOT_IMPORTED_BY) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        if unit(module) not in floors:
            problems.append(f"{module}: unit '{unit(module)}' has no floor (add it to FLOORS and docs/architecture.md)")
            continue
        for target in sorted(targets):
            if unit(target) == unit(module):
                continue
            if unit(target) not in floors or floors[unit(target)] >= floors[unit(module)]:
                problems.append(f"{module} (floor {floors[unit(module)]}) imports {target} "
                                f"(floor {floors.get(unit(target), '?')})")
            elif unit(module) in not_imported_by.get(unit(target), ()):
                problems.append(f"{module} imports {target}: {unit(target)} is not for {unit(module)}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for module, targets in graph.items():
        units.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    return units


def environment_reads(source: str) -> list[int]:
    """Lines that read the process environment: os.environ (other than as an assignment target), os.getenv,
    `from os import environ / getenv`."""
    tree = ast.parse(source)
    written = {id(node.value) for node in ast.walk(tree)
               if isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del))}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr in ("getenv", "getenvb", "environb") or (node.attr == "environ" and id(node) not in written):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(alias.name in ("environ", "getenv", "environb", "getenvb") for alias in node.names):
                lines.append(node.lineno)
    return lines


def environment_builders(source: str) -> list[int]:
    """Lines that call `<anything>.from_environ(...)` with no mapping, i.e. build an EnvConfig from os.environ."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_environ"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "EnvConfig" and not node.args]


def module_names_of_tests(path: Path = TESTS) -> set[str]:
    return {p.stem for p in path.glob("*.py")} | {"tests"}


def foreign_imports(source: str, forbidden: set[str]) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.append(node.module or "")
    return [name for name in names if name.split(".")[0] in forbidden]


# ------------------------------------------------------------------------------------------ the package


def test_every_import_runs_down_the_floors():
    assert floor_violations(import_graph(), FLOORS) == []


def test_no_import_cycles_between_modules_or_subpackages():
    graph = import_graph()
    assert cycles(graph) == []
    assert cycles(unit_graph(graph)) == []


def test_the_environment_is_read_in_config_only():
    readers = {name: environment_reads(path.read_text()) for name, path in package_modules().items()}
    assert {name: lines for name, lines in readers.items() if lines and name not in ENVIRONMENT_READERS} == {}
    assert readers["virnucpro.config"], "config.py must be where the environment is read"


def test_the_environment_config_is_built_at_entry_points_only():
    builders = {name: environment_builders(path.read_text()) for name, path in package_modules().items()}
    assert {name for name, lines in builders.items() if lines} == ENTRY_POINTS


def test_the_product_holds_no_test_doubles_or_fault_injection():
    forbidden = module_names_of_tests()
    for name, path in package_modules().items():
        source = path.read_text()
        assert foreign_imports(source, forbidden) == [], name
        assert [word for word in FAULT_INJECTION_WORDS if word in source] == [], name


def test_floor_table_covers_exactly_the_package():
    assert {unit(name) for name in package_modules()} == set(FLOORS)


# ------------------------------------------------------------------------------------------ the checks can fail


def test_checks_catch_an_upward_import_and_cycles():
    bad = {
        "virnucpro.io.reader": {"virnucpro.run.plan"},  # io (1) reaching up into run (8)
        "virnucpro.run.plan": {"virnucpro.run.shard", "virnucpro.io.reader"},
        "virnucpro.run.shard": {"virnucpro.run.plan"},  # a cycle inside one subpackage
        "virnucpro.gadget": set(),  # a unit without a floor
    }
    bad["virnucpro.engine.loading"] = {"virnucpro.store.resolve"}  # downward, but not the engine's business
    problems = floor_violations(bad, FLOORS)
    assert any("virnucpro.io.reader (floor 1) imports virnucpro.run.plan (floor 8)" in p for p in problems)
    assert any("virnucpro.engine.loading imports virnucpro.store.resolve" in p for p in problems)
    assert any("unit 'gadget' has no floor" in p for p in problems)
    assert cycles(bad) == [["virnucpro.io.reader", "virnucpro.run.plan", "virnucpro.run.shard"]]
    assert cycles(unit_graph(bad)) == [["io", "run"]]


def test_import_resolution_covers_function_level_and_relative_imports():
    source = "def f():\n    from virnucpro.run import shard\n    from . import sibling\n    import virnucpro.io.x\n"
    known = {"virnucpro.run", "virnucpro.run.shard", "virnucpro.store", "virnucpro.store.sibling",
             "virnucpro.io", "virnucpro.io.x"}
    assert imported_modules(ast.parse(source), "virnucpro.store.user", False, known) == \
        {"virnucpro.run.shard", "virnucpro.store.sibling", "virnucpro.io.x"}


@pytest.mark.parametrize("source, reads", [
    ("import os\nx = os.environ.get('A')\n", [2]),
    ("import os\nx = os.getenv('A')\n", [2]),
    ("from os import environ\n", [1]),
    ("import os\nos.environ['CUDA_VISIBLE_DEVICES'] = '0'\n", []),
    ("import os\ncopy = dict(os.environ)\n", [2]),
])
def test_environment_reads_are_found(source, reads):
    assert environment_reads(source) == reads


def test_environment_builders_are_found():
    assert environment_builders("env = EnvConfig.from_environ()\nother = EnvConfig.from_environ({'A': '1'})\n") == [1]


def test_foreign_imports_are_found():
    forbidden = module_names_of_tests()
    assert "doubles" in forbidden and "fault_runner" in forbidden
    assert foreign_imports("from doubles import HashScorer\nimport tests.x\nimport numpy\n", forbidden) == \
        ["doubles", "tests.x"]
