"""`tron preprocess`: raw click log in, dataset directory (sessions Parquet + items + dataset.json) out."""

from __future__ import annotations

from pathlib import Path

import click

from tron_cli.choices import CART_NAMES, COLUMN_NAMES, LOG_FORMATS, ORDER_NAMES
from tron_cli.cli._params import Finite, RegistryChoice, Whole
from tron_cli.cli._ui import UI, pass_ui, shown
from tron_cli.datasets import DATASETS


@click.command(short_help="Turn a raw click log into a dataset (sessions, splits, catalogue).")
@click.argument("name", required=False, type=RegistryChoice(DATASETS))
@click.option("--input", "input_path", type=click.Path(path_type=Path), help="Raw file, directory or glob to read instead of the download.")
@click.option(
    "--train",
    "train",
    type=click.Path(path_type=Path),
    help="Your own log: one event a row (CSV, TSV, Parquet, JSON lines) or OTTO JSON lines; a file, a directory of parts, a quoted glob or a hive-partitioned tree (date=.../ directories become columns).",
)
@click.option(
    "--test", "test", type=click.Path(path_type=Path), help="A test log of your own (a file, directory or glob, as --train): the data comes pre-split."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(LOG_FORMATS),
    default="auto",
    show_default=True,
    help="Format of --train/--test; auto: by the name (.csv, .tsv, .parquet, .jsonl/.ndjson, each maybe .gz/.zst/.bz2/.xz).",
)
@click.option("--session-col", help=f"Session column of a table [default: recognised: {', '.join(COLUMN_NAMES['session'])}, ...].")
@click.option("--item-col", help=f"Item column of a table [default: recognised: {', '.join(COLUMN_NAMES['item'])}, ...].")
@click.option("--time-col", help=f"Time column (ints, datetimes or ISO-8601) [default: recognised: {', '.join(COLUMN_NAMES['time'])}, ...].")
@click.option(
    "--time-unit", type=click.Choice(["auto", "s", "ms", "us", "ns"]), default="auto", show_default=True, help="Unit of integer times (auto: by magnitude)."
)
@click.option(
    "--id-type",
    type=click.Choice(["auto", "text", "number"]),
    default="auto",
    show_default=True,
    help="How a text table's ids are read: auto (integers only when every id is spelled as one: 0042 and 42 stay two items), text (as written), number (0042 is 42).",
)
@click.option("--separator", help="Field separator of a text table [default: the one of , tab ; | its header line has most].")
@click.option(
    "--event-types",
    default="clicks",
    show_default=True,
    help="OTTO event types that form the click sequence, comma-separated (clicks,carts,orders); the other carts and orders are kept beside it.",
)
@click.option("--type-col", help="Event type column of a table: rows of --order-types are orders, of --cart-types carts, the rest clicks.")
@click.option("--order-types", default=",".join(ORDER_NAMES), show_default=True, help="Values of --type-col that are orders (comma-separated, any case).")
@click.option("--cart-types", default=",".join(CART_NAMES), show_default=True, help="Values of --type-col that are carts (comma-separated, any case).")
@click.option("--name", "dataset_name", help="Dataset name (default: the preset, or the --train file's stem).")
@click.option("--out", type=click.Path(path_type=Path), help="Output directory (default: $TRON_HOME/data/NAME).")
@click.option("--force", is_flag=True, help="Replace an existing dataset.")
@click.option(
    "--split",
    type=click.Choice(["time", "last"]),
    default="time",
    show_default=True,
    help="time: the last --test-days are test; last: leave-one-out (each session's last item is its target).",
)
@click.option("--test-days", type=Finite(), help="Span of the time split (default: the preset's, 1 for your own logs).")
@click.option(
    "--valid-days",
    type=Finite(),
    help="Carve a validation split: train sessions of the last D days [default: the preset's; own logs: the test span when train spans 7 of them, else --valid-fraction 0.1].",
)
@click.option("--valid-fraction", type=Finite(), help="Carve a validation split: the last fraction of train sessions.")
@click.option(
    "--no-valid",
    is_flag=True,
    help="No validation split (the reference's train set; training keeps the last epoch). With --split last, train keeps the item before the test one (a refit once settings are chosen with validation).",
)
@click.option("--min-session-length", type=Whole(min=1), default=2, show_default=True, help="Drop sessions with fewer events.")
@click.option("--min-item-support", type=Whole(min=1), help="Drop events of items with fewer events (default: the preset's, 1 for your own logs).")
@click.option(
    "--unknown-test-items",
    type=click.Choice(["drop", "keep"]),
    help="Test targets never seen in training: keep them in the catalogue as misses (default for your own logs), or drop them (default for yoochoose, diginetica and otto, as the reference does).",
)
@click.option(
    "--memory-limit",
    default="auto",
    show_default=True,
    help="Memory to keep within (4G, 512M, ...; auto: a quarter of the machine's): the log is read in blocks spilled to $TMPDIR and worked through one block at a time.",
)
@click.option(
    "--catalogue-from",
    type=click.Path(path_type=Path),
    help="Keep the dense item ids of this dataset, run or bundle (a path, or a name: the dataset of that name first, then the bundle, then the run): its items keep their ids, new items get ids after them, its items absent today keep theirs (count 0); tron train --init-from then warm-starts from it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@pass_ui
def preprocess(ui: UI, name, input_path, fmt, event_types, order_types, cart_types, dataset_name, as_json, **rest) -> None:
    """Turn a raw click log into a dataset: sessions, splits and a dense item catalogue.

    Reads a download (NAME, or the newest under data/raw/), a file given with --input, or your own log
    (--train, --test: one file or many parts, its format by the file names, its session, item and time
    columns recognised by their common names or given by flags). Writes $TRON_HOME/data/NAME/:
    train.parquet, valid.parquet, test.parquet, items.parquet and dataset.json (see docs/artifacts.md;
    docs/data-lake.md for logs from Spark or DuckDB).

    \b
    Examples:
        tron preprocess                       # the newest download
        tron preprocess yoochoose --input yoochoose-clicks.dat
        tron preprocess --train clicks.csv.gz # columns session_id, item_id, timestamp: recognised
        tron preprocess --train log.tsv --session-col visit --item-col sku --time-col when
        tron preprocess --train 'events/date=*/*.parquet' --time-col ts    # a lake's parts
        tron preprocess --train today.jsonl --name today --catalogue-from yesterday   # stable item ids
    """
    from tron_cli.api.pipeline import preprocess as run

    train, test = rest.pop("train"), rest.pop("test")
    dataset = run(
        train,
        test,
        download=name,
        input=input_path,
        format=fmt,
        event_types=event_types,
        order_types=order_types,
        cart_types=cart_types,
        name=dataset_name,
        reporter=ui,
        **rest,
    )
    summary = dataset.summary
    rows = [
        [split, summary[split]["sessions"], summary[split]["events"], summary[split]["targets"]] for split in ("train", "valid", "test") if split in summary
    ]
    ui.table(f"{shown(summary['dataset'])}: {summary['n_items']:,} items", ["split", "sessions", "events", "targets"], rows)
    lineage = summary.get("catalogue_from")
    if lineage is not None:
        ui.info(
            f"catalogue from {shown(lineage['path'])}: {lineage['kept']:,} of its {lineage['n_items']:,} items seen again, {lineage['unseen']:,} unseen"
            f" (ids kept), {lineage['new']:,} new items after them"
        )
    unknown = summary["unknown_test_targets"]
    if unknown["count"]:
        kept = "kept as misses" if unknown["policy"] == "keep" else "dropped (--unknown-test-items keep counts them as misses)"
        ui.info(f"{unknown['count']:,} of {unknown['of_targets']:,} test targets ({unknown['fraction']:.1%}) are items unknown to train: {kept}")
    if as_json:
        ui.emit_json(summary)
