"""The benchmark suite runs end to end (at a tiny size; the suite never times anything)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_suite_runs_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    args = ["--out", str(out), "--sizes", "96", "--repeat", "1", "--no-cold", "--no-debug", "--latencies", "5"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "bench-96.json").read_text())
    rows = {(m["target"], m["what"]) for m in result["measurements"]}
    targets = ("local", "local tmpfs", "s3", "s3 0 ms", "s3 5 ms")
    exports = {(t, w) for t in targets for w in ("default",)}
    lazy = {("s3 input 5 ms", "export from S3 input"), ("s3 input 5 ms", "read needed bytes alone")}
    assert rows == {("-", "floor (2 COGs)")} | exports | lazy
    for m in result["measurements"]:
        assert m["wall"] > 0
        assert m["bytes"] > 0
    assert set(result["ratios"]) >= {"s3_5ms_over_local", "lazy_over_memory_plus_read", "bytes_over_original"}
    assert set(result["lazy_input"]["reads_per_chunk"].values()) == {1.0}  # each chunk of the input read once
    assert "96×96" in (out / "bench-96.md").read_text()
