"""The Python API (`import tron_cli`): the pipeline from a pandas DataFrame equals the CLI's, the keywords are the
flags, tables are read as files are, answers do not depend on the batch size, Ctrl-C leaves a resumable run, the
types hold under `mypy --strict`, `import tron_cli` stays light, and docs/python.md runs as written."""

from __future__ import annotations

import doctest
import inspect
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

import tron_cli
from tests.helpers import invoke
from tron_cli.api.pipeline import names
from tron_cli.errors import InputFormatError, Interrupted, OptionError

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


@pytest.fixture(scope="module")
def events(tiny_dataset) -> pd.DataFrame:
    """The clicks of the tiny synthetic download as a pandas DataFrame of events, one row each."""
    lines = [json.loads(line) for line in (tiny_dataset.parent / "raw" / "synthetic" / "train.jsonl").read_text().splitlines()]
    rows = [(line["session"], event["aid"], event["ts"]) for line in lines for event in line["events"] if event["type"] == "clicks"]
    return pd.DataFrame(rows, columns=["session_id", "item_id", "timestamp"])


def _sessions(catalogue: np.ndarray, n: int, seed: int) -> pd.DataFrame:
    """`n` sessions of 1-10 raw ids drawn from `catalogue`, about 2% of them ids no catalogue has."""
    generator = np.random.default_rng(seed)
    lengths = generator.integers(1, 11, size=n)
    ids = generator.choice(catalogue, size=int(lengths.sum()))
    ids[generator.random(len(ids)) < 0.02] = -7
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return pd.DataFrame({"session": np.arange(n) + 1000, "items": [ids[a:b].tolist() for a, b in itertools.pairwise(bounds)]})


# --------------------------------------------------------------------------------------------- acceptance


def test_the_pipeline_from_a_pandas_dataframe_equals_the_cli(events, tmp_path, monkeypatch):
    """Preprocess a DataFrame of events, train the small preset for one epoch, evaluate, export, load and recommend for
    10,000 sessions in Python; the CLI on the same events (a Parquet file) with the same options and seed gives the
    same dataset, metrics and top-k lists."""
    training = {"preset": "small", "epochs": 1, "device": "cpu", "seed": 7}
    monkeypatch.setenv("TRON_HOME", str(tmp_path / "python"))
    dataset = tron_cli.preprocess(events, name="events")
    run = tron_cli.train(dataset, **training)
    metrics = tron_cli.evaluate(run)
    bundle = tron_cli.export(run)
    catalogue = pq.read_table(bundle.path / "items.parquet").column("id").to_numpy()
    sessions = _sessions(catalogue, 10_000, seed=11)
    with pytest.warns(tron_cli.errors.TronWarning, match="unknown item ids? skipped"):
        answers = tron_cli.load(bundle).recommend(sessions, k=20)

    monkeypatch.setenv("TRON_HOME", str(tmp_path / "cli"))
    events.to_parquet(tmp_path / "events.parquet")
    result = invoke("preprocess", "--train", str(tmp_path / "events.parquet"), "--name", "events", "--json")
    assert result.exit_code == 0, result.stderr
    cli_dataset = Path(json.loads(result.stdout)["dataset"])
    flags = [arg for name, value in training.items() for arg in (f"--{name}", str(value))]
    result = invoke("train", str(cli_dataset), *flags, "--json")
    assert result.exit_code == 0, result.stderr
    cli_run = json.loads(result.stdout)["run"]
    result = invoke("evaluate", cli_run, "--json")
    assert result.exit_code == 0, result.stderr
    cli_metrics = json.loads(result.stdout)
    result = invoke("export", cli_run, "--json")
    assert result.exit_code == 0, result.stderr
    sessions.to_parquet(tmp_path / "sessions.parquet")
    result = invoke("recommend", json.loads(result.stdout)["bundle"], "-i", str(tmp_path / "sessions.parquet"), "-o", str(tmp_path / "top.parquet"), "-k", "20")
    assert result.exit_code == 0, result.stderr
    cli_answers = pl.read_parquet(tmp_path / "top.parquet")

    for split in ("train", "valid", "test", "items"):
        assert pq.read_table(dataset.path / f"{split}.parquet").equals(pq.read_table(cli_dataset / f"{split}.parquet")), split
    assert len(metrics) >= 9 and dict(metrics) == {name: cli_metrics[name] for name in metrics}
    assert metrics.n_targets == cli_metrics["n_targets"]
    assert answers.height == 10_000 and answers.columns == ["session", "items", "scores", "unknown"]
    assert answers.drop("unknown").equals(cli_answers)
    assert answers["unknown"].sum() == sum(item == -7 for items in sessions["items"] for item in items) > 0


# --------------------------------------------------------------------------------------------- the keywords are the flags


def _click_params(command: str) -> dict[str, Any]:
    import click

    from tron_cli.cli import cli

    ctx = click.Context(cli, info_name="tron")
    found = cli.get_command(ctx, command)
    assert found is not None
    sub = click.Context(found, info_name=command, parent=ctx)
    return {param.name: param for param in found.get_params(sub) if param.name not in ("help", "verbose", "quiet", "no_progress", "color", "as_json")}


def _default(value: Any) -> Any:
    """A default as a comparable value: comma-separated names and sequences as tuples."""
    if isinstance(value, str) and "," in value:
        return names(value)
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _generator_parameters() -> dict[str, int]:
    """Every generated dataset's parameters (`tron download synthetic --days 3`): the download's **parameters."""
    from tron_cli.datasets import DATASETS

    return {parameter.name: parameter.default for name in DATASETS.names() for parameter in DATASETS.get(name).parameters}


# command -> (the functions its flags go to, CLI parameter -> keyword where the names differ, CLI-only parameters)
COMMANDS: dict[str, tuple[tuple[Any, ...], dict[str, str], set[str]]] = {
    "download": ((tron_cli.download,), {}, set(_generator_parameters())),  # a generated dataset's own: **parameters
    "preprocess": ((tron_cli.preprocess,), {"name": "download", "input_path": "input", "fmt": "format", "dataset_name": "name"}, set()),
    "evaluate": ((tron_cli.evaluate,), {"cutoffs": "cutoff", "baseline_options": "baseline_option", "index_params": "index_param"}, set()),
    "export": ((tron_cli.export,), {"fmt": "format", "index_kind": "index", "index_params": "index_param"}, set()),
    "recommend": (
        (tron_cli.load, tron_cli.Recommender.recommend_file),
        {"model": "path", "input_path": "input", "output_path": "output", "output_format": "format", "index_params": "index_param"},
        set(),
    ),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_is_a_keyword_with_the_same_default(command):
    functions, renamed, cli_only = COMMANDS[command]
    keywords = {name: parameter for function in functions for name, parameter in inspect.signature(function).parameters.items() if name != "self"}
    for name, param in _click_params(command).items():
        if name in cli_only or name.startswith("_"):  # click's own hidden parameters
            continue
        keyword = renamed.get(name, name)
        assert keyword in keywords, (command, name)
        default = keywords[keyword].default
        unset = param.default is None or callable(param.default) or repr(param.default).startswith("Sentinel")  # click 8.2+: no default
        if default is not inspect.Parameter.empty and not unset:
            assert _default(default) == _default(param.default), (command, name, default, param.default)


def test_every_train_flag_is_a_train_keyword_from_the_same_declarations():
    from tron_cli.training.config import all_declarations

    own = {"preset", "config_file", "out", "resume", "init_from", "force", "devices"}  # the run's, not the training's: train's own keywords
    flags = {name for name in _click_params("train") if not name.startswith("_")} - {"data", "data_option"}
    assert flags - own == set(tron_cli.TrainOptions.__annotations__) == set(all_declarations())
    assert {"config" if name == "config_file" else name for name in own} < set(inspect.signature(tron_cli.train).parameters)


def test_options_that_contradict_each_other_are_refused_before_anything_runs(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TRON_HOME", str(tmp_path))
    with pytest.raises(OptionError, match=r"--bpr-penalty applies to --loss bpr-max, not ssm"):
        tron_cli.train(tiny_dataset, bpr_penalty=0.5)
    with pytest.raises(OptionError, match=r"unknown training option 'hiden_size'"):
        tron_cli.train(tiny_dataset, hiden_size=64)
    with pytest.raises(OptionError, match=r"--preset small configures sasrec, not gru4rec"):
        tron_cli.train(tiny_dataset, preset="small", model="gru4rec")
    with pytest.raises(OptionError, match=r"--resume continues a run"):
        tron_cli.train(tiny_dataset, resume=tmp_path / "runs" / "x")
    assert OptionError.exit_code == 2 and not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------- tables


def test_a_table_is_read_as_a_file_is_and_refused_with_the_same_message(events, tmp_path, monkeypatch):
    monkeypatch.setenv("TRON_HOME", str(tmp_path))
    unclear = events.rename(columns={"timestamp": "when"})
    unclear.to_csv(tmp_path / "log.csv", index=False)
    result = invoke("preprocess", "--train", str(tmp_path / "log.csv"))
    assert result.exit_code == 1
    with pytest.raises(InputFormatError) as refused:
        tron_cli.preprocess(unclear)
    assert f"Error: {refused.value.line()}" == result.stderr.strip().replace(str(tmp_path / "log.csv"), "train table")
    assert "which column is the time" in refused.value.line() and not (tmp_path / "data").exists()
    for table in (pl.from_pandas(events), pl.from_pandas(events).to_arrow()):  # polars and pyarrow as pandas
        dataset = tron_cli.preprocess(table, time_unit="ms", force=True)
        assert dataset.name == "table" and dataset.n_items > 0
        assert json.loads((dataset.path / "dataset.json").read_text())["source"]["format"] == "table"


def _same_answers(one: pl.DataFrame, other: pl.DataFrame) -> None:
    """The same sessions, items and unknown counts; scores equal to float32 rounding (batches of other shapes sum in
    another order)."""
    assert one.drop("scores").equals(other.drop("scores"))
    for mine, theirs in zip(one["scores"].to_list(), other["scores"].to_list()):
        assert (mine is None and theirs is None) or np.allclose(mine, theirs, rtol=0, atol=1e-5)


def test_recommend_answers_do_not_depend_on_the_batch_size_and_lists_match_tables(tiny_model):
    _, bundle = tiny_model
    model = tron_cli.load(bundle, device="cpu")
    catalogue = pq.read_table(bundle / "items.parquet").column("id").to_numpy()
    sessions = _sessions(catalogue, 300, seed=5)
    with pytest.warns(tron_cli.errors.TronWarning):
        whole = model.recommend(sessions, k=7, exclude_seen=True)
        _same_answers(whole, model.recommend(sessions, k=7, exclude_seen=True, batch_size=16))
        lists = model.recommend((items for items in sessions["items"]), k=7, exclude_seen=True, batch_size=7)  # any iterable, streamed
    as_table = pl.DataFrame(
        {"session": whole["session"], "items": [a.items for a in lists], "scores": [a.scores for a in lists], "unknown": [a.unknown for a in lists]},
        schema=whole.schema,
    )
    _same_answers(whole, as_table)
    lengths = np.array([len(items) for items in sessions["items"]])
    no_known_item = lengths == whole["unknown"].to_numpy()  # these get the popular items, without scores
    assert whole.height == 300 and no_known_item.any() and (whole["scores"].is_null().to_numpy() == no_known_item).all()
    allowed = catalogue[:5].tolist()
    assert all(set(answer.items) <= set(allowed) for answer in model.recommend([[int(catalogue[0])]], k=3, allow=allowed))


# --------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_in_python_leaves_a_run_that_train_resumes(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    options = {"hidden_size": 16, "uniform_negatives": 64, "batch_size": 4, "batch_negatives": 3, "topk": 16, "max_length": 10}
    # 1,000 batches: on a loaded machine 200 could all train between config.json appearing and the interrupt
    script = (
        "import sys, tron_cli\n"
        "try:\n"
        f"    tron_cli.train({str(tiny_dataset)!r}, out={str(run)!r}, device='cpu', epochs=1, overfit_batches=1000.0, seed=5, **{options!r})\n"
        "except tron_cli.errors.Interrupted as error:\n"
        "    print(error.line())\n"
        "    sys.exit(3)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], env=_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "config.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stderr
    assert stdout.startswith("interrupted in epoch 1 after ") and "checkpoint saved" in stdout
    assert tron_cli.Run(run).status == "unfinished"
    resumed = tron_cli.train(resume=run)
    assert resumed.status == "complete" and resumed.epochs == 1 and resumed.path == run.resolve()
    assert issubclass(Interrupted, tron_cli.errors.TronError) and Interrupted.exit_code == 130


# --------------------------------------------------------------------------------------------- types, imports, docs


USER_SCRIPT = '''
"""A user's script: the pipeline from Python, typed."""

from __future__ import annotations

from pathlib import Path

import polars as pl

import tron_cli
from tron_cli.errors import TronError


def pipeline(home: Path) -> tuple[float, pl.DataFrame, list[tron_cli.Recommendation]]:
    raw: tron_cli.Download = tron_cli.download("synthetic", sessions=500, out=home / "raw")
    dataset: tron_cli.Dataset = tron_cli.preprocess(raw, test_days=1.0, event_types=["clicks"])
    run: tron_cli.Run = tron_cli.train(dataset, preset="small", epochs=1, hidden_size=32, device="cpu", track=())
    metrics: tron_cli.Metrics = tron_cli.evaluate(run, cutoff=[10, 20], bootstrap=10)
    low, high = metrics.interval("recall@20")
    bundle: tron_cli.Bundle = tron_cli.export(run, out=home / "bundle")
    model: tron_cli.Recommender = tron_cli.load(bundle, device="cpu")
    frame: pl.DataFrame = model.recommend(pl.DataFrame({"session": [1], "items": [[1, 2]]}), k=5)
    lists: list[tron_cli.Recommendation] = model.recommend([[1, 2], ["a"]], k=5, exclude_seen=True)
    for answer in lists:
        if answer.scores is not None:
            print(answer.items[0], answer.scores[0] + 1.0, answer.unknown)
    listed: list[tron_cli.Artifact] = tron_cli.ls("runs")
    details: dict[str, object] = tron_cli.info(run)
    print(low < high, listed, details, run.summary, dataset.n_items + 1, bundle.n_items)
    return metrics["recall@20"], frame, lists


try:
    pipeline(Path("home"))
except TronError as error:
    print(error.line())
'''

# what a mistyped call looks like to mypy: each line must be an error
MISTYPED = """
import tron_cli

dataset = tron_cli.Dataset("synthetic")
metrics: int = tron_cli.evaluate(dataset)
tron_cli.train(dataset, hidden_size="64")
tron_cli.train(dataset, hiden_size=64)
tron_cli.train(dataset, optimizer="sgd")
"""

# a user's mypy: strict, errors of the installed packages not reported (as for any installed typed package); torch
# and the other heavy dependencies skipped, which the API's signatures do not mention
MYPY_CONFIG = """
[mypy]
strict = True
follow_imports = silent
[mypy-torch.*,numpy.*,safetensors.*,onnx.*,onnxruntime.*,onnxscript.*,faiss.*,fastapi.*,mlflow.*,optuna.*,matplotlib.*,tensorboard.*]
follow_imports = skip
"""


def test_mypy_strict_passes_on_a_user_script_and_catches_a_mistyped_one(tmp_path):
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    (tmp_path / "mistyped.py").write_text(MISTYPED)
    (tmp_path / "mypy.ini").write_text(MYPY_CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", str(tmp_path / "cache"), "user.py", "mistyped.py"],
        cwd=tmp_path,
        env=_env(MYPYPATH=str(ROOT)),
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert not [line for line in errors if line.startswith("user.py")], result.stdout
    assert sorted({int(line.split(":")[1]) for line in errors}) == [5, 6, 7, 8], result.stdout
    assert (ROOT / "tron_cli" / "py.typed").is_file()


def test_import_tron_cli_is_light_and_every_public_name_resolves():
    code = (
        "import sys, tron_cli\n"
        "missing = [name for name in tron_cli.__all__ if not hasattr(tron_cli, name)]\n"
        "heavy = [name for name in ('torch', 'polars', 'pyarrow', 'numpy', 'pandas', 'rich', 'click') if name in sys.modules]\n"
        "print(missing, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"


def test_progress_bars_draw_in_a_terminal_and_in_jupyter_and_stay_away_elsewhere(monkeypatch):
    import io
    import types

    from rich.console import Console

    from tron_cli.api.progress import NotebookReporter, RichTask

    for console, draws in ((Console(file=io.StringIO(), force_terminal=True), True), (Console(file=io.StringIO(), force_terminal=False), False)):
        with NotebookReporter(console).task("epoch 1/1", total=10) as task:
            task.update(advance=5, loss=1.5)
            assert isinstance(task, RichTask) is draws
    notebook = NotebookReporter(Console(file=io.StringIO(), force_jupyter=True))
    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))
    assert notebook.shows_progress  # rich draws a notebook's bars in an ipywidgets Output
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed: no bar, rather than rich's warning at every refresh
    assert not notebook.shows_progress and not isinstance(notebook.task("epoch 1/1", total=10), RichTask)
    with pytest.warns(tron_cli.errors.TronWarning, match="said once") as caught:
        NotebookReporter().warn("said once")
    assert caught[0].filename == __file__  # named at the caller's line, not inside tron_cli


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


def test_docs_python_md_runs_as_written_and_the_readme_shows_its_three_lines(tmp_path, monkeypatch):
    """Each ```python block of docs/python.md in order, in one namespace, in an empty $TRON_HOME: a block of `>>>` lines
    as a doctest (outputs compared, `...` for what changes with the machine), any other block executed."""
    monkeypatch.setenv("TRON_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks(ROOT / "docs" / "python.md")
    assert blocks[0] in _python_blocks(ROOT / "README.md")  # the README's three lines are the page's first block
    namespace: dict[str, Any] = {}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for number, block in enumerate(blocks):
        if ">>>" not in block:
            exec(compile(block, f"docs/python.md block {number}", "exec"), namespace)
            continue
        test = doctest.DocTestParser().get_doctest(block, namespace, f"docs/python.md block {number}", str(ROOT / "docs" / "python.md"), 0)
        runner.run(test, clear_globs=False)
        namespace = test.globs
    failed, attempted = runner.summarize(verbose=False)
    assert attempted > 20 and failed == 0
