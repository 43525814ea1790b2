"""Leave-one-out accuracy on the three Amazon datasets beside the checkout (issue #31), against the published numbers.

For each of Beauty, Sports and Toys in `../shared/data/amazon-s3rec` (one that is absent is skipped with a
message): ingest it as its README says (the last item of each user is test, the one before it validation), train
each loss on the published SASRec+ network (`tron train --preset sequential`: full cross-entropy; `--loss ssm`:
TRON's sampled softmax over 4,096 shared uniform and 127 in-batch negatives, every one kept, with the logQ
correction), evaluate on test (full catalogue, the user's items excluded, as `dataset.json` says) with
`--bootstrap 200`, and print one row per (dataset, loss): HR@10 and NDCG@10 with 95 % intervals, the best epoch
(chosen on validation NDCG@10) and the training minutes, with the published rows beside them.

With --refit, each loss is trained once more from scratch on train + validation (`tron preprocess --split last
--no-valid`: each user's item before the test one becomes a training target) for the number of epochs chosen on
validation, and evaluated the same way: the model one would deploy. Its rows are a different protocol from the
published ones, which train without the validation item.

    python benchmarks/sequential.py [--workdir bench-sequential] [--datasets beauty,sports,toys] [--losses ce,ssm] [--refit]

Every result is kept under the workdir (`results/DATASET-LOSS.json`, the runs under `runs/`), so an interrupted
benchmark goes on where it stopped and a finished one prints its table again at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from accuracy import SHARED, interval, listed, tron

DATASETS = ("beauty", "sports", "toys")

# each loss's flags on top of --preset sequential
LOSSES = {
    "ce": [],
    "ssm": ["--loss", "ssm", "--uniform-negatives", "4096", "--batch-negatives", "127", "--topk", "0", "--logq", "1"],
}

# Published full-ranking HR@10 / NDCG@10 on exactly these files, as the sources report them.
ESASREC = "eSASRec benchmark README (blondered/transformer_benchmark), their own runs"
PUBLISHED = {
    "beauty": [
        ("SASRec, BCE with one negative", 0.0605, 0.0318, "reported by earlier papers, as that README lists it"),
        ("SASRec, sampled softmax", 0.0921, 0.0531, ESASREC),
        ("eSASRec", 0.0928, 0.0523, ESASREC),
        ("SASRec, SCE", 0.0935, 0.0544, "Mezentsev et al., RecSys 2024"),
    ],
    "sports": [
        ("SASRec, BCE with one negative", 0.0350, 0.0192, "reported by earlier papers, as that README lists it"),
        ("SASRec, sampled softmax", 0.0569, 0.0314, ESASREC),
        ("eSASRec", 0.0560, 0.0323, ESASREC),
    ],
    "toys": [
        ("SASRec, sampled softmax", 0.0970, 0.0580, ESASREC),
        ("eSASRec", 0.0939, 0.0538, ESASREC),
    ],
}


def ingest(home: Path, name: str, refit: bool = False) -> Path | None:
    """data/NAME (NAME-refit: without validation) under `home`, preprocessed from ../shared unless it is there
    already; None when ../shared lacks it."""
    data = home / "data" / (f"{name}-refit" if refit else name)
    if (data / "dataset.json").is_file():
        return data
    source = SHARED / "amazon-s3rec" / f"{name}.csv.gz"
    if not source.is_file():
        print(f"skipped {name}: {source} is not beside the checkout", file=sys.stderr)
        return None
    columns = ["--session-col", "user", "--item-col", "item", "--time-col", "position"]
    refitting = ["--no-valid"] if refit else []
    tron(
        home,
        "preprocess",
        "--train",
        str(source),
        "--split",
        "last",
        *columns,
        "--min-item-support",
        "1",
        "--min-session-length",
        "3",
        *refitting,
        "--name",
        data.name,
    )
    return data


def measure(home: Path, data: Path, loss: str, epochs: int | None = None) -> dict:
    """The test result of one loss, trained first (for `epochs` without validation when given), kept in
    results/DATASET-LOSS.json."""
    done = home / "results" / f"{data.name}-{loss}.json"
    if done.is_file():
        return json.loads(done.read_text())
    run = home / "runs" / f"{data.name}-{loss}"
    fixed = ["--epochs", str(epochs), "--early-stopping", "0"] if epochs else []
    started = time.perf_counter()
    summary = tron(home, "train", str(data), "--preset", "sequential", *LOSSES[loss], *fixed, "--device", "cpu", "--out", str(run), "--force")
    record = {"dataset": data.name, "loss": loss, "train_minutes": (time.perf_counter() - started) / 60, "summary": summary}
    record["test"] = tron(home, "evaluate", str(run), "--bootstrap", "200", "-k", "10")
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(record, indent=1))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench-sequential"), help="TRON_HOME of the benchmark (data/, runs/, results/)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--refit", action="store_true", help="also train each loss again on train + validation for its chosen epochs")
    args = parser.parse_args()
    home = args.workdir.resolve()
    datasets, losses = listed(args.datasets, DATASETS, "dataset"), listed(args.losses, LOSSES, "loss")
    print("| dataset | loss | test HR@10 [95 % CI] | test NDCG@10 [95 % CI] | best epoch | training min |")
    print("|---|---|---|---|---|---|")
    for name in datasets:
        data = ingest(home, name)
        if data is None:
            continue
        whole = ingest(home, name, refit=True) if args.refit else None
        for loss in losses:
            record = measure(home, data, loss)
            test, summary = record["test"], record["summary"]
            epochs = f"{summary['best_epoch']} of {summary['epochs']}"
            print(f"| {name} | {loss} | {interval(test, 'recall@10')} | {interval(test, 'ndcg@10')} | {epochs} | {record['train_minutes']:.1f} |", flush=True)
            if whole is not None:
                record = measure(home, whole, loss, epochs=summary["best_epoch"])
                test = record["test"]
                said = f"{summary['best_epoch']} (chosen above)"
                print(
                    f"| {name} | {loss}, refit on train + valid | {interval(test, 'recall@10')} | {interval(test, 'ndcg@10')} | {said} | {record['train_minutes']:.1f} |",
                    flush=True,
                )
        for model, hr, ndcg, source in PUBLISHED[name]:
            print(f"| {name} | {model} (published: {source}) | {hr:.4f} | {ndcg:.4f} | — | — |")


if __name__ == "__main__":
    main()
