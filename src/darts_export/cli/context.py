"""What every ``darts-export`` command shares: exit codes, the global options, and one :class:`Run`.

The global options (``--json``, ``-v``, ``-q``, ``--storage-option``, ``--storage-options-file``)
are accepted before or after the subcommand: both the group and every command declare them (see
:func:`darts_export.cli.options.global_options`), and each occurrence is merged into the one
:class:`Settings` object of the invocation (``ctx.obj``). A command turns it into a :class:`Run`
— output mode, the stderr console, the storage options — whose :meth:`Run.translated` maps
library exceptions to the documented exit codes, in words of the command line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.logging import RichHandler

from darts_export.errors import (
    ArtifactExistsError,
    ExportError,
    ExportInProgressError,
    InputNotFoundError,
    InputReadError,
    InvalidInputError,
    InvalidTileError,
    MissingExtraError,
    StorageError,
    UnsupportedTargetError,
)

__all__ = ["EXIT_CODES_HELP", "CliError", "ExitCode", "Run", "Settings", "pass_settings"]


class ExitCode(IntEnum):
    """The exit status of ``darts-export``."""

    OK = 0
    FAILED = 1
    USAGE = 2
    BAD_INPUT = 3
    STORAGE = 4
    EXISTS = 5
    FELL_BACK = 6
    IN_PROGRESS = 7


EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  verification failed, a sync left exports behind, or a tile of a batch failed
  2  usage error (bad option, argument or URL)
  3  bad input: tile, band, subset, metadata, an unreadable INPUT, no export under ROOT,
     or an optional feature whose extra is not installed (the message says what to pip install)
  4  storage error: target unreachable, or reading/writing failed; a batch's cluster unreachable
  5  an export already exists at the target (--no-overwrite)
  6  the target was unreachable: the export was written to --fallback-dir instead
  7  another export is writing to the target right now (its lease is held); retry later"""

# Library messages name keyword arguments; on the command line the same advice names the flag.
_FLAG_WORDS = (
    (re.compile(r"\b(?:pass|set) overwrite=True\b"), "use --overwrite"),
    (re.compile(r"\boverwrite=False\b"), "--no-overwrite"),
    (re.compile(r"\boverwrite=True\b"), "--overwrite"),
    (re.compile(r"\bfallback_dir=?\b"), "--fallback-dir"),
    (re.compile(r"\bstorage_options\b"), "--storage-option"),
    (re.compile(r"\bensemble_subsets\b"), "--subset"),
    (re.compile(r"\bitems_parquet\b"), "--items-parquet"),
    (re.compile(r"\bdebug=True\b"), "--debug"),
    (re.compile(r"\bout_dir\b"), "OUT_DIR"),
)


def in_cli_words(message: str) -> str:
    """``message`` with the library's keyword arguments replaced by the flags that set them."""
    for pattern, flag in _FLAG_WORDS:
        message = pattern.sub(flag, message)
    return message


class CliError(click.ClickException):
    """An error with its exit code; printed as ``Error: ...`` on stderr."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = int(exit_code)


@dataclass
class Settings:
    """The global options of one invocation, collected wherever they were given (``ctx.obj``)."""

    as_json: bool = False
    quiet: bool = False
    verbose: int = 0
    option_files: list[dict[str, Any]] = field(default_factory=list)
    option_pairs: dict[str, Any] = field(default_factory=dict)

    @property
    def storage_options(self) -> dict[str, Any] | None:
        """The files' options, then the ``KEY=VALUE`` pairs on top; ``None`` when there are none."""
        merged: dict[str, Any] = {}
        for options in self.option_files:
            merged.update(options)
        merged.update(self.option_pairs)
        return merged or None

    def run(self, *, overwrite: bool = True, fallback_dir: Path | None = None) -> Run:
        """Start the command: configure logging for this invocation and return its :class:`Run`."""
        level = logging.ERROR if self.quiet else {0: logging.WARNING, 1: logging.INFO}.get(self.verbose, logging.DEBUG)
        console = Console(stderr=True)
        _configure_logging(click.get_current_context(), level, console)
        return Run(
            as_json=self.as_json,
            quiet=self.quiet,
            verbose=self.verbose,
            console=console,
            storage_options=self.storage_options,
            overwrite=overwrite,
            fallback_dir=fallback_dir,
        )


pass_settings = click.make_pass_decorator(Settings, ensure=True)


@dataclass(frozen=True, kw_only=True)
class Run:
    """One running command: output mode, the stderr console, and the storage options."""

    as_json: bool
    quiet: bool
    verbose: int
    console: Console
    storage_options: dict[str, Any] | None = None
    overwrite: bool = True
    fallback_dir: Path | None = None

    @property
    def interactive(self) -> bool:
        """Whether progress (bars, spinners) is shown: stderr is a terminal and not ``--quiet``."""
        return not self.quiet and self.console.is_terminal

    def status(self, message: str) -> contextlib.AbstractContextManager[Any]:
        """A spinner with ``message`` on stderr while the block runs (only when :attr:`interactive`)."""
        return self.console.status(message) if self.interactive else contextlib.nullcontext()

    def result(self, data: Mapping[str, Any], lines: Sequence[str]) -> None:
        """The command's result: ``data`` as JSON with ``--json``, else ``lines`` of text."""
        if self.as_json:
            click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            for line in lines:
                click.echo(line)

    def fail(self, exc: BaseException | str, code: ExitCode, kind: str = "InputError") -> NoReturn:
        """Stop with exit ``code``; with ``--json`` the error is also printed as JSON on stdout."""
        message = in_cli_words(str(exc))
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
        except ExportInProgressError as exc:
            self.fail(exc, ExitCode.IN_PROGRESS)
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


_HANDLER_MARK = "_darts_export_cli"


def _configure_logging(ctx: click.Context, level: int, console: Console) -> None:
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
