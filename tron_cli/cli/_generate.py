"""Regenerate the committed shell completions and man pages from the click commands.

    python -m tron_cli.cli._generate            # write completions/tron.{bash,zsh,fish} and man/tron*.1
    python -m tron_cli.cli._generate --check    # write nothing; name stale files and exit 1 if there are any

The click tree is the single source: every command in `COMMANDS` gets a page, and files are written under the
repository root found from the package, whatever the current directory. The output is deterministic (no dates),
so `--check` can run in the tests.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import textwrap
from pathlib import Path

import click

import tron_cli
from tron_cli.cli import cli
from tron_cli.cli.completion import SHELLS, completion_script
from tron_cli.version import __version__

ROOT = Path(tron_cli.__file__).resolve().parent.parent
COMPLETIONS = "completions"
MAN = "man"

EXIT_STATUS = (
    ("0", "Success."),
    ("1", "Runtime failure: bad or missing input, a failed download, a NaN loss. The one-line message on stderr says what to do."),
    ("2", "Usage error: an unknown option, or an invalid or inconsistent value."),
    ("130", "Interrupted (Ctrl-C); training leaves a checkpoint it can resume from."),
)


# --------------------------------------------------------------------------------------------- roff


def _escape(text: str) -> str:
    """Text made literal for roff: backslashes, hyphens and non-ASCII characters.

    Every hyphen becomes `\\-` (a minus) so that options and commands copied from the rendered page still work,
    and non-ASCII characters become `\\[uXXXX]` so the page does not depend on the reader's encoding.
    """
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "".join(char if ord(char) < 128 else f"\\[u{ord(char):04X}]" for char in text)


def _line(text: str) -> str:
    """An escaped text line; one starting with `.` or `'` would be read as a request, so `\\&` shields it."""
    text = _escape(text)
    return f"\\&{text}" if text.startswith((".", "'")) else text


def _help_paragraphs(text: str) -> list[str]:
    """Roff for click help text: blank lines separate paragraphs, and one whose first line is `\\b` keeps its lines
    as written (click's no-rewrap marker), everything else is left to roff to fill."""
    lines: list[str] = []
    for block in re.split(r"\n[ \t]*\n", inspect.cleandoc(text).partition("\f")[0].strip()):
        block_lines = block.splitlines()
        if block_lines[0].strip() == "\b":
            kept = textwrap.dedent("\n".join(block_lines[1:])).splitlines()
            lines += [".PP", ".nf", *(_line(line.rstrip()) for line in kept), ".fi"]
        else:
            lines += [".PP", *(_line(line.strip()) for line in block_lines)]
    return lines


def _option_term(ctx: click.Context, option: click.Option) -> str | None:
    """`.TP` term of an option, flags in bold and metavar in italics; None for a hidden option."""
    record = option.get_help_record(ctx)
    if record is None:
        return None
    names = set(option.opts) | set(option.secondary_opts)
    parts = re.split(r"(, | / |; | )", record[0])  # click's spelling: "-o, --output FILE", "--x / --no-x"
    styled = []
    for index, part in enumerate(parts):
        if index % 2:
            styled.append(part)
        elif part in names:
            styled.append(f"\\fB{_escape(part)}\\fR")
        else:
            metavar = _escape(part).replace("|", "|\\:")  # \: lets a long list of choices break after a "|"
            styled.append(f"\\fI{metavar}\\fR")
    return "".join(styled)


def _envvars(ctx: click.Context, option: click.Option) -> list[str]:
    """The environment variables click reads for `option` (its own, or TRON_<COMMAND>_<OPTION>)."""
    if option.envvar:
        return [option.envvar] if isinstance(option.envvar, str) else list(option.envvar)
    if option.expose_value and option.allow_from_autoenv and ctx.auto_envvar_prefix and option.name:
        return [f"{ctx.auto_envvar_prefix}_{option.name.upper()}"]
    return []


def _options(ctx: click.Context) -> list[str]:
    lines = []
    for param in ctx.command.get_params(ctx):
        if not isinstance(param, click.Option):
            continue  # arguments have no help of their own: the synopsis and description cover them
        term = _option_term(ctx, param)
        if term is None:
            continue
        record = param.get_help_record(ctx)
        help_text = " ".join(record[1].split()) if record else ""
        env = _envvars(ctx, param)
        if env:
            help_text += f" Environment: {', '.join(env)}."
        lines += [".TP", term, _line(help_text)]
    return lines


def _page_name(ctx: click.Context) -> str:
    return ctx.command_path.replace(" ", "-")


def _contexts(ctx: click.Context) -> list[click.Context]:
    """The context of `ctx`'s command and of every visible command below it, depth first in listing order.

    Contexts are built, not parsed, so no callback runs; they carry the root's settings (help option names,
    TRON_ environment prefix) down the tree as a real invocation would.
    """
    contexts = [ctx]
    command = ctx.command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                contexts += _contexts(click.Context(sub, info_name=name, parent=ctx, **sub.context_settings))
    return contexts


def man_page(ctx: click.Context, all_pages: list[str]) -> str:
    """The roff source of the man page of `ctx`'s command."""
    command = ctx.command
    name = _page_name(ctx)
    lines = [
        '.\\" Generated by python -m tron_cli.cli._generate from the click commands; edit those, not this file.',
        f'.TH {_escape(name.upper())} 1 "" "tron {_escape(__version__)}" "tron manual"',
        ".nh",  # no hyphenation and a ragged right margin: option names and paths must not be split or stretched
        ".ad l",
        ".SH NAME",
        _line(f"{name} - {command.get_short_help_str(limit=1000)}"),
        ".SH SYNOPSIS",
        f".B {_escape(ctx.command_path)}",
        _line(" ".join(command.collect_usage_pieces(ctx))),
        ".SH DESCRIPTION",
    ]
    lines += _help_paragraphs(command.help or command.short_help or "")
    if command.epilog:
        lines += _help_paragraphs(command.epilog)

    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                sub_page = f"{name}-{sub_name}"
                lines += [".TP", f".B {_escape(sub_name)}", _line(f"{sub.get_short_help_str(limit=1000)} See {sub_page}(1).")]

    lines += [".SH OPTIONS", *_options(ctx)]

    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        ".B TRON_HOME",
        _line("Where data/, runs/ and bundles/ live; stages find each other's newest output there (default: the current directory)."),
        ".TP",
        ".B NO_COLOR",
        _line("When set, messages on stderr have no colour, unless --color always is given."),
        ".TP",
        f".B {_escape(ctx.auto_envvar_prefix or 'TRON')}_<OPTION>",
        _line(
            "The default of an option of this command, named after the option in capitals (each option above names its "
            "variable); a value given on the command line wins."
        ),
    ]
    if isinstance(command, click.Group):
        lines += [
            ".TP",
            f".B {_escape(ctx.auto_envvar_prefix or 'TRON')}_<COMMAND>_<OPTION>",
            _line("The same for the options of each command (each command's page names them)."),
        ]
    lines.append(".SH EXIT STATUS")
    for status, meaning in EXIT_STATUS:
        lines += [".TP", f".B {status}", _line(meaning)]

    others = [page for page in all_pages if page != name]
    lines.append(".SH SEE ALSO")
    lines += [f".BR {_escape(page)} (1){',' if index < len(others) - 1 else ''}" for index, page in enumerate(others)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- files


def train_options_doc(root: click.Context) -> str:
    """docs/train-options.md: every `tron train` option next to the reference config key it maps to."""
    from tron_cli.training.config import reference_keys

    train = cli.get_command(root, "train")
    assert train is not None
    train_ctx = click.Context(train, info_name="train", parent=root)
    by_field: dict[str, list[str]] = {}
    for key, target in reference_keys().items():
        field = target.split(" ")[0]
        by_field.setdefault(field, []).append(key)
    lines = [
        "# `tron train` options and the reference's config keys",
        "",
        "Generated from the click command by `python -m tron_cli.cli._generate` (a test fails when it is stale).",
        "`tron train --config FILE` accepts every key of the reference's JSON configs (otto-de/TRON `configs/**.json`)",
        "unchanged; flags override the file, `TRON_TRAIN_<OPTION>` environment variables override the file too, and",
        "flags override them. Defaults are TRON XL's; `--model gru4rec` starts from the reference's GRU4Rec+ settings.",
        "",
        "| option | default | reference key | meaning |",
        "|---|---|---|---|",
    ]
    for param in train.get_params(train_ctx):
        if not isinstance(param, click.Option) or param.hidden:
            continue
        flags = " / ".join(f"`{flag}`" for flag in (*param.opts, *param.secondary_opts))
        default = param.get_default(train_ctx, call=False)
        # click 8.2+ marks "no default" with a sentinel whose repr starts with "Sentinel"
        if default is None or callable(default) or repr(default).startswith("Sentinel") or (param.is_flag and not param.secondary_opts):
            default = ""
        keys = ", ".join(f"`{key}`" for key in by_field.get(param.name, []))
        if param.name == "topk":
            keys = "`topk_sampling`, `topk_sampling_k`"
        if param.name == "device":
            keys = "`accelerator` (gpu: auto, cpu: cpu)"
        choices = f" One of: {', '.join(param.type.choices)}." if isinstance(param.type, click.Choice) else ""
        help_text = (param.help or "").replace("|", "\\|")
        lines.append(f"| {flags} | {f'`{default}`' if default != '' else ''} | {keys} | {help_text}{choices} |")
    lines += [
        "",
        "`dataset` names a dataset under `$TRON_HOME/data/` (unless DATA is given); `num_batch_negatives: null`",
        "means batch size - 1; `topk_sampling: false` means `--topk 0`; the README's spellings",
        "`shuffling_with_replacement` / `shuffling_without_replacement` mean the code's `shuffle_*` (the reference",
        "silently ignores them). An unknown key, or a value of the wrong type, is a usage error naming the key.",
        "",
    ]
    return "\n".join(lines)


TRAIN_OPTIONS_MODULE = "tron_cli/api/train_options.py"


def _option_type(annotation: str, choices: tuple[str, ...] | str | None) -> str:
    """The type of an option's keyword in `tron_cli.train` from its field's annotation: a fixed set of choices as a
    Literal, a tuple of values as one value or a sequence of them (`track="mlflow"`, `beta=0.5`)."""
    if annotation.startswith("tuple[") and annotation.endswith(", ...]"):
        inner = annotation.removeprefix("tuple[").removesuffix(", ...]")
        return f"{inner} | Sequence[{inner}]"
    if annotation == "str" and isinstance(choices, tuple):
        return f"Literal[{', '.join(json.dumps(choice) for choice in choices)}]"
    return annotation


def _docstring(text: str) -> str:
    return '"""' + text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').rstrip('"') + '"""'


def train_options_module() -> str:
    """tron_cli/api/train_options.py: the keyword options of `tron_cli.train` as a TypedDict, one key per declaration
    (training options, every registered model's settings, every registered loss's options), for type checkers."""
    from dataclasses import fields

    from tron_cli.losses import all_options
    from tron_cli.models import MODELS
    from tron_cli.options import declared
    from tron_cli.training.config import TRAIN_OPTIONS, TrainConfig

    annotations = {f.name: str(f.type) for f in fields(TrainConfig)}
    entries: dict[str, tuple[str, str]] = {}  # name -> (type, help)
    for name, declaration in TRAIN_OPTIONS.items():
        shown = declaration.shown_default or repr(declaration.default)
        entries[name] = (_option_type(annotations[name], declaration.choices), f"{declaration.help} [default: {shown}]")
    for _, spec in MODELS.items():
        settings = {f.name: str(f.type) for f in fields(spec.config_class)}
        for name, declaration in declared(spec.config_class).items():
            if name not in entries:
                owners = {other: other_spec.settings()[name] for other, other_spec in MODELS.items() if name in other_spec.settings()}
                which = "" if len(owners) == len(MODELS.names()) else f" (model {', '.join(owners)})"
                defaults = "; ".join(f"{owner}: {default!r}" for owner, default in owners.items())
                entries[name] = (_option_type(settings[name], declaration.choices), f"{declaration.help}{which} [default {defaults}]")
    for name, (option, losses) in all_options().items():
        entries.setdefault(name, (type(option.default).__name__, f"{option.help} (loss {', '.join(losses)}) [default: {option.default!r}]"))
    types = " ".join(kind for kind, _ in entries.values())
    imports = [*(["from collections.abc import Sequence"] if "Sequence[" in types else [])]
    typing_names = ", ".join(name for name in ("Literal", "TypedDict") if name == "TypedDict" or f"{name}[" in types)
    lines = [
        '"""The keyword options of `tron_cli.train`, named as `tron train`\'s flags (`--hidden-size` is `hidden_size`): the',
        "training options of `TrainConfig`, the settings of every registered model and the options of every registered loss.",
        "",
        "Generated from their declarations by `python -m tron_cli.cli._generate` (a test fails when it is stale); edit the",
        "declarations, not this file.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        *imports,
        f"from typing import {typing_names}",
        "",
        "",
        "class TrainOptions(TypedDict, total=False):",
        '    """Every option `tron_cli.train` takes as a keyword; none is required."""',
        "",
    ]
    for name, (kind, help_text) in entries.items():
        lines += [f"    {name}: {kind}", f"    {_docstring(help_text)}", ""]
    return "\n".join(lines[:-1]) + "\n"


def render() -> dict[str, str]:
    """Every generated file: path relative to the repository root -> content."""
    files = {f"{COMPLETIONS}/tron.{shell}": completion_script(shell) for shell in SHELLS}
    root = click.Context(cli, info_name="tron", show_default=True, **cli.context_settings)
    contexts = _contexts(root)
    pages = [_page_name(ctx) for ctx in contexts]
    for ctx in contexts:
        files[f"{MAN}/{_page_name(ctx)}.1"] = man_page(ctx, pages)
    files["docs/train-options.md"] = train_options_doc(root)
    files[TRAIN_OPTIONS_MODULE] = train_options_module()
    return files


def _obsolete(files: dict[str, str], root: Path) -> list[str]:
    """Generated files of commands that no longer exist."""
    found = [*(root / COMPLETIONS).glob("tron.*"), *(root / MAN).glob("tron*.1")]
    return sorted(str(path.relative_to(root)) for path in found if str(path.relative_to(root)) not in files)


def stale(files: dict[str, str], root: Path = ROOT) -> list[str]:
    """Relative paths that are missing, differ from `files`, or should no longer exist."""
    changed = [name for name, text in files.items() if not (root / name).is_file() or (root / name).read_text() != text]
    return sorted(changed + _obsolete(files, root))


def write(files: dict[str, str], root: Path = ROOT) -> list[str]:
    """Bring the files under `root` up to date; return the relative paths written or removed."""
    touched = stale(files, root)
    for name in touched:
        path = root / name
        if name in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[name])
        else:
            path.unlink()
    return touched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tron_cli.cli._generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 and name the stale files if any")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        outdated = stale(files)
        for name in outdated:
            print(f"stale: {name}", file=sys.stderr)
        if outdated:
            print("Run: python -m tron_cli.cli._generate", file=sys.stderr)
        return 1 if outdated else 0
    for name in write(files):
        print(f"{'wrote' if name in files else 'removed'} {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
