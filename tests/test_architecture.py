"""The shape of the package, read from its imports: no cycle, no stage importing a stage, a core without
click or rich (the CLI and the Python API's progress bars are the edges that draw), and no code outside models/ that
guesses a model's type."""

from __future__ import annotations

import ast
from pathlib import Path

import tron_cli

PACKAGE = Path(tron_cli.__file__).resolve().parent
STAGES = {"download", "preprocess", "train", "evaluate", "export", "recommend", "serve", "tune", "pareto"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """tron_cli modules that `path` imports anywhere in it (in functions too, not under TYPE_CHECKING)."""
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
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
                out.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def test_the_import_graph_has_no_cycle():
    assert _cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_stage_module_imports_another_stage():
    edges = graph()
    stages = {f"tron_cli.stages.{name}" for name in STAGES} & set(edges)
    assert {"tron_cli.stages.train", "tron_cli.stages.evaluate", "tron_cli.stages.recommend", "tron_cli.stages.export"} <= stages
    crossings = sorted((a, b) for a in stages for b in edges[a] if b in stages)
    assert crossings == []


DRAWS = {"tron_cli.api.progress"}  # rich's progress bars for a terminal or a notebook, shared by the Python API and the CLI


def test_the_core_imports_neither_click_nor_rich():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("tron_cli.cli"):
            continue
        allowed = ("click",) if name in DRAWS else ("click", "rich")
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [(name, module) for module in modules if module.split(".")[0] in allowed]
    assert offenders == []


def test_the_python_api_imports_no_command():
    """The CLI calls the Python API, never the other way round."""
    edges = graph()
    assert sorted((a, b) for a in edges if a.startswith("tron_cli.api") for b in edges[a] if b.startswith("tron_cli.cli")) == []


def test_no_model_type_sniffing_outside_models():
    """A model says what it is through its interface (models/base.py), never by hasattr, getattr or isinstance:
    what is not the network (a transition prior) is not read off it either, but held by `inference.scorer.Scorer`."""
    offenders = []
    for name, path in _modules().items():
        if name.startswith("tron_cli.models"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr", "isinstance") and node.args:
                subject = ast.unparse(node.args[0])
                checked = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
                if "model" in subject.lower() or any(cls in checked for cls in ("SASRec", "GRU4Rec")):
                    offenders.append((name, ast.unparse(node)))
            if (
                isinstance(node, ast.Compare)
                and "model" in ast.unparse(node.left)
                and any(isinstance(c, ast.Constant) and c.value in ("sasrec", "gru4rec") for c in node.comparators)
            ):
                offenders.append((name, ast.unparse(node)))
    assert offenders == []


SHAPE_ARGUMENTS = {"view", "permute", "reshape", "expand", "repeat", "save_for_backward", "apply"}  # torch's own positional conventions


def test_calls_with_more_than_four_arguments_pass_them_by_keyword():
    """A reader of `f(a, b, c, d, e)` has to open f to know what c, d and e are; `f(a, b, c=..., d=..., e=...)` says it."""
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and len(node.args) > 4 and not any(isinstance(a, ast.Starred) for a in node.args):
                called = ast.unparse(node.func)
                if called.rpartition(".")[2] not in SHAPE_ARGUMENTS:
                    offenders.append(f"{name}:{node.lineno}: {called}")
    assert offenders == []
