"""tron: session-based recommendation with TRON and its baselines, from click log to served model."""

__version__ = "0.2.0"
