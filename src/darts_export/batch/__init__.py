"""Thousands of tiles: export many input stores on a local process pool, Dask or Ray, with resume and a ledger.

:func:`export_many` is the entry point; see :mod:`darts_export.batch.plan` for what counts as an
input and as a complete export, :mod:`~darts_export.batch.engines` for the engines and
:mod:`~darts_export.batch.ledger` for the record every run leaves under the output prefix.
"""

from darts_export.batch.engines import FULL_TILE_BYTES, EngineName
from darts_export.batch.ledger import BatchSummary
from darts_export.batch.run import BatchProgress, export_many
from darts_export.batch.worker import TileResult, TileTask

__all__ = ["FULL_TILE_BYTES", "BatchProgress", "BatchSummary", "EngineName", "TileResult", "TileTask", "export_many"]
