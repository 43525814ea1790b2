"""Nothing in tron unpickles, and every safetensors file is checked before a tensor of it is used.

The source scan reads `tron_cli/` as code (comments and docstrings that say "never pickle" are fine): no
pickle-based module is imported or named, `torch.load` only with `weights_only=True`, `np.load` never with
`allow_pickle`. Crafted files in place of a run's or a bundle's `model.safetensors` (and of a checkpoint's
tensors) are refused with one line naming the file.
"""

from __future__ import annotations

import ast
import io
import json
import shutil
import struct
import tokenize
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import invoke

SOURCE = Path(__file__).resolve().parents[1] / "tron_cli"
PICKLING = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unpickling(source: str, name: str = "<source>") -> list[str]:
    """Every way `source` could unpickle: imports, names, and calls of loaders without their safe arguments."""
    problems = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and token.string in PICKLING:
            problems.append(f"{name}:{token.start[0]}: {token.string}")
    for node in ast.walk(ast.parse(source)):
        line = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            problems += [f"{line}: import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLING]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {a.name for a in node.names}
            if module.split(".")[0] in PICKLING or (module == "marshal" and names & {"load", "loads"}):
                problems.append(f"{line}: from {module} import")
            if (module == "torch" and "load" in names) or (module == "numpy" and "load" in names) or (module == "pandas" and "read_pickle" in names):
                problems.append(f"{line}: from {module} import load")
        elif isinstance(node, ast.Attribute) and node.attr in ("read_pickle", "to_pickle"):
            problems.append(f"{line}: .{node.attr}")
        elif isinstance(node, ast.Call):
            function = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if function in ("marshal.load", "marshal.loads"):
                problems.append(f"{line}: {function}")
            elif function.endswith("torch.load") or function == "torch.serialization.load":
                if not _true(keywords.get("weights_only")):
                    problems.append(f"{line}: {function} without weights_only=True")
            elif function in ("np.load", "numpy.load") and "allow_pickle" in keywords:
                if not (isinstance(keywords["allow_pickle"], ast.Constant) and keywords["allow_pickle"].value is False):
                    problems.append(f"{line}: {function} with allow_pickle")
            elif function in ("importlib.import_module", "__import__") and node.args:
                target = node.args[0]
                if isinstance(target, ast.Constant) and str(target.value).split(".")[0] in PICKLING | {"marshal"}:
                    problems.append(f"{line}: {function}({target.value!r})")
    return problems


def test_tron_never_unpickles():
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 20
    problems = [problem for path in files for problem in unpickling(path.read_text(), str(path.relative_to(SOURCE.parent)))]
    assert problems == []


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "import dill as d",
        "from joblib import load",
        "import shelve",
        "from _pickle import loads",
        "import marshal\nmarshal.loads(b'')",
        "import torch\ntorch.load('x.pt')",
        "import torch\ntorch.load('x.pt', weights_only=False)",
        "from torch import load",
        "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
        "import numpy\nnumpy.load('x.npy', allow_pickle=flag)",
        "import importlib\nimportlib.import_module('pickle')",
        "__import__('cPickle')",
        "import pandas as pd\npd.read_pickle('x')",
        "x = pickle",
    ],
)
def test_the_scan_catches_each_way(source):
    assert unpickling(source)


def test_the_scan_passes_safe_code():
    safe = '''
"""Weights in safetensors, never pickle (nor dill or joblib)."""
import numpy as np
import torch
# torch.load(path) would unpickle
state = torch.load("x.pt", weights_only=True)
array = np.load("x.npy")
other = np.load("x.npy", allow_pickle=False)
message = "pickle"
'''
    assert unpickling(safe) == []


# --------------------------------------------------------------------------------------------- crafted files


def _good(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def wrong_shape(path: Path) -> None:
    tensors = _good(path)
    name = sorted(tensors)[0]
    tensors[name] = torch.zeros(*[s + 1 for s in tensors[name].shape])
    save_file(tensors, str(path))


def wrong_dtype(path: Path) -> None:
    save_file({name: t.double() for name, t in _good(path).items()}, str(path))


def missing_tensor(path: Path) -> None:
    tensors = _good(path)
    tensors.pop(sorted(tensors)[-1])
    save_file(tensors, str(path))


def extra_tensor(path: Path) -> None:
    save_file({**_good(path), "payload": torch.zeros(4)}, str(path))


def header_beyond_file(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 10_000) + b'{"a": {}}')


def header_over_100_mib(path: Path) -> None:
    """A file larger than its (huge) header claims: the size limit, not the file's end, refuses it. Sparse."""
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", 100 * 1024 * 1024 + 1) + b"{")
        handle.truncate(101 * 1024 * 1024)


def header_not_json(path: Path) -> None:
    body = b"not json at all!"
    path.write_bytes(struct.pack("<Q", len(body)) + body + b"\0" * 64)


def offsets_beyond_data(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


def truncated_data(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 64])


def not_safetensors(path: Path) -> None:
    path.write_text("weights, trust me\n" * 20)


def empty(path: Path) -> None:
    path.write_bytes(b"")


def a_pickle(path: Path) -> None:
    """What torch.save writes: a zip of pickles, the format tron never reads."""
    buffer = io.BytesIO()
    torch.save(_good(path), buffer)
    path.write_bytes(buffer.getvalue())


CRAFTED = [
    wrong_shape,
    wrong_dtype,
    missing_tensor,
    extra_tensor,
    header_beyond_file,
    header_over_100_mib,
    header_not_json,
    offsets_beyond_data,
    truncated_data,
    not_safetensors,
    empty,
    a_pickle,
]
COMMANDS = {
    "evaluate-run": ("run", lambda path: ["evaluate", str(path), "--device", "cpu", "--json"]),
    "export-run": ("run", lambda path: ["export", str(path), "--out", "bundles/new", "--json"]),
    "recommend-run": ("run", lambda path: ["recommend", str(path), "--device", "cpu"]),
    "evaluate-bundle": ("bundle", lambda path: ["evaluate", str(path), "--data", "DATA", "--device", "cpu", "--json"]),
    "recommend-bundle": ("bundle", lambda path: ["recommend", str(path), "--device", "cpu"]),
}


def _refused(result, file: Path) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(file) in lines[0], result.stderr
    return lines[0]


@pytest.mark.parametrize("craft", CRAFTED, ids=[c.__name__ for c in CRAFTED])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_crafted_weights_are_refused(craft, command, tiny_model, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TRON_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    kind, args = COMMANDS[command]
    model = shutil.copytree(tiny_model[0] if kind == "run" else tiny_model[1], tmp_path / kind)
    (model / "metrics.json").unlink(missing_ok=True)  # so that the check below sees only what this command wrote
    craft(model / "model.safetensors")
    argv = [str(tiny_dataset) if a == "DATA" else a for a in args(model)]
    _refused(invoke(*argv, input='{"session": 1, "items": [1]}\n'), model / "model.safetensors")
    assert not (tmp_path / "bundles").exists() and not (model / "metrics.json").exists()


@pytest.mark.parametrize(
    "file, craft",
    [
        ("weights.safetensors", wrong_shape),
        ("weights.safetensors", truncated_data),
        ("optimizer.safetensors", header_beyond_file),
        ("generators.safetensors", a_pickle),
    ],
)
def test_crafted_checkpoint_is_refused_and_the_run_stays_finished(file, craft, tiny_model, tmp_path):
    run = shutil.copytree(tiny_model[0], tmp_path / "run")
    craft(run / "checkpoint" / file)
    config = (run / "config.json").read_bytes()
    _refused(invoke("train", "--resume", str(run), "--epochs", "2"), run / "checkpoint" / file)
    assert (run / "summary.json").exists() and (run / "config.json").read_bytes() == config
