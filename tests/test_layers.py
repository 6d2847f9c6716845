"""The folder tree is the architecture: each sub-package imports only from itself and the layers below
it, and no two modules import each other, not even through imports inside functions."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "nndiff"

# lowest first: a package may import the packages listed before it, never one listed after it
LAYERS = [
    "errors",
    "io",
    "config",
    "runtime",
    "params",
    "tasks",
    "evaluation",
    "zoo",
    "generator",
    "analysis",
    "training",
    "report",
    "pipeline",
    "families",
    "cli",
    "__init__",
    "__main__",
]
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every nndiff module `path` imports, at the top or inside a function, resolved to its full name."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "nndiff"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "nndiff":
                continue
            for alias in node.names:  # `from nndiff.zoo import collect` names a module
                sub = f"{target}.{alias.name}"
                found.add(sub if (SRC.parent / sub.replace(".", "/")).with_suffix(".py").exists() else target)
    return found - {me}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1] if len(parts) > 1 else "__init__")


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in SRC.rglob("*.py")}


def test_every_module_sits_in_a_known_layer():
    for module in graph():
        layer(module)  # ValueError for a package missing from LAYERS


def test_no_package_imports_a_higher_one():
    upward = [
        f"{m} imports {t}" for m, targets in graph().items() for t in targets if t != "nndiff" and layer(t) > layer(m)
    ]
    assert not upward, upward


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt in edges and not state.get(nxt):
                visit(nxt, trail + [nxt])
        state[node] = 2

    for start in edges:
        if not state.get(start):
            visit(start, [start])
    assert not cycles, cycles


def test_modules_are_short_and_lines_narrow():
    for path in SRC.rglob("*.py"):
        lines = path.read_text().splitlines()
        assert len(lines) <= MAX_LINES, (path, len(lines))
        assert all(len(line) <= 120 for line in lines), (path, max(len(line) for line in lines))


# Called with positional values by code that is not ours: Python's warnings module, Lightning.
SIGNATURES_OF_OTHERS = {"_show_warning", "on_train_batch_end"}


def positional_beyond_four(source: str) -> list[str]:
    """Functions (self and cls not counted) taking more than four parameters by position."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in SIGNATURES_OF_OTHERS:
            names = [a.arg for a in node.args.posonlyargs + node.args.args]
            if len([n for n in names if n not in ("self", "cls")]) > 4:
                found.append(f"{node.name} (line {node.lineno})")
    return found


def test_parameters_after_the_fourth_are_keywords():
    """A call that passes five values by position is easy to get wrong silently (two settings of one
    type swapped); past the fourth, every parameter is named at the call."""
    found = [f"{p.relative_to(SRC)}: {f}" for p in SRC.rglob("*.py") for f in positional_beyond_four(p.read_text())]
    assert not found, found
    assert positional_beyond_four("def f(a, b, c, d, e): pass") == ["f (line 1)"]
    assert positional_beyond_four("class A:\n    def f(self, a, b, c, d, *, e): pass") == []


def test_the_check_finds_an_upward_import_and_a_cycle(tmp_path):
    """The walk itself: an import inside a function counts, and so does a relative one."""
    fake = tmp_path / "nndiff"
    (fake / "io").mkdir(parents=True)
    (fake / "cli").mkdir()
    (fake / "io" / "files.py").write_text("def f():\n    from ..cli import main\n")
    (fake / "cli" / "main.py").write_text("from nndiff.io.files import f\n")
    global SRC
    real, SRC = SRC, fake
    try:
        edges = graph()
        assert edges["nndiff.io.files"] == {"nndiff.cli.main"}
        assert layer("nndiff.cli.main") > layer("nndiff.io.files")
        assert edges["nndiff.cli.main"] == {"nndiff.io.files"}
        try:
            test_no_import_cycles()
        except AssertionError as cycle:
            assert "nndiff.io.files" in str(cycle)
        else:
            raise AssertionError("the cycle went unnoticed")
    finally:
        SRC = real
