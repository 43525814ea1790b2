"""Accuracy on the three public session datasets beside the checkout, against the published numbers.

For each dataset of `../shared/data` (yoochoose-1-64, Tmall, Nowplaying; one that is absent is skipped with a
message): ingest it as a pre-split dataset with a validation split (the last 5 % of the train sessions, on which
every choice is made), train the recipe (`tron train --preset session`) and TRON with the reference's settings,
evaluate both on test with `--bootstrap 200` (95 % intervals over sessions), evaluate the `vsknn`, `markov` and
`popular` baselines the same way, and print one row per (dataset, method) with the published rows beside them.

    python benchmarks/accuracy.py [--workdir bench-accuracy] [--datasets yc64,tmall,nowplaying] [--methods ...]

Every step's result is kept under the workdir (`results/DATASET-METHOD.json`, the runs under `runs/`), so an
interrupted benchmark goes on where it stopped and a finished one prints its table again at once. Training
minutes are the wall time of the `tron train` command (the recipe's include its end-of-training choice of blends).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# name -> (train file, test file) under ../shared/data
DATASETS = {
    "yc64": ("yoochoose-1-64/train.jsonl", "yoochoose-1-64/test.jsonl"),
    "tmall": ("tmall/train.jsonl.gz", "tmall/test.jsonl.gz"),
    "nowplaying": ("nowplaying/train.jsonl.gz", "nowplaying/test.jsonl.gz"),
}

# TRON with the reference's settings (BENCHMARKS.md's yoochoose-1-64 row), unchanged on every dataset
REFERENCE = ["--loss", "ssm", "--uniform-negatives", "4096", "--batch-negatives", "127", "--topk", "100", "--max-length", "20"]
REFERENCE += ["--bucket-window", "32", "--epochs", "8", "--early-stopping", "2"]
TRAINED = {"recipe": ["--preset", "session"], "reference": REFERENCE}
BASELINES = ("vsknn", "markov", "popular")
METHODS = (*TRAINED, *BASELINES)

# Published Recall@20 (P@20) / MRR@20 on exactly these splits, as the papers report them (trained on the whole
# train split, epochs chosen on test); full catalogue, every position of every test session.
PUBLISHED = {
    "yc64": [
        ("SR-GNN", 0.7057, 0.3094, "Wu et al., AAAI 2019, Table 2"),
        ("SGNN-HN", 0.7206, 0.3261, "Pan et al., CIKM 2020, Table 3"),
        ("SR-PredictAO (SGNN-HN)", 0.7262, 0.3224, "SR-PredictAO paper and the authors' repository logs"),
    ],
    "tmall": [
        ("SR-GNN", 0.2757, 0.1372, "GCE-GNN paper (Wang et al., SIGIR 2020), Table 3"),
        ("GCE-GNN", 0.3342, 0.1542, "same table"),
    ],
    "nowplaying": [
        ("SR-GNN", 0.1887, 0.0747, "GCE-GNN paper (Wang et al., SIGIR 2020), Table 3"),
        ("GCE-GNN", 0.2237, 0.0840, "same table"),
    ],
}


def tron(home: Path, *args: str) -> dict:
    """`tron ARGS --json` in a child process under TRON_HOME=home; its JSON result."""
    command = [sys.executable, "-m", "tron_cli", "-q", *args, "--json"]
    result = subprocess.run(command, env={**os.environ, "TRON_HOME": str(home)}, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"tron {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return json.loads(result.stdout)


def ingest(home: Path, name: str) -> Path | None:
    """data/NAME under `home`, preprocessed from ../shared unless it is there already; None when ../shared lacks it."""
    data = home / "data" / name
    if (data / "dataset.json").is_file():
        return data
    train, test = (SHARED / part for part in DATASETS[name])
    if not (train.is_file() and test.is_file()):
        print(f"skipped {name}: {train.parent} is not beside the checkout", file=sys.stderr)
        return None
    tron(home, "preprocess", "--train", str(train), "--test", str(test), "--name", name, "--unknown-test-items", "keep", "--valid-fraction", "0.05")
    return data


def measure(home: Path, data: Path, method: str) -> dict:
    """The test result of one method (trained first for a model), kept in results/DATASET-METHOD.json."""
    done = home / "results" / f"{data.name}-{method}.json"
    if done.is_file():
        return json.loads(done.read_text())
    record: dict = {"dataset": data.name, "method": method}
    if method in TRAINED:
        run = home / "runs" / f"{data.name}-{method}"
        started = time.perf_counter()
        summary = tron(home, "train", str(data), *TRAINED[method], "--device", "cpu", "--out", str(run), "--force")
        record["train_minutes"] = (time.perf_counter() - started) / 60
        record["summary"] = summary
        record["test"] = tron(home, "evaluate", str(run), "--bootstrap", "200", "-k", "20")
    else:
        record["test"] = tron(home, "evaluate", "--baseline", method, "--data", str(data), "--bootstrap", "200", "-k", "20")
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(record, indent=1))
    return record


def listed(value: str, known: Iterable[str], kind: str) -> list[str]:
    """The comma-separated names of `value`, each one of `known` (or exit naming the first that is not)."""
    names = [name for name in value.split(",") if name]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown {kind} {unknown[0]!r}: use one of {', '.join(known)}")
    return names


def interval(test: dict, metric: str) -> str:
    return f"{test[metric]:.4f} [{test[metric + '_low']:.4f}, {test[metric + '_high']:.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench-accuracy"), help="TRON_HOME of the benchmark (data/, runs/, results/)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    home = args.workdir.resolve()
    datasets, methods = listed(args.datasets, DATASETS, "dataset"), listed(args.methods, METHODS, "method")
    print("| dataset | method | test Recall@20 [95 % CI] | test MRR@20 [95 % CI] | training min | chosen on validation |")
    print("|---|---|---|---|---|---|")
    for name in datasets:
        data = ingest(home, name)
        if data is None:
            continue
        for method in methods:
            record = measure(home, data, method)
            test = record["test"]
            minutes = f"{record['train_minutes']:.1f}" if "train_minutes" in record else "—"
            print(f"| {name} | {method} | {interval(test, 'recall@20')} | {interval(test, 'mrr@20')} | {minutes} | {chosen(record)} |", flush=True)
        for model, recall, mrr, source in PUBLISHED[name]:
            print(f"| {name} | {model} (published) | {recall:.4f} | {mrr:.4f} | — | {source} |")
    blends = [(name, measure(home, home / "data" / name, "recipe")) for name in datasets if "recipe" in methods and (home / "data" / name).is_dir()]
    if blends:
        print("\nWhat each blend of the recipe did on validation (its best weight with the other blends off, from summary.json's grid):")
        print("| dataset | network alone | + transition prior | + session kNN | + repeat boost | the chosen combination |")
        print("|---|---|---|---|---|---|")
        for name, record in blends:
            print(f"| {name} | {' | '.join(alone(record['summary']['blends']))} |")


def alone(blends: dict) -> list[str]:
    """Validation Recall@20 / MRR@20 of the network, of each blend alone at its best weight (by the recipe's own
    recall + mrr), and of the chosen combination."""
    points = blends["points"]
    weights = ("transition_weight", "knn_weight", "repeat_weight")

    def cell(point: dict, weight: str | None = None) -> str:
        said = f" ({weight.removesuffix('_weight')} {point[weight]:g}{', ' + point['knn_similarity'] if weight == 'knn_weight' else ''})" if weight else ""
        return f"{point['recall@20']:.4f} / {point['mrr@20']:.4f}{said}"

    cells = [cell(next(point for point in points if all(point[w] == 0 for w in weights)))]
    for weight in weights:
        only = [point for point in points if all(point[w] == 0 for w in weights if w != weight)]
        cells.append(cell(max(only, key=lambda point: point["recall@20"] + point["mrr@20"]), weight))
    chosen_point = blends["chosen"]
    cells.append(cell({**chosen_point, **blends["valid"]}) + " (" + ", ".join(f"{key} {value}" for key, value in chosen_point.items()) + ")")
    return cells


def chosen(record: dict) -> str:
    """What training chose on validation: the epoch and, for the recipe, the blends."""
    summary = record.get("summary")
    if summary is None:
        return "—"
    parts = [f"epoch {summary.get('best_epoch')} of {summary.get('epochs')}"]
    blends = (summary.get("blends") or {}).get("chosen")
    if blends:
        parts.append(", ".join(f"{key} {value}" for key, value in blends.items()))
    return "; ".join(parts)


if __name__ == "__main__":
    main()
