"""Fixed sets of choices shared by the core and the CLI, in a module with no heavy imports: the CLI's modules
are imported by `tron --help` (for each command's summary), which must not import torch."""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TIES = ("pessimistic", "optimistic", "average")  # how items that tie with a target count in its rank
PROTOCOLS = ("all", "tron")  # every target of every session, or the reference's evaluation
SPLITS = ("test", "valid")  # what `tron evaluate` scores
INPUT_FORMATS = ("auto", "ndjson", "otto", "parquet")  # what `tron recommend` reads
EXPORT_FORMATS = ("safetensors", "onnx")  # what `tron export` writes beside the weights
RETRIEVALS = ("exact", "index")  # how `tron evaluate` finds a model's top-k: every item scored, or through the bundle's item index
