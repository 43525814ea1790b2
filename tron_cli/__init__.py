"""tron: session-based recommendation with TRON and its baselines, from click log to served model.

The Python API (docs/python.md), the same pipeline as the `tron` commands, which call it:

    import tron_cli
    dataset = tron_cli.preprocess(events)                      # a path, or a polars / pandas / pyarrow table
    run = tron_cli.train(dataset, preset="small", epochs=1)    # tron train's flags as keywords
    tron_cli.load(tron_cli.export(run)).recommend([[1358, 1861, 1447]], k=5)

Importing it imports no torch: each function imports what it needs when it runs. The names in `__all__` are the
public API, versioned semantically (CHANGELOG.md); everything else is internal.
"""

from tron_cli import errors
from tron_cli.api.handles import Artifact, Bundle, Dataset, Download, Run, info, ls
from tron_cli.api.metrics import Metrics
from tron_cli.api.pipeline import download, evaluate, export, preprocess
from tron_cli.api.recommender import Recommendation, Recommender, load
from tron_cli.api.train_options import TrainOptions
from tron_cli.api.training import train
from tron_cli.reporting import Reporter
from tron_cli.version import __version__

__all__ = [
    "Artifact",
    "Bundle",
    "Dataset",
    "Download",
    "Metrics",
    "Recommendation",
    "Recommender",
    "Reporter",
    "Run",
    "TrainOptions",
    "__version__",
    "download",
    "errors",
    "evaluate",
    "export",
    "info",
    "load",
    "ls",
    "preprocess",
    "train",
]
