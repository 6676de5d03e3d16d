"""The README runs: every fenced ``python`` and ``sh`` block, top to bottom, in one scratch folder.

Only the tile and the S3 endpoint are substituted: tiles are made smaller, the README's example
endpoint ``localhost:9000`` becomes the moto S3 server on loopback (where the bucket ``bucket``
exists), and ``tile.zarr`` is a small synthetic tile. A block whose info string holds the word
``norun`` (```` ```sh norun (why) ````) is not run; it must say why. Blocks in other languages than
Python and shell are data, not run. In shell blocks,
``python -m pip install`` steps count as done (the test runs in that environment) and
``python -m pytest`` is this suite itself; everything else runs through ``bash`` with the
installed ``darts-export`` on the PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from darts_export.synthetic import make_synthetic_tile
from helpers import put_zarr

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE_ENDPOINT = "localhost:9000"
SIZE = 64  # pixels per side of every tile the README makes
_FENCE = re.compile(r"^```(?P<lang>[\w-]+)(?P<info>[^\n]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_SHELL = frozenset({"sh", "bash", "shell"})
_PYTHON = frozenset({"python", "py", "python3"})
_DONE = re.compile(r"^python -m (pip install|pytest)\b")  # the environment this runs in; the suite itself


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    lang: str
    info: str
    body: str
    line: int  # of the block's first code line

    @property
    def norun(self) -> bool:
        return "norun" in self.info.split()

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang}{self.info})"


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [
        Block(m["lang"], m["info"], m["body"], text.count("\n", 0, m.start("body")) + 1) for m in _FENCE.finditer(text)
    ]


def substitute(code: str, endpoint: str) -> str:
    """The tile and the endpoint of the test, nothing else."""
    code = code.replace(EXAMPLE_ENDPOINT, endpoint.removeprefix("http://"))
    code = re.sub(r"make_synthetic_tile\(\d+", f"make_synthetic_tile({SIZE}", code)
    return re.sub(r"(darts-export demo \S+)(?: --size \d+)?", rf"\1 --size {SIZE}", code)


def shell_script(body: str) -> str:
    """The block's lines, without the steps that installed this environment or run this suite."""
    lines = []
    for line in body.splitlines():
        steps = [s for s in line.split(" && ") if not _DONE.match(s.strip())]
        if steps:
            lines.append(" && ".join(steps))
    return "\n".join(lines)


def test_readme_blocks_are_found_and_norun_blocks_say_why() -> None:
    blocks = readme_blocks()
    quick_start = blocks[0]
    assert quick_start.lang in _SHELL
    assert not quick_start.norun
    assert len(quick_start.body.splitlines()) == 2  # the Quick start is two commands
    assert sum(not b.norun for b in blocks) >= 5
    for block in blocks:
        if block.norun:  # `norun (reason)`
            assert re.search(r"norun \(.{10,}\)", block.info), f"{block}: say why it does not run"


@pytest.mark.s3
def test_every_readme_block_runs(
    tmp_path: Path, moto_endpoint: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "bucket" not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}:
        s3_client.create_bucket(Bucket="bucket")
    put_zarr(make_synthetic_tile(SIZE, seed=1), str(tmp_path / "tile.zarr"), None)
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("AWS_ENDPOINT_URL", None)  # only what the README sets
    ran = 0
    for block in readme_blocks():
        if block.norun or block.lang not in _SHELL | _PYTHON:  # other languages are data (JSON events, ...)
            continue
        code = substitute(block.body, moto_endpoint)
        if block.lang in _PYTHON:
            # Line numbers in a traceback are the README's.
            exec(compile("\n" * (block.line - 1) + code, str(README), "exec"), {"__name__": "__readme__"})
        else:
            run = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", shell_script(code)],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
                check=False,
            )
            assert run.returncode == 0, f"{block} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
            assert "Traceback" not in run.stderr, f"{block}:\n{run.stderr}"
        ran += 1
    assert ran >= 5
    # What the blocks left behind: the Quick start's demo, the exports on S3 and their collection.
    assert (tmp_path / "demo-export" / "manifest.json").is_file()
    objects = {o["Key"] for o in s3_client.list_objects_v2(Bucket="bucket", Prefix="darts/")["Contents"]}
    assert {"darts/T06WVS_2024/manifest.json", "darts/collection.json"} <= objects
