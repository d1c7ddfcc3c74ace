"""The package's version (``pyproject.toml`` states it too), in a module that imports nothing, so
that a module of the package can read it without importing the package's ``__init__``."""

__version__ = "0.1.0"
