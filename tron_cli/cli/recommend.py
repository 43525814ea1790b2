"""`tron recommend`: sessions in (JSON lines, OTTO events or Parquet), each session's top-k items out."""

from __future__ import annotations

from pathlib import Path

import click

from tron_cli.choices import DEVICES, INPUT_FORMATS, ON_ERROR
from tron_cli.cli._params import Finite, RegistryChoice, Whole
from tron_cli.cli._ui import UI, pass_ui


@click.command()
@click.argument("model", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("-i", "--input", "input_path", default="-", show_default=True, metavar="PATH|-", help="Sessions to recommend for; - is stdin.")
@click.option("-o", "--output", "output_path", default="-", show_default=True, metavar="PATH|-", help="Where the recommendations go; - is stdout.")
@click.option("-k", type=Whole(min=1), default=20, show_default=True, help="Items per session.")
@click.option("--exclude-seen", is_flag=True, help="Never recommend an item the session already has.")
@click.option(
    "--format",
    "output_format",
    type=RegistryChoice("tron_cli.outputs:OUTPUTS"),
    help="Output format [default: by the --output extension (.parquet, .csv), else ndjson].",
)
@click.option(
    "--input-format",
    type=click.Choice(INPUT_FORMATS),
    default="auto",
    show_default=True,
    help="auto: .parquet files are Parquet, anything else JSON lines recognised by their keys.",
)
@click.option("--batch-size", type=Whole(min=1), default=1024, show_default=True, help="Sessions read, scored and written at a time.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="Where to score.")
@click.option("--allow", type=click.Path(dir_okay=False, path_type=Path), help="Recommend only these items: a file of raw ids, one a line.")
@click.option("--deny", type=click.Path(dir_okay=False, path_type=Path), help="Never recommend these items: a file of raw ids, one a line.")
@click.option(
    "--on-error",
    type=click.Choice(ON_ERROR),
    default="fail",
    show_default=True,
    help="A malformed input line: fail naming it, before anything is written (stdout too), or skip it, report it on stderr and go on.",
)
@click.option("--exact", is_flag=True, help="Score the whole catalogue even when the bundle has an item index (tron export --index).")
@click.option(
    "--index-param",
    "index_params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A search parameter of the bundle's index, the speed/recall knob: ef_search (hnsw), nprobe (ivf). Repeatable.",
)
@click.option(
    "--order-weight",
    type=Finite(0, 1),
    help="A MultiTRON model (tron train --objective multitron): the preference [1 - W, W] between the next click and orders; a JSON line's own order_weight wins [default: 0.5].",
)
@pass_ui
def recommend(
    ui: UI,
    model,
    input_path,
    output_path,
    k,
    exclude_seen,
    output_format,
    input_format,
    batch_size,
    device,
    allow,
    deny,
    on_error,
    exact,
    index_params,
    order_weight,
) -> None:
    """Recommend the top-k items for every session of the input, streaming batch by batch.

        Reads MODEL (a bundle from tron export, its name under $TRON_HOME/bundles/, or a run dir; default:
        the newest bundle, else the newest finished run) and sessions from --input: JSON lines
        {"session": ID, "items": [ITEM, ...]} (raw item ids, oldest first), OTTO lines {"session": ID,
        "events": [{"aid", "ts", "type"}, ...]} (the event types the model's dataset kept, in time
        order), or a Parquet file with columns session and items. Writes one record per input session,
        in input order: JSON lines {"session": ID, "items": [...], "scores": [...]}, Parquet (session,
        items, scores) or OTTO's submission CSV (session_type,labels). Unknown item ids are skipped; a
        session without a known item gets the most popular items (scores null). stdout carries only the
        records, written when the whole input was read (a malformed line fails the command before any is
        written, unless --on-error skip); messages go to stderr. A bundle exported with --index is searched through its item index
    (candidates scored exactly; --exact scores the whole catalogue). A MultiTRON model answers at
        --order-weight (or a JSON line's "order_weight"), and its submission CSV takes the clicks row at
        order weight 0, carts at 0.5 and orders at 1. See docs/serving.md.

        \b
        Examples:
            echo '{"session": 1, "items": [12, 7, 12]}' | tron recommend -k 10
            tron recommend bundles/otto -i otto-test.jsonl -o submission.csv --exclude-seen
            tron recommend runs/otto-sasrec-1 -i sessions.parquet -o recs.parquet --batch-size 4096
            tron recommend bundles/otto -i s.jsonl --deny sold-out.txt --index-param ef_search=256
    """
    from tron_cli.api.recommender import load

    recommender = load(model, device=device, exact=exact, index_param=index_params, reporter=ui)
    recommender.recommend_file(
        input_path,
        output_path,
        k=k,
        exclude_seen=exclude_seen,
        format=output_format,
        input_format=input_format,
        batch_size=batch_size,
        allow=allow,
        deny=deny,
        on_error=on_error,
        order_weight=order_weight,
    )  # a reader that went away (`| head`) ends it quietly: cli/__init__.py
