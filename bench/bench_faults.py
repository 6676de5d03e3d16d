"""Fault-injection figures: one fault at every request index of a small export, each fault kind, and outages.

Runs a moto S3 server and the fault proxy of ``tests/faultproxy.py`` on loopback, enumerates the
requests of one export (64² tile, one ensemble subset, metadata, debug store; fresh and over an
older export), then for each fault kind injects one fault at every ``--step``-th request index,
checking the invariants of ``tests/faultsuite.py``; then a persistent outage from several indices
with the default retry settings. Prints the table of issue 13 and writes it as JSON.

    python bench/bench_faults.py --step 1 --out bench/results_faults.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import boto3
from moto.server import ThreadedMotoServer

from faultproxy import FAULT_KINDS, Fault, FaultProxy
from faultsuite import Outcome, enumerate_requests, fault_tile, run_case

READ_TIMEOUT = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=1, help="fault every STEP-th request index")
    parser.add_argument("--outage-from", type=int, nargs="*", default=[0, 6, 20], help="persistent outage indices")
    parser.add_argument("--out", type=Path, default=None, help="write the outcomes and the summary as JSON")
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # not a secret: moto accepts any key
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    proxy = FaultProxy(endpoint, stall_seconds=2 * READ_TIMEOUT)
    options = {
        "endpoint_url": proxy.endpoint,
        "config_kwargs": {"read_timeout": READ_TIMEOUT, "connect_timeout": 1},
        "skip_instance_cache": True,
    }
    tile = fault_tile()
    outcomes: list[Outcome] = []
    try:
        fresh, overwrite = enumerate_requests(proxy, tile, f"s3://{bucket}/enumerated", options)
        print(f"requests: {len(fresh)} (fresh export), {len(overwrite)} (over an older export)", flush=True)
        started = time.perf_counter()
        for kind in FAULT_KINDS:
            for over, count in ((False, len(fresh)), (True, len(overwrite))):
                for index in range(0, count, args.step):
                    prefix = f"{kind}-{'o' if over else 'f'}-{index}"
                    fault = Fault(kind, at=index)
                    outcomes.append(run_case(proxy, s3, tile, bucket, prefix, options, fault, overwrite=over))
            print(f"{kind}: done, {time.perf_counter() - started:.0f} s", flush=True)
        outage_options = {**options, "config_kwargs": {"connect_timeout": 1}}  # the default read timeout
        for kind in ("503", "500", "reset"):
            for index in args.outage_from:
                fault = Fault(kind, at=index, persistent=True)
                prefix = f"outage-{kind}-{index}"
                outcomes.append(run_case(proxy, s3, tile, bucket, prefix, outage_options, fault, overwrite=True))
        delete = Fault("delete-error", match=lambda r: r.method in ("DELETE", "POST"))
        outcomes.append(run_case(proxy, s3, tile, bucket, "delete-error", options, delete, overwrite=True))
    finally:
        proxy.stop()
        server.stop()
    summary = summarise(outcomes)
    print_table(summary)
    if args.out is not None:
        args.out.write_text(json.dumps({"summary": summary, "outcomes": [o.to_dict() for o in outcomes]}, indent=1))


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    single = [o for o in outcomes if not o.persistent and o.kind != "delete-error"]
    by_kind_stage: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for o in single:
        if o.injected:
            by_kind_stage[o.kind][o.stage] += 1
    outages = [o for o in outcomes if o.persistent]
    return {
        "faults_injected": sum(o.injected > 0 for o in single),
        "by_kind_and_stage": {k: dict(v) for k, v in by_kind_stage.items()},
        "complete": sum(o.result == "complete" for o in single),
        "clean_error": sum(o.result == "clean error" for o in single),
        "false_complete": sum(o.result == "false complete" for o in outcomes),
        "bad_error": sum(o.result == "bad error" for o in outcomes),
        "products_dropped": sum(o.dropped for o in outcomes),
        "missing_outputs_disagrees": sum(not o.missing_agrees for o in outcomes),
        "reruns": collections.Counter(o.rerun for o in outcomes if o.rerun != "not needed"),
        "outage_seconds_to_raise": {f"{o.kind}@{o.index}": o.seconds for o in outages},
        "outage_results": collections.Counter(o.result for o in outages),
        "delete_error": [o.to_dict() for o in outcomes if o.kind == "delete-error"],
    }


def print_table(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=1, default=dict))


if __name__ == "__main__":
    main()
