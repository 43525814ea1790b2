"""SIGKILL `tron preprocess`, `tron train` and `tron export` mid-write: what is left is either complete or not
taken for complete by the next stage, and running the command again succeeds.

Each stage is killed twice: at its worst moment (a hook in the child kills it right after the marker file
was written into the temporary directory, before the rename that publishes it; for training, while it writes
the checkpoint of epoch 2), and after a seeded random delay. Hidden temporary directories may stay behind.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import invoke, tiny_train_args
from tron_cli.artifacts.documents import read_json
from tron_cli.artifacts.sessions import read_dataset
from tron_cli.errors import MissingInputError
from tron_cli.modelio import load_model
from tron_cli.workspace import home

TRAIN = [*tiny_train_args(), "--epochs", "3", "--overfit-batches", "4", "--valid-limit", "100"]

# torch's OpenMP threads spin: two processes with a thread per core each slow down by orders of magnitude
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Runs tron with the JSON writer's byte writer wrapped: once the NTH file called NAME has been written, the
# process SIGKILLs itself (the moment between a complete temporary directory and the rename that publishes it).
HOOK = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tron_cli.artifacts import documents
    name, nth = sys.argv[1], int(sys.argv[2])
    seen, real = [0], documents.write_bytes
    def write_bytes(path, data):
        real(path, data)
        if Path(path).name == name:
            seen[0] += 1
            if seen[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
    documents.write_bytes = write_bytes
    from tron_cli.cli import cli
    cli(sys.argv[3:], prog_name="tron")
    """
)

# (stage, moment): the hook's (file, occurrence), or None for a seeded random delay in seconds
MOMENTS = {
    ("preprocess", "hook"): ("dataset.json", 1),
    ("preprocess", "delay"): (0.6, 1.4),  # on an idle machine: importing takes about 0.5 s, the whole run 1.4 s
    ("train", "hook"): ("state.json", 2),
    ("train", "delay"): (3.0, 8.0),  # importing torch about 3.5 s, the run 10 s
    ("export", "hook"): ("config.json", 1),
    ("export", "delay"): (2.0, 4.0),  # importing torch about 3.5 s, the run 4 s
}


def _kill(tmp_path: Path, args: list[str], stage: str, moment: str) -> str:
    """Run `tron ARGS` and SIGKILL it at `moment`; returns what was done, for messages."""
    env = {**os.environ, "TRON_HOME": str(tmp_path), **ONE_THREAD}
    spec = MOMENTS[(stage, moment)]
    if moment == "hook":
        process = subprocess.run([sys.executable, "-c", HOOK, spec[0], str(spec[1]), *args], env=env, capture_output=True, text=True, timeout=300)
        assert process.returncode == -signal.SIGKILL, process.stderr
        return f"killed after writing {spec[0]} #{spec[1]}"
    delay = random.Random(f"{stage}-kill").uniform(*spec)
    process = subprocess.Popen([sys.executable, "-m", "tron_cli", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        process.wait(timeout=delay)
        return f"finished before the kill at {delay:.2f} s"
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return f"killed after {delay:.2f} s"


@pytest.fixture
def env_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TRON_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("moment", ["hook", "delay"])
def test_killed_preprocess(env_home, tiny_dataset, moment):
    raw = tiny_dataset.parent / "raw" / "synthetic"
    what = _kill(env_home, ["preprocess", "synthetic", "--input", str(raw)], "preprocess", moment)
    dataset = env_home / "data" / "synthetic"
    try:
        found = home.latest_dataset()
    except MissingInputError:
        assert not dataset.exists(), what  # built under a hidden name: absent until complete
    else:
        assert found == dataset and moment == "delay", what
        complete = read_dataset(found)  # then every file of it reads
        for split in complete.info["splits"]:
            complete.sessions(split)
        complete.items()
    if (env_home / "data").exists():
        assert not [p for p in (env_home / "data").iterdir() if not p.name.startswith(".") and p.name not in ("synthetic",)]
    result = invoke("preprocess", "synthetic", "--input", str(raw), "--force")
    assert result.exit_code == 0, result.stderr
    assert home.latest_dataset() == dataset


@pytest.mark.parametrize("moment", ["hook", "delay"])
def test_killed_train(env_home, tiny_dataset, moment):
    run = env_home / "runs" / "run"
    what = _kill(env_home, ["train", str(tiny_dataset), *TRAIN, "--out", str(run)], "train", moment)
    if (run / "summary.json").exists():
        assert moment == "delay", what
        assert home.latest_run() == run
        return
    with pytest.raises(MissingInputError):
        home.latest_run()  # an unfinished run is never the newest finished one
    if (run / "config.json").exists():
        refused = invoke("export", str(run))
        assert refused.exit_code == 1 and "not finished" in refused.stderr, what
        if (run / "model.safetensors").exists():
            load_model(run)  # whatever weights are there are whole
    if (run / "checkpoint" / "state.json").exists():
        state = read_json(run / "checkpoint" / "state.json", "checkpoint")
        if moment == "hook":
            assert state["epoch"] == 1, what  # epoch 2's checkpoint never replaced epoch 1's
        result = invoke("train", "--resume", str(run))
    else:
        assert moment == "delay", what
        result = invoke("train", str(tiny_dataset), *TRAIN, "--out", str(run), "--force")
    assert result.exit_code == 0, (what, result.stderr)
    assert home.latest_run() == run
    history = [line for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 3, what


@pytest.mark.parametrize("moment", ["hook", "delay"])
def test_killed_export(env_home, tiny_model, moment):
    run, _ = tiny_model
    bundle = env_home / "bundles" / "exported"
    what = _kill(env_home, ["export", str(run), "--out", str(bundle)], "export", moment)
    try:
        found = home.latest_model()
    except MissingInputError:
        assert not bundle.exists(), what
    else:
        assert found == bundle and moment == "delay", what
        load_model(bundle)
    result = invoke("export", str(run), "--out", str(bundle), "--force")
    assert result.exit_code == 0, (what, result.stderr)
    assert home.latest_model() == bundle
    served = invoke("recommend", str(bundle), "--device", "cpu", "-k", "3", input='{"session": 1, "items": [1, 2]}\n')
    assert served.exit_code == 0 and served.stdout.count("\n") == 1, served.stderr


# --------------------------------------------------------------------------------------------- outputs that cannot be written

# Each command writing where it cannot: (id, where the refusal is injected, the command). The refusal is injected
# (tests/unwritable.py): the tests run as root, where chmod stops no write, and without a mount.
UNWRITABLE = [
    ("preprocess", "data", lambda t, data, run, bundle: ["preprocess", "synthetic", "--input", str(data.parent / "raw" / "synthetic")]),
    ("train", "runs", lambda t, data, run, bundle: ["train", str(data), *TRAIN, "--epochs", "1", "--overfit-batches", "1", "--out", str(t / "runs" / "new")]),
    ("export", "bundles", lambda t, data, run, bundle: ["export", str(run), "--out", str(t / "bundles" / "new")]),
    ("recommend-o", "out", lambda t, data, run, bundle: ["recommend", str(bundle), "--device", "cpu", "-o", str(t / "out" / "recs.jsonl")]),
    ("plot-o", "out", lambda t, data, run, bundle: ["plot", str(run), "-o", str(t / "out" / "curves.png")]),
]


@pytest.mark.parametrize("fault", ["read-only", "no-permission", "full-disk"])
@pytest.mark.parametrize("case", UNWRITABLE, ids=[case[0] for case in UNWRITABLE])
def test_an_output_that_cannot_be_written_is_one_line_and_leaves_nothing(env_home, tiny_dataset, tiny_model, monkeypatch, case, fault):
    from tests.unwritable import full_disk, read_only

    _, where, command = case
    run, bundle = tiny_model
    (env_home / where).mkdir(exist_ok=True)
    args = command(env_home, tiny_dataset, run, bundle)
    if fault == "full-disk":
        full_disk(monkeypatch, env_home / where)
    else:
        read_only(monkeypatch, env_home / where, errno.EROFS if fault == "read-only" else errno.EACCES)
    result = invoke(*args, input='{"session": 1, "items": [1, 2]}\n')
    monkeypatch.undo()
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write"), result.stderr
    assert str(env_home / where) in lines[0]
    assert not [p for p in (env_home / where).rglob("*") if p.name in ("dataset.json", "summary.json", "recs.jsonl", "curves.png", "model.safetensors")]


@pytest.mark.parametrize("fault", ["read-only", "full-disk"])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_evaluate_on_a_run_it_cannot_write_into_still_prints_its_metrics(env_home, tiny_model, monkeypatch, fault, as_json):
    from tests.unwritable import full_disk, read_only

    run = env_home / "run"
    shutil.copytree(tiny_model[0], run)
    (read_only if fault == "read-only" else full_disk)(monkeypatch, run)
    result = invoke("evaluate", str(run), "--device", "cpu", "-k", "20", *(["--json"] if as_json else []))
    monkeypatch.undo()
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "metrics.json" in result.stderr and "not saved" in result.stderr, result.stderr
    if as_json:
        assert 0 <= json.loads(result.stdout)["recall@20"] <= 1
    else:  # the table goes where every human-readable message goes: stderr
        assert "Recall" in result.stderr and "@20" in result.stderr
    assert not (run / "metrics.json").exists()


def test_weights_are_written_with_the_permissions_of_every_other_artifact(env_home, tiny_model):
    run, bundle = tiny_model
    expected = 0o666 & ~_umask()
    for path in (run / "model.safetensors", run / "checkpoint" / "weights.safetensors", run / "config.json", bundle / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
