"""The stages, one module each: download, preprocess, train, evaluate, export, recommend, serve, tune, pareto.

A stage reads and writes only files of the artifact contract (`tron_cli.artifacts`) and never imports another
stage; its CLI command (`tron_cli.cli.NAME`) is a thin shell around its one entry function."""
