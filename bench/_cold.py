"""Cold-start probe, run in a fresh interpreter by bench/run.py: the handler's first and second invocation.

    python bench/_cold.py <input-url> <output-url-prefix>

Prints one JSON object: ``import_s`` (importing the handler), ``first_s`` (import + the first
invocation, as a Lambda cold start pays it), ``warm_s`` (a second invocation in the same process).
The S3 endpoint comes from ``AWS_ENDPOINT_URL``, as in Lambda.
"""

from __future__ import annotations

import json
import sys
import time

started = time.perf_counter()
from darts_export.cloud import handler  # noqa: E402  (the import is what is measured)

imported = time.perf_counter()


def main() -> None:
    source, prefix = sys.argv[1], sys.argv[2].rstrip("/")
    handler({"input": source, "output": f"{prefix}/cold"})
    first = time.perf_counter()
    handler({"input": source, "output": f"{prefix}/warm"})
    warm = time.perf_counter() - first
    print(json.dumps({"import_s": imported - started, "first_s": first - started, "warm_s": warm}))


if __name__ == "__main__":
    main()
