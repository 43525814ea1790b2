"""`tron evaluate`: full-catalogue Recall@k, MRR@k and NDCG@k of a run, a bundle or a baseline."""

from __future__ import annotations

from pathlib import Path

import click

from tron_cli.choices import DEVICES, PROTOCOLS, RETRIEVALS, SPLITS, TIES
from tron_cli.cli._params import Finite, RegistryChoice, Whole
from tron_cli.cli._ui import UI, pass_ui, shown


@click.command(short_help="Full-catalogue Recall, MRR and NDCG at k of a run, bundle or baseline.")
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), help="Dataset dir (default: the run's own; for baselines the newest).")
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True, help="Which split to score.")
@click.option("-k", "--cutoff", "cutoffs", type=Whole(min=1), multiple=True, default=(5, 10, 20), show_default=True, help="Cutoffs (repeatable).")
@click.option("--ties", type=click.Choice(TIES), default="pessimistic", show_default=True, help="How items that tie with the target count in its rank.")
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="all",
    show_default=True,
    help="all: every target of every session; tron: the reference's evaluation, for parity; otto: OTTO's Kaggle task (each session cut at random, Recall@20 of the next click, later carts and orders, weighted 0.1/0.3/0.6).",
)
@click.option("--cut-seed", type=Whole(), default=42, show_default=True, help="--protocol otto: the seed of the random cuts (the organisers' is 42).")
@click.option(
    "--exclude-seen/--no-exclude-seen",
    default=None,
    help="Remove items already clicked in the session from the ranking (a seen target counts as a miss). [default: the dataset's: on for leave-one-out data, as its validation, off otherwise]",
)
@click.option("--baseline", type=RegistryChoice("tron_cli.evaluation.baselines:BASELINES"), help="Evaluate a baseline instead of a model.")
@click.option(
    "--baseline-option",
    "baseline_options",
    metavar="NAME=VALUE",
    multiple=True,
    help="An option of the --baseline (repeatable); `tron evaluate --baseline NAME --baseline-option help` lists them.",
)
@click.option("--bootstrap", type=Whole(min=0), default=0, help="Add 95% confidence intervals from N resamples of sessions.")
@click.option("--seed", type=Whole(), default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="Where to score.")
@click.option(
    "--chunk-size",
    type=Whole(min=1),
    default=65536,
    show_default=True,
    help="Catalogue items scored at once, at most (a CPU ranks in smaller, cache-sized chunks).",
)
@click.option(
    "--track",
    type=RegistryChoice("tron_cli.tracking:TRACKERS"),
    multiple=True,
    envvar="TRON_TRACK",
    help="Add the metrics to the run's record in this tracker (repeatable; default: the trackers the run was trained with).",
)
@click.option(
    "--retrieval",
    type=click.Choice(RETRIEVALS),
    default="exact",
    show_default=True,
    help="index: a bundle's top-k through its item index next to exact scoring's, and their overlap.",
)
@click.option(
    "--index-param",
    "index_params",
    multiple=True,
    metavar="NAME=VALUE",
    help="With --retrieval index: a search parameter, the speed/recall knob (ef_search for hnsw, nprobe for ivf).",
)
@click.option(
    "--order-weight",
    type=Finite(0, 1),
    help="A MultiTRON run (tron train --objective multitron): evaluate at the preference [1 - W, W]; order recall/density come with the click metrics [default: 0.5].",
)
@click.option(
    "--transition-weight",
    type=Finite(0),
    help="Score with this weight of the transition prior instead of the run's (0: without it; a run trained without one counts it on its train split): choose it on --split valid.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@pass_ui
def evaluate(
    ui: UI,
    run,
    data,
    split,
    cutoffs,
    ties,
    protocol,
    exclude_seen,
    baseline,
    baseline_options,
    bootstrap,
    seed,
    device,
    chunk_size,
    track,
    retrieval,
    index_params,
    cut_seed,
    order_weight,
    transition_weight,
    as_json,
) -> None:
    """Rank the whole catalogue for every test target of RUN and report Recall, MRR and NDCG at k.

    Reads RUN (a run dir or a bundle, or a run's name under $TRON_HOME/runs/; default: the newest
    finished run) and a dataset split. Writes metrics.json into the run, a table naming the run on
    stderr, and with --json one object on stdout with recall@K, mrr@K, ndcg@K for every cutoff,
    n_targets (plus _low/_high with --bootstrap), and the absolute paths of run and dataset.

    With --retrieval index (a bundle exported with --index), each target's top-K list (K = the largest
    cutoff) through the item index is compared with exact scoring's: Recall and MRR of both, ranked by
    position in the list, and the overlap of the two top-K lists; nothing is written.

    \b
    Examples:
        tron evaluate --json | jq '."recall@20"'
        tron evaluate runs/otto-sasrec-1 --split valid -k 20 --bootstrap 200
        tron evaluate runs/yc64 --split valid --transition-weight 2
        tron evaluate --baseline popular --data data/yoochoose
        tron evaluate --baseline vsknn --baseline-option k=200 --baseline-option sample_size=1000
        tron evaluate bundles/otto --retrieval index --index-param ef_search=64
    """
    from tron_cli.api.pipeline import evaluate as run_evaluation
    from tron_cli.errors import OptionError

    if baseline_options == ("help",) and run is None:
        _list_baseline_options(ui, baseline)
        return
    try:
        metrics = run_evaluation(
            run,
            split=split,
            data=data,
            cutoff=cutoffs,
            ties=ties,
            protocol=protocol,
            cut_seed=cut_seed,
            exclude_seen=exclude_seen,
            baseline=baseline,
            baseline_option=baseline_options,
            bootstrap=bootstrap,
            seed=seed,
            device=device,
            chunk_size=chunk_size,
            track=track,
            retrieval=retrieval,
            index_param=index_params,
            order_weight=order_weight,
            transition_weight=transition_weight,
            reporter=ui,
        )
    except OptionError as error:
        raise click.UsageError(error.line()) from None
    result, run = metrics.result, metrics.run
    cutoffs = tuple(sorted(set(cutoffs)))
    if retrieval == "index":
        _index_table(ui, run, result, cutoffs)
        if as_json:
            ui.emit_json(result)
        return
    where = {"dataset": str(Path(result["dataset"]).resolve())} if baseline else {"run": str(run.resolve()), "dataset": str(Path(result["dataset"]).resolve())}
    if protocol == "otto":
        rows = [
            [kind, f"{result[f'otto_{kind}']:.4f}", f"{result[f'n_{kind}']:,}", f"{weight:.2f}"]
            for kind, weight in (("clicks", 0.1), ("carts", 0.3), ("orders", 0.6))
        ]
        rows.append(["total", f"{result['otto_total']:.4f}", "", ""])
        ui.table(
            f"{shown(run)} on {split}: OTTO's task ({result['n_sessions']:,} sessions cut with seed {cut_seed})",
            ["type", "Recall@20", "labels", "weight"],
            rows,
        )
        if as_json:
            ui.emit_json({**result, **where})
        return
    rows = []
    with_orders = bool(result.get("n_ordered"))  # order columns only when the split has ordered targets
    for k in cutoffs:
        row = [f"@{k}"]
        for metric in ("recall", "mrr", "ndcg"):
            value = result[f"{metric}@{k}"]
            if bootstrap:
                row.append(f"{value:.4f} [{result[f'{metric}@{k}_low']:.4f}, {result[f'{metric}@{k}_high']:.4f}]")
            else:
                row.append(f"{value:.4f}")
        if with_orders:
            row += [f"{result[f'order_recall@{k}']:.4f}", f"{result[f'order_density@{k}']:.4f}"]
        rows.append(row)
    unknown = result.get("unknown_test_targets")
    unseen = f", {unknown['count']:,} unknown to train {'as misses' if unknown['policy'] == 'keep' else 'dropped'}" if unknown and unknown["count"] else ""
    seen = ", seen items excluded" if result.get("exclude_seen") else ""
    title = f"{baseline or shown(run)} on {split} ({result['n_targets']:,} targets{unseen}, protocol {protocol}, ties {ties}{seen})"
    ui.table(title, ["cutoff", "Recall", "MRR", "NDCG", *(["Order recall", "Order density"] if with_orders else [])], rows)
    if as_json:
        ui.emit_json({**result, **where})


def _list_baseline_options(ui: UI, baseline: str | None) -> None:
    """`--baseline-option help`: the options the --baseline declares, with their defaults."""
    if baseline is None:
        raise click.UsageError("--baseline-option needs --baseline")
    from tron_cli.evaluation.baselines import BASELINES

    rows = [[option.name, str(option.default), option.help] for option in BASELINES.get(baseline, "--baseline").options]
    ui.table(f"options of baseline {baseline}", ["option", "default", "meaning"], rows)


def _index_table(ui: UI, run, result: dict, cutoffs: tuple[int, ...]) -> None:
    exact, index = result["exact"], result["index"]
    rows = [[f"@{k}", f"{exact[f'recall@{k}']:.4f}", f"{index[f'recall@{k}']:.4f}", f"{exact[f'mrr@{k}']:.4f}", f"{index[f'mrr@{k}']:.4f}"] for k in cutoffs]
    k = max(cutoffs)
    knobs = ", ".join(f"{name}={value}" for name, value in index["search"].items())
    title = (
        f"{run or 'latest run'}: {index['kind']} index{f' ({knobs})' if knobs else ''} vs exact on {result['split']} ({exact['n_targets']:,} targets); "
        f"top-{k} overlap {result[f'overlap@{k}']:.4f}; {result['seconds']['index']:.2f} s vs {result['seconds']['exact']:.2f} s"
    )
    ui.table(title, ["cutoff", "Recall exact", "Recall index", "MRR exact", "MRR index"], rows)
