"""The `tron` root command: global options, lazily loaded subcommands, and the one place errors become exit codes."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import click
from click.core import ParameterSource

from tron_cli.cli._ui import UI
from tron_cli.errors import Interrupted, TronError
from tron_cli.version import __version__

# name -> "module:attribute"; modules are imported only when the command runs, is helped or completed,
# and none of them imports torch at module level, so `tron --help` and TAB completion stay fast.
COMMANDS = {
    "download": "tron_cli.cli.download:download",
    "preprocess": "tron_cli.cli.preprocess:preprocess",
    "train": "tron_cli.cli.train:train",
    "evaluate": "tron_cli.cli.evaluate:evaluate",
    "export": "tron_cli.cli.export:export",
    "recommend": "tron_cli.cli.recommend:recommend",
    "serve": "tron_cli.cli.serve:serve",
    "plot": "tron_cli.cli.plot:plot",
    "pareto": "tron_cli.cli.pareto:pareto",
    "tune": "tron_cli.cli.tune:tune",
    "completion": "tron_cli.cli.completion:completion",
    "ls": "tron_cli.cli.ls:ls",
    "info": "tron_cli.cli.info:info",
}

VERBOSE_HELP = "More detail on stderr (repeatable)."
QUIET_HELP = "Less on stderr: -q hides messages and progress (results stay), -qq everything but errors."
NO_PROGRESS_HELP = "Never draw progress bars."
COLOR_HELP = "Colour on stderr (auto honours NO_COLOR and terminals)."

EPILOG = """\b
Pipeline (each stage finds the newest output of the one before under $TRON_HOME):
  tron download synthetic && tron preprocess && tron train && tron evaluate && tron export

\b
Exit codes: 0 success, 1 runtime failure (bad or missing input, failed download, NaN loss),
            2 usage error, 130 interrupted (training leaves a resumable checkpoint).
Options can also come from TRON_<COMMAND>_<OPTION> environment variables (flags win).
-v, -q, --no-progress and --color work before or after the command (tron train -q)."""


def _adjust_ui(ctx: click.Context, param: click.Parameter, value) -> None:
    """A global option given after the subcommand: change the UI the root made from those given before it."""
    if value:
        ctx.ensure_object(UI).adjust(**{str(param.name): value})


def global_options() -> list[click.Option]:
    """-v, -q, --no-progress and --color as options of a subcommand, for those who type them last."""
    return [
        click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_adjust_ui, help=VERBOSE_HELP),
        click.Option(["-q", "--quiet"], count=True, expose_value=False, callback=_adjust_ui, help=QUIET_HELP),
        click.Option(["--no-progress"], is_flag=True, expose_value=False, callback=_adjust_ui, help=NO_PROGRESS_HELP),
        click.Option(["--color"], type=click.Choice(["auto", "always", "never"]), expose_value=False, callback=_adjust_ui, help=COLOR_HELP),
    ]


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (click's documented LazyGroup recipe)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        if not any(param.name == "quiet" for param in command.params):
            command.params.extend(global_options())
        return command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.BadParameter as error:
            blame_environment(error)
            raise
        except Interrupted as error:
            # a Ctrl-C that did its job (a checkpoint saved) is no error: say so, and how to go on
            line = error.line()
            click.echo(f"Interrupted{line.removeprefix('interrupted')}" if line.startswith("interrupted") else f"Interrupted: {line}", err=True)
            ctx.exit(error.exit_code)
        except TronError as error:
            click.echo(f"Error: {error.line()}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            quiet_stdout()  # the reader went away (`tron ls | head`): stop quietly, as other filters do
            ctx.exit(141)
        except OSError as error:
            # the last resort for a file error no stage named itself: still one line, naming the file
            click.echo(f"Error: {os_error_line(error)}", err=True)
            ctx.exit(1)


def blame_environment(error: click.BadParameter) -> None:
    """A bad value that came from a TRON_* variable is blamed on the variable, not on a flag nobody typed."""
    param, ctx = error.param, error.ctx
    if param is None or ctx is None or param.name is None or ctx.get_parameter_source(param.name) != ParameterSource.ENVIRONMENT:
        return
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or []) or [f"{ctx.auto_envvar_prefix}_{param.name.upper()}"]
    name = next((n for n in names if n in os.environ), names[0])
    error.param_hint = f"{name}={os.environ.get(name, '')!r} (the environment's value of {param.opts[0] if param.opts else param.name})"


def os_error_line(error: OSError) -> str:
    """One line for an OSError that reached the CLI: the file, what the system said, and what to do."""
    names = [str(name) for name in (error.filename, error.filename2) if name is not None]
    where = f"{' -> '.join(names)}: " if names else ""
    return f"{where}{error.strerror or error}. Check the path, free disk space and permissions"


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit does not fail again on a closed pipe."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "TRON"}, epilog=EPILOG)
@click.version_option(__version__, "--version", prog_name="tron")
@click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)
@click.option("-q", "--quiet", count=True, help=QUIET_HELP)
@click.option("--no-progress", is_flag=True, help=NO_PROGRESS_HELP)
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True, help=COLOR_HELP)
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int, no_progress: bool, color: str) -> None:
    """Session-based recommendation with TRON: from click log to trained, evaluated, served model.

    stdout carries only data (records, or one JSON object with --json); messages, tables and
    progress bars go to stderr.
    """
    ctx.obj = UI(verbosity=verbose - quiet, progress=not no_progress, color=color)


def main() -> None:
    cli(prog_name="tron")


if __name__ == "__main__":
    main()
