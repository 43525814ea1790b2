"""`tron download NAME`: the click face of `tron_cli.download`."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from tron_cli.cli._ui import ui_of
from tron_cli.download import NAMES, SYNTHETIC_DEFAULTS, download_dataset


@click.command(short_help="Download a dataset, or generate a synthetic one.")
@click.argument("name", type=click.Choice(NAMES))
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
@click.option("--sessions", type=click.IntRange(min=1), default=SYNTHETIC_DEFAULTS["sessions"], show_default=True, help="synthetic: number of sessions.")
@click.option("--items", type=click.IntRange(min=1), default=SYNTHETIC_DEFAULTS["items"], show_default=True, help="synthetic: number of items.")
@click.option("--seed", type=click.IntRange(min=0), default=SYNTHETIC_DEFAULTS["seed"], show_default=True, help="synthetic: random seed.")
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
    sessions: int,
    items: int,
    seed: int,
) -> None:
    """Download a real dataset, or generate a synthetic one.

    \b
    Reads:  otto from Kaggle's API (credentials from ~/.kaggle/kaggle.json or KAGGLE_USERNAME
            and KAGGLE_KEY), yoochoose from S3, diginetica from Google Drive; or a mirror (--url),
            or a file you downloaded by hand (--from).
    Writes: the archive, the files extracted from it and manifest.json (last) into
            $TRON_HOME/data/raw/NAME/ or --out DIR. A complete download is not redone without
            --force; an interrupted one resumes where it stopped.

    \b
    Examples:
      tron download synthetic --sessions 5000
      tron download yoochoose --url file:///mnt/mirror/yoochoose-data.7z
      tron download diginetica --from ~/Downloads/dataset-train-diginetica.zip
    """
    values = {"sessions": sessions, "items": items, "seed": seed}
    if name == "synthetic":
        synthetic_params = values
    else:  # only what was typed: defaults and environment variables must not make a real download fail
        synthetic_params = {key: value for key, value in values.items() if ctx.get_parameter_source(key) == ParameterSource.COMMANDLINE}
    ui = ui_of(ctx)
    result = download_dataset(
        name,
        out,
        url=url,
        from_path=from_path,
        sha256=sha256,
        force=force,
        synthetic_params=synthetic_params,
        report=ui,
    )
    if as_json:
        manifest = result.manifest
        ui.emit_json(
            {
                "name": manifest["name"],
                "path": str(result.path.resolve()),
                "source": manifest["source"],
                "archive": manifest["archive"],
                "files": manifest["files"],
                "parameters": manifest["parameters"],
                "skipped": result.skipped,
            }
        )
