"""The committed completions and man pages match the commands, render, and complete through click's protocol."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tron_cli.cli import COMMANDS
from tron_cli.cli import _generate as generate

ROOT = generate.ROOT
PAGES = sorted(path.name for path in (ROOT / "man").glob("*.1"))


def _env(**extra: str) -> dict[str, str]:
    """The test's environment, with the interpreter's bin directory (where `tron` is installed) first on PATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("_TRON_COMPLETE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------- generated files


def test_committed_files_are_up_to_date():
    stale = generate.stale(generate.render())
    assert stale == [], f"stale: {stale}; run: python -m tron_cli.cli._generate"


def test_every_command_has_a_page():
    assert {"tron.1", *(f"tron-{name}.1" for name in COMMANDS)} <= set(PAGES)


def test_check_mode_from_another_directory_writes_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tron_cli.cli._generate", "--check"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_check_names_stale_and_obsolete_files_and_write_fixes_them(tmp_path):
    files = generate.render()
    generate.write(files, tmp_path)
    assert generate.stale(files, tmp_path) == []
    (tmp_path / "man" / "tron-plot.1").write_text("old\n")
    (tmp_path / "man" / "tron-gone.1").write_text("a command that no longer exists\n")
    (tmp_path / "completions" / "tron.zsh").unlink()
    expected = ["completions/tron.zsh", "man/tron-gone.1", "man/tron-plot.1"]
    assert generate.stale(files, tmp_path) == expected
    assert generate.write(files, tmp_path) == expected
    assert generate.stale(files, tmp_path) == []
    assert not (tmp_path / "man" / "tron-gone.1").exists()


def test_roff_escapes():
    lines = generate._help_paragraphs("First line.\n.starts with a dot\n'quote\n\n\b\n  C:\\path --flag\n  x-y\n")
    assert lines == [".PP", "First line.", "\\&.starts with a dot", "\\&'quote", ".PP", ".nf", "C:\\epath \\-\\-flag", "x\\-y", ".fi"]
    assert generate._escape("é") == "\\[u00E9]"


# --------------------------------------------------------------------------------------------- man pages


def _render(page: Path) -> str | None:
    """The page as text through man, else groff; None when neither is installed."""
    env = _env(MANPAGER="cat", PAGER="cat", MANWIDTH="200", LC_ALL="C")
    if shutil.which("man"):
        command = ["man", "-l", str(page)]
    elif shutil.which("groff"):
        command = ["groff", "-man", "-Tascii", "-P-cbou", str(page)]
    else:
        return None
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("page", PAGES)
def test_man_page(page):
    path = ROOT / "man" / page
    source = path.read_text()
    command_path = page.removesuffix(".1").replace("-", " ")
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "EXIT STATUS", "SEE ALSO"):
        assert f"\n.SH {section}\n" in source, section
    assert re.search(r"^\.TH TRON(\\-[A-Z]+)* 1 ", source, re.MULTILINE)
    # any other line starting with . or ' would be taken as a request: help text must have been escaped
    requests = {line.split()[0] for line in source.splitlines() if line.startswith((".", "'"))}
    assert requests <= {'.\\"', ".TH", ".nh", ".ad", ".SH", ".PP", ".nf", ".fi", ".TP", ".B", ".BR"}
    rendered = _render(path)
    if rendered is None:
        return  # no man or groff here: the structure above is what can be checked
    text = " ".join(rendered.split())
    name = page.removesuffix(".1")
    assert f"NAME {name} - " in text
    assert f"SYNOPSIS {command_path}" in text
    assert "EXIT STATUS" in text


# --------------------------------------------------------------------------------------------- completion


def _complete(words: str) -> list[str]:
    """What `tron` offers through click's bash protocol for the command line `words` (the last word is completed)."""
    cwords = words.split(" ")
    env = _env(_TRON_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(len(cwords) - 1))
    result = subprocess.run([sys.executable, "-m", "tron_cli"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [line.partition(",")[2] for line in result.stdout.splitlines() if line.startswith("plain,")]


@pytest.mark.parametrize("prefix", ["pre", "do", "tr", "pl"])
def test_commands_complete(prefix):
    assert sorted(_complete(f"tron {prefix}")) == sorted(name for name in COMMANDS if name.startswith(prefix))


def test_dataset_names_complete():
    from tron_cli.datasets import DATASETS

    offered = _complete("tron download ")
    assert {"otto", "synthetic"} <= set(offered)
    assert set(offered) == set(DATASETS.names())


def test_committed_bash_script_completes():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    assert shutil.which("tron", path=str(Path(sys.executable).parent)), "tron is not installed beside the interpreter"
    script = (
        f"source {ROOT / 'completions' / 'tron.bash'}\n"
        "COMP_WORDS=(tron pre); COMP_CWORD=1\n"
        "_tron_completion tron pre tron\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run([bash, "--norc", "--noprofile", "-c", script], env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "preprocess" in result.stdout.split()


# --------------------------------------------------------------------------------------------- fast start


HEAVY = ("torch", "polars", "matplotlib")


@pytest.mark.parametrize(
    "setup",
    [
        "cli.main(['--help'], prog_name='tron')",
        "os.environ.update(_TRON_COMPLETE='bash_complete', COMP_WORDS='tron pre', COMP_CWORD='1'); cli.main([], prog_name='tron')",
    ],
    ids=["help", "complete"],
)
def test_no_heavy_import(setup):
    code = (
        "import os, sys\n"
        "from tron_cli.cli import cli\n"
        f"try:\n    {setup}\nexcept SystemExit:\n    pass\n"
        f"loaded = [name for name in {HEAVY!r} if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the command printed nothing"
