"""The package's version, in a module of its own: what writes it into artifacts imports this, not the package, so
that the package can re-export its Python API without an import circle."""

__version__ = "0.2.0"
