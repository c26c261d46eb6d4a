"""The rules of the layout (docs/architecture.md), checked on the source itself: no import circle between modules, no
private name reached across modules, no function longer than a screen, and `import qkrag` stays light (no torch)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, ast.Module]:
    """Every module of the package by dotted name (a package's __init__ under the package's name)."""
    out = {}
    for path in sorted((SRC / "qkrag").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(path.read_text(), filename=str(path))
    return out


def imported(name: str, node: ast.AST, known: set[str]) -> list[tuple[str, list[str]]]:
    """(module, names taken from it) for every qkrag import in `node`, wherever it sits (top level or inside a
    function: a lazy import still ties two modules together). `from qkrag.x import y` where y is a module counts as
    importing qkrag.x.y."""
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            out += [(a.name, []) for a in n.names if a.name.split(".")[0] == "qkrag"]
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0 and n.module.split(".")[0] == "qkrag":
            for a in n.names:
                sub = f"{n.module}.{a.name}"
                out.append((sub, []) if sub in known else (n.module, [a.name]))
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph = {m: set() for m in mods}
    for m, tree in mods.items():
        for target, _ in imported(m, tree, known):
            # importing qkrag.a.b runs qkrag/__init__ and qkrag/a/__init__ too; those are the package's docstrings
            # and lazy re-exports, so only the module named counts as an arrow
            if target in known and target != m:
                graph[m].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circle():
    graph = import_graph()
    # the package root re-exports the public API lazily (module __getattr__), so it is no node of the graph
    graph.pop("qkrag", None)
    for targets in graph.values():
        targets.discard("qkrag")
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_cycle_finder_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# The stage order of docs/architecture.md, lowest first. A module may import its own layer and the layers below it,
# never one above, lazy imports included. The vocabulary is what every stage speaks (errors, caches, atomic writes,
# text, corpora, hits and exact search); evaluate holds the measures, which need nothing but the vocabulary, so every
# stage can measure itself; the top layer composes the stages (the main job and evaluation chain, CLI, page, doctor,
# the notebooks' analyses) and the package root, whose lazy re-exports reach everything.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("vocabulary", ("qkrag.errors", "qkrag.cache", "qkrag.atomic", "qkrag.text", "qkrag.data", "qkrag.ranking")),
    ("llm", ("qkrag.llm",)),
    ("embed", ("qkrag.embed",)),
    ("evaluate", ("qkrag.evaluate",)),
    ("pairs", ("qkrag.pairs",)),
    ("projection", ("qkrag.projection",)),
    ("retrieval", ("qkrag.retrieval",)),
    ("integrations", ("qkrag.integrations",)),
    ("apps", ("qkrag.bench", "qkrag.serve", "qkrag.analysis", "qkrag.cli", "qkrag.doctor", "qkrag")),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix that names `module` or a package above it."""
    best, length = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            below = module.startswith(p + ".") and p != "qkrag"  # the root names itself only
            if (module == p or below) and len(p) > length:
                best, length = i, len(p)
    if best is None:
        raise AssertionError(f"{module} is in no layer of LAYERS: add it to the stage order")
    return best


def upward_imports(mods: dict[str, ast.Module]) -> list[str]:
    """Every import, top-level or lazy, from a module into a layer above its own. `from qkrag import __version__`
    is the one name any layer may take from the package root."""
    known = set(mods)
    found = []
    for m, tree in mods.items():
        for target, names in imported(m, tree, known):
            if target == "qkrag" and names == ["__version__"]:
                continue
            if layer_of(target) > layer_of(m):
                found.append(f"{m} ({LAYERS[layer_of(m)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    return sorted(set(found))


def test_stages_import_only_earlier_stages():
    assert upward_imports(modules()) == []


def test_stage_order_check_can_fail():
    mods = modules()
    mods["qkrag.pairs.planted"] = ast.parse("def late():\n    from qkrag.retrieval.index import ChromaIndex\n")
    mods["qkrag.ranking"] = ast.parse("import qkrag.projection.model\n")
    found = upward_imports(mods)
    assert "qkrag.pairs.planted (pairs) imports qkrag.retrieval.index (retrieval)" in found  # a lazy import
    assert "qkrag.ranking (vocabulary) imports qkrag.projection.model (projection)" in found
    with pytest.raises(AssertionError, match="no layer"):
        layer_of("qkrag.unplaced")


def own_names(tree: ast.Module) -> set[str]:
    """Names a module defines: its functions and methods, and the attributes it assigns (self.x = ...)."""
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            names.add(n.attr)
    return names


def private_uses() -> list[str]:
    mods = modules()
    known = set(mods)
    found = []
    for m, tree in mods.items():
        for target, names in imported(m, tree, known):
            hidden = [part for part in target.split(".") if part.startswith("_") and part != "__init__"]
            hidden += [n for n in names if n.startswith("_") and n != "__version__"]
            if hidden and target != m:
                found.append(f"{m} takes {', '.join(hidden)} from {target}")
        own = own_names(tree)
        for n in ast.walk(tree):  # obj._private of an object of another module: a leak that needs no import
            if (isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
                    and n.attr not in own and not (isinstance(n.value, ast.Name) and n.value.id in {"self", "cls"})):
                found.append(f"{m}:{n.lineno} reaches {ast.unparse(n)}")
    return found


def test_no_private_name_across_modules():
    assert private_uses() == []


def long_functions() -> list[str]:
    out = []
    for m, tree in modules().items():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([n.lineno] + [d.lineno for d in n.decorator_list])
                if n.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    out.append(f"{m}.{n.name}: {n.end_lineno - start + 1} lines")
    return out


def test_no_function_longer_than_a_screen():
    assert long_functions() == []


def test_import_qkrag_does_not_load_torch():
    code = "import sys, qkrag; assert qkrag.__version__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)},
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("module", ["qkrag.evaluate.metrics", "qkrag.ranking", "qkrag.data"])
def test_light_modules_do_not_load_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)},
                         check=True)
    assert out.stdout.strip() == "False"


def test_public_api_names_resolve():
    import qkrag

    missing = [name for name in qkrag.__all__ if not hasattr(qkrag, name)]
    assert missing == []
    assert qkrag.QKProjection.__module__ == "qkrag.projection.model"


TESTS = Path(__file__).resolve().parent


def missing_test_modules(src: Path = SRC / "qkrag", tests: Path = TESTS) -> list[str]:
    """Source modules without a test module at the mirrored path: qkrag/<package path>/<module>.py is tested in
    tests/<package path>/test_<module>.py (a top-level module in tests/test_<module>.py). Package __init__ files are
    no modules of their own, and the serve app's static assets are no Python."""
    out = []
    for path in sorted(src.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        relative = path.relative_to(src)
        mirrored = tests / relative.parent / f"test_{relative.name}"
        if not mirrored.is_file():
            out.append(f"{relative} has no {mirrored.relative_to(tests.parent)}")
    return out


def test_every_module_has_a_mirrored_test_module():
    assert missing_test_modules() == []


def test_mirror_check_can_fail(tmp_path):
    src, tests = tmp_path / "qkrag", tmp_path / "tests"
    for name in ("__init__.py", "top.py", "stage/__init__.py", "stage/done.py", "stage/missed.py", "lone.py"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("")
    for name in ("test_top.py", "stage/test_done.py", "test_missed.py", "stage/test_lone.py"):
        (tests / name).parent.mkdir(parents=True, exist_ok=True)
        (tests / name).write_text("")
    # a test in the wrong place (stage/missed.py tested at the top, lone.py inside stage) does not count
    assert missing_test_modules(src, tests) == ["lone.py has no tests/test_lone.py",
                                                "stage/missed.py has no tests/stage/test_missed.py"]


def test_commands_named_in_messages_exist():
    """An error that points to a command must point to one that exists."""
    import re

    from qkrag.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    named = set()
    for path in (SRC / "qkrag").rglob("*.py"):
        named |= set(re.findall(r"`qkrag ([a-z]+)", path.read_text()))
    assert named - commands == set()
