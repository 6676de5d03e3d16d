"""Cloud entry point: the AWS Lambda handler ``darts_export.cloud.handler``.

:mod:`.entry` (the handler: one summary per request), :mod:`.events` (events → typed requests),
:mod:`.config` (the environment) and :mod:`.resources` (disk and memory checks).
"""

from darts_export.cloud.config import HandlerConfig
from darts_export.cloud.entry import ExportSummary, handler, run_request
from darts_export.cloud.events import ExportRequest, output_for_input, parse_event

__all__ = [
    "ExportRequest",
    "ExportSummary",
    "HandlerConfig",
    "handler",
    "output_for_input",
    "parse_event",
    "run_request",
]
