"""What every ``darts-export`` command shares: exit codes, errors, output mode, logging and options.

:func:`command` turns a function into a subcommand of :func:`darts_export.cli.main` that
receives a :class:`Run` (``--json``, quiet/verbose, the stderr console, storage options) and
whose library exceptions become the documented exit codes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from darts_export.errors import (
    ArtifactExistsError,
    ExportError,
    InputNotFoundError,
    InputReadError,
    InvalidInputError,
    InvalidTileError,
    MissingExtraError,
    StorageError,
    UnsupportedTargetError,
)

__all__ = [
    "EXIT_CODES_HELP",
    "JSON_FILE",
    "CliError",
    "ExitCode",
    "Run",
    "command",
    "configure_logging",
    "json_object_file",
    "parse_pairs",
]


class ExitCode(IntEnum):
    """The exit status of ``darts-export``."""

    OK = 0
    FAILED = 1
    USAGE = 2
    BAD_INPUT = 3
    STORAGE = 4
    EXISTS = 5


EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  verification failed, or a sync left exports behind
  2  usage error (bad option, argument or URL protocol)
  3  bad input: tile, band, subset, metadata, an unreadable INPUT, no export under ROOT,
     or an optional feature whose extra is not installed (the message says what to pip install)
  4  storage error: target unreachable, or reading/writing failed
  5  an export already exists at the target (--no-overwrite)"""

_HANDLER_MARK = "_darts_export_cli"


class CliError(click.ClickException):
    """An error with its exit code; printed as ``Error: ...`` on stderr."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = int(exit_code)


@dataclass(frozen=True, kw_only=True)
class Run:
    """What every command shares: output mode, the stderr console, and the storage options."""

    as_json: bool
    quiet: bool
    verbose: int
    console: Console
    storage_options: dict[str, Any] | None = None
    overwrite: bool = True
    fallback_dir: Path | None = None

    def progress(self) -> Progress:
        """A rich progress display on stderr, disabled when quiet or when stderr is not a terminal."""
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[step]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=self.quiet or not self.console.is_terminal,
        )

    def result(self, data: Mapping[str, Any], lines: Sequence[str]) -> None:
        """The command's result: ``data`` as JSON with ``--json``, else ``lines`` of text."""
        if self.as_json:
            click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            for line in lines:
                click.echo(line)

    def fail(self, exc: BaseException | str, code: ExitCode, kind: str = "InputError") -> NoReturn:
        """Stop with exit ``code``; with ``--json`` the error is also printed as JSON on stdout."""
        message = str(exc)
        if self.as_json:
            kind = type(exc).__name__ if isinstance(exc, BaseException) else kind
            click.echo(json.dumps({"error": {"type": kind, "message": message, "exit_code": int(code)}}, indent=2))
        raise CliError(message, code) from (exc if isinstance(exc, BaseException) else None)

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Map library exceptions to exit codes."""
        try:
            yield
        except click.ClickException:
            raise
        except ArtifactExistsError as exc:
            self.fail(exc, ExitCode.EXISTS)
        except UnsupportedTargetError as exc:
            self.fail(exc, ExitCode.USAGE)
        except (InvalidTileError, InputNotFoundError, InvalidInputError, MissingExtraError) as exc:
            self.fail(exc, ExitCode.BAD_INPUT)
        except InputReadError as exc:  # the input exists but reading it failed
            self.fail(exc, ExitCode.STORAGE)
        except StorageError as exc:
            self.fail(exc, ExitCode.STORAGE)
        except ExportError as exc:
            self.fail(exc, ExitCode.FAILED)


def configure_logging(ctx: click.Context, level: int, console: Console) -> None:
    """A stderr handler on the ``darts_export`` logger for this invocation, removed when it ends."""
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(click.get_text_stream("stderr"))
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    setattr(handler, _HANDLER_MARK, True)
    package = logging.getLogger("darts_export")
    for old in [h for h in package.handlers if getattr(h, _HANDLER_MARK, False)]:
        package.removeHandler(old)
    previous = package.level
    package.addHandler(handler)
    package.setLevel(level)

    def restore() -> None:
        package.removeHandler(handler)
        package.setLevel(previous)

    ctx.call_on_close(restore)


# --- option parsing -------------------------------------------------------------------------------


def parse_pairs(pairs: Sequence[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values parsed as JSON when they parse (numbers, booleans, objects), else strings."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        try:
            parsed[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key.strip()] = raw
    return parsed


def json_object_file(path: Path | None, option: str) -> dict[str, Any]:
    """The JSON object in the file ``path`` of ``option`` (``{}`` without a file); a usage error otherwise."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint=option) from exc
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a JSON object, not {type(data).__name__}", param_hint=option)
    return data


JSON_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUTPUT_OPTIONS = (
    click.option("-v", "--verbose", count=True, help="More log output on stderr (-v: per tile, -vv: per artifact)."),
    click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress bars."),
    click.option("--json", "as_json", is_flag=True, help="Print the result (manifest, report) as JSON on stdout."),
)
_STORAGE_OPTIONS = (
    click.option(
        "--storage-option",
        multiple=True,
        metavar="KEY=VALUE",
        help="An fsspec/s3fs option (repeatable), e.g. endpoint_url=http://127.0.0.1:9000 or "
        'client_kwargs=\'{"region_name": "eu-central-1"}\'; values are parsed as JSON when they parse. '
        "Without any, s3:// uses the standard AWS environment (AWS_PROFILE, AWS_ENDPOINT_URL, ...).",
    ),
    click.option("--storage-options-file", type=JSON_FILE, help="Storage options as a JSON object file."),
)
_TARGET_OPTIONS = (
    click.option(
        "--overwrite/--no-overwrite",
        default=True,
        show_default=True,
        help="Replace an existing export at OUT_DIR, or stop with exit code 5.",
    ),
    click.option(
        "--fallback-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="A local folder to write to when OUT_DIR is unreachable; publish it later with `darts-export sync`.",
    ),
)


def command(
    group: click.Group, name: str, *, storage: bool = True, target: bool = False
) -> Callable[[Callable[..., None]], Any]:
    """A subcommand of ``group`` whose function receives a :class:`Run` built from the shared options."""

    def decorate(func: Callable[..., None]) -> Any:
        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> None:
            ctx = click.get_current_context()
            meta = ctx.find_root().meta
            verbose = kwargs.pop("verbose") + int(meta.get("darts_export.verbose", 0))
            quiet = kwargs.pop("quiet") or bool(meta.get("darts_export.quiet", False))
            level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
            console = Console(stderr=True)
            configure_logging(ctx, level, console)
            options = {
                **json_object_file(kwargs.pop("storage_options_file", None), "--storage-options-file"),
                **parse_pairs(kwargs.pop("storage_option", ()), "--storage-option"),
            }
            run = Run(
                as_json=kwargs.pop("as_json"),
                quiet=quiet,
                verbose=verbose,
                console=console,
                storage_options=options or None,
                # only the target options: `sync` has a FALLBACK_DIR argument of its own
                overwrite=kwargs.pop("overwrite") if target else True,
                fallback_dir=kwargs.pop("fallback_dir") if target else None,
            )
            func(run, **kwargs)

        cmd = group.command(name, epilog=EXIT_CODES_HELP)(wrapper)
        for option in (*(_TARGET_OPTIONS if target else ()), *(_STORAGE_OPTIONS if storage else ()), *_OUTPUT_OPTIONS):
            cmd = option(cmd)  # after the command's own parameters, in this order
        return cmd

    return decorate
