"""Cold-start probe, run in a fresh interpreter by bench/run.py: the handler's first and second invocation.

    python bench/_cold.py <input-url> <output-url-prefix>

Prints one JSON object: ``import_s`` (importing the handler), ``first_s`` (import + the first
invocation, as a Lambda cold start pays it), ``warm_s`` (a second invocation in the same process),
and the same as CPU seconds of the process (``*_cpu_s``: user + system, all threads), which the
load of a shared machine moves less than wall seconds. The S3 endpoint comes from
``AWS_ENDPOINT_URL``, as in Lambda.

``DARTS_COLD_HIDE`` (comma-separated top-level modules) makes those modules unimportable, as if
not installed: bench/run.py hides the test-only packages that libraries import whenever they are
installed (xarray imports dask.array, which imports scipy.sparse), to measure what a runtime
install (the Lambda image) imports.
"""

from __future__ import annotations

import os
import resource
import sys
import time


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


for hidden in filter(None, os.environ.get("DARTS_COLD_HIDE", "").split(",")):
    sys.modules[hidden] = None  # type: ignore[assignment]  # "not installed": find_spec gives None, import fails

started, started_cpu = time.perf_counter(), cpu()
from darts_export.cloud import handler  # noqa: E402  (the import is what is measured)

imported, imported_cpu = time.perf_counter(), cpu()


def main() -> None:
    import json

    source, prefix = sys.argv[1], sys.argv[2].rstrip("/")
    handler({"input": source, "output": f"{prefix}/cold"})
    first, first_cpu = time.perf_counter(), cpu()
    handler({"input": source, "output": f"{prefix}/warm"})
    warm, warm_cpu = time.perf_counter() - first, cpu() - first_cpu
    result = {
        "import_s": imported - started,
        "first_s": first - started,
        "warm_s": warm,
        "import_cpu_s": imported_cpu - started_cpu,
        "first_cpu_s": first_cpu - started_cpu,
        "warm_cpu_s": warm_cpu,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
