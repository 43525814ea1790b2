"""`tron download NAME`: the click face of `tron_cli.stages.download`.

NAME is any dataset in `tron_cli.datasets.DATASETS`, and the flags of generated datasets (--sessions, --items,
--seed for synthetic) are made from their declared parameters, both read when the command is used: a dataset
a plugin registers is downloaded, listed and completed like a built-in one.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from tron_cli.cli._params import RegistryChoice, Whole
from tron_cli.cli._ui import ui_of
from tron_cli.datasets import DATASETS

# click matches parameters by identity across one invocation (parsing, then processing), so each option is
# made once per distinct declaration and reused
_OPTIONS: dict[tuple, click.Option] = {}


def _parameter_options() -> list[click.Option]:
    """One --FLAG per parameter name over all generated datasets; default and help from its declarations."""
    owners: dict[str, list] = {}
    for name, spec in DATASETS.items():
        for parameter in spec.parameters:
            owners.setdefault(parameter.name, []).append((name, parameter))
    options = []
    for key, declared in owners.items():
        first = declared[0][1]
        same_default = all(parameter.default == first.default for _, parameter in declared)
        help_text = f"{', '.join(name for name, _ in declared)}: {first.help}"
        signature = (key, first.flag, first.default if same_default else None, first.minimum, help_text)
        if signature not in _OPTIONS:
            _OPTIONS[signature] = click.Option(
                [first.flag, key],
                type=Whole(min=first.minimum),
                default=first.default if same_default else None,
                show_default=same_default,
                help=help_text,
            )
        options.append(_OPTIONS[signature])
    return options


def _datasets_epilog() -> str:
    width = max((len(name) for name in DATASETS.names()), default=0)
    return "\b\nDatasets:\n" + "\n".join(f"  {name:<{width}}  {spec.summary}" for name, spec in DATASETS.items())


class DownloadCommand(click.Command):
    """A command whose generator flags and dataset list come from the registry each time they are needed."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        help_option = self.get_help_option(ctx)
        return [*self.params, *_parameter_options(), *([help_option] if help_option is not None else [])]

    @property
    def epilog(self) -> str:
        return _datasets_epilog()

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        """click assigns the declared epilog; the list of datasets replaces it."""


@click.command(cls=DownloadCommand, short_help="Download a dataset, or generate a synthetic one.")
@click.argument("name", type=RegistryChoice(DATASETS))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory [default: $TRON_HOME/data/raw/NAME].")
@click.option("--force", is_flag=True, help="Download again even if a complete download is there.")
@click.option("--url", metavar="URL", help="A mirror to download the archive from (http://, https:// or file://).")
@click.option("--sha256", metavar="HEX", help="Expected SHA-256 of the archive; a mismatch fails and keeps nothing.")
@click.option(
    "--from",
    "from_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Use an archive you downloaded by hand instead of the network (e.g. diginetica's zip).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object describing the download on stdout.")
@click.pass_context
def download(
    ctx: click.Context,
    name: str,
    out: Path | None,
    force: bool,
    url: str | None,
    sha256: str | None,
    from_path: Path | None,
    as_json: bool,
    **values: int,
) -> None:
    """Download a real dataset, or generate a synthetic one.

    \b
    Reads:  the dataset's source (below; otto needs Kaggle credentials from ~/.kaggle/kaggle.json
            or KAGGLE_USERNAME and KAGGLE_KEY), a mirror (--url), or a file you downloaded by
            hand (--from); generated datasets read nothing.
    Writes: the archive, the files extracted from it and manifest.json (last) into
            $TRON_HOME/data/raw/NAME/ or --out DIR. A complete download is not redone without
            --force; an interrupted one resumes where it stopped.

    \b
    Examples:
      tron download synthetic --sessions 5000
      tron download yoochoose --url file:///mnt/mirror/yoochoose-data.7z
      tron download diginetica --from ~/Downloads/dataset-train-diginetica.zip
    """
    from tron_cli.api.pipeline import download as run  # the stage (httpx, archives) loads only when it runs

    declared = {parameter.name for parameter in DATASETS.get(name).parameters}
    # what was typed counts for any dataset (a flag the dataset does not take is refused); the environment only
    # for the dataset's own parameters, so that TRON_DOWNLOAD_SEED cannot make a real download fail
    sources = {key: ctx.get_parameter_source(key) for key in values}
    parameters = {
        key: value
        for key, value in values.items()
        if sources[key] == ParameterSource.COMMANDLINE or (key in declared and sources[key] == ParameterSource.ENVIRONMENT)
    }
    ui = ui_of(ctx)
    result = run(name, out=out, url=url, from_path=from_path, sha256=sha256, force=force, reporter=ui, **parameters)
    if as_json:
        manifest = result.manifest
        ui.emit_json(
            {
                "name": manifest["name"],
                "path": str(result.path),
                "source": manifest["source"],
                "archive": manifest["archive"],
                "files": manifest["files"],
                "parameters": manifest["parameters"],
                "skipped": result.skipped,
            }
        )
