"""`tron completion SHELL`: print click's completion script for bash, zsh or fish."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


def completion_script(shell: str) -> str:
    """The script `_TRON_COMPLETE=<shell>_source tron` prints, byte for byte."""
    from click.shell_completion import get_completion_class

    from tron_cli.cli import cli

    completion_class = get_completion_class(shell)
    if completion_class is None:
        raise ValueError(f"click has no completion for {shell}")
    return completion_class(cli, {}, "tron", "_TRON_COMPLETE").source()


@click.command(short_help="Print the shell completion script for bash, zsh or fish.")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the TAB-completion script for SHELL on stdout.

    The script completes commands, options, choices (dataset names, losses ...) and paths; it asks
    tron itself on every TAB, so it stays right as tron changes. The same scripts are committed
    under completions/ (see docs/shell.md).

    \b
    Install for the current shell, or add the line to ~/.bashrc, ~/.zshrc or fish's config:
      eval "$(tron completion bash)"
      eval "$(tron completion zsh)"
      tron completion fish | source

    \b
    Or save it once (or source the committed completions/tron.bash, tron.zsh or tron.fish):
      tron completion bash > ~/.local/share/bash-completion/completions/tron
      tron completion fish > ~/.config/fish/completions/tron.fish
    """
    click.echo(completion_script(shell), nl=False)
