"""The ``darts-export`` command line (entry point :func:`main`)."""

from darts_export.cli.main import main

__all__ = ["main"]
