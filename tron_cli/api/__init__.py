"""The Python API, re-exported from `tron_cli` (`tron_cli.train(...)`): one module per concept — the pipeline's
functions (`pipeline`, `training`), what they return (`handles`: downloads, datasets, runs, bundles; `metrics`),
a loaded model that recommends (`recommender`), tables from polars, pandas or pyarrow (`tables`), and progress
bars for a terminal or a notebook (`progress`). The CLI calls these functions, so the two cannot drift.

Importing this package imports no torch, polars or rich: each function imports what it needs when it runs.
"""
