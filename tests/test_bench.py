"""The benchmark suite runs end to end (at a tiny size; the suite never times anything)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_suite_runs_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--out", str(out), "--sizes", "96", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "bench-96.json").read_text())
    rows = {(m["target"], m["what"]) for m in result["measurements"]}
    products = {"probabilities", "binarized", "polygonized", "extent", "thumbnail", "all"}
    assert {("local", p) for p in products} | {("s3", p) for p in products} | {("-", "floor (2 COGs)")} == rows
    for m in result["measurements"]:
        assert m["wall"] > 0
        assert m["bytes"] > 0
    assert set(result["ratios"]) >= {"s3_over_local", "local_over_floor", "peak_extra_gib", "bytes_vs_original"}
    assert "96×96" in done.stdout
