"""Parameter types and the options several ``darts-export`` commands share."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from darts_export.cli.context import Settings

__all__ = [
    "JSON_OBJECT_FILE",
    "KEY_VALUE",
    "STORAGE_URL",
    "JsonObjectFile",
    "KeyValue",
    "StorageUrl",
    "catalog_options",
    "global_options",
    "target_options",
]

F = TypeVar("F", bound=Callable[..., Any])


class KeyValue(click.ParamType[tuple[str, Any]]):
    """``KEY=VALUE`` → ``(key, value)``; the value parsed as JSON when it parses (numbers, booleans, objects)."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, Any]:
        """Split at the first ``=``; a missing ``=`` or an empty key is a usage error."""
        if isinstance(value, tuple):
            return value  # already converted (a default)
        key, sep, raw = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"expected KEY=VALUE, got {value!r}", param, ctx)
        try:
            return key.strip(), json.loads(raw)
        except json.JSONDecodeError:
            return key.strip(), raw


class JsonObjectFile(click.ParamType[dict[str, Any]]):
    """The path of a file holding one JSON object → that object."""

    name = "FILE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, Any]:
        """Read and parse the file; anything but a readable JSON object is a usage error."""
        if isinstance(value, dict):
            return value
        path = Path(value)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.fail(f"{path}: {exc}", param, ctx)
        if not isinstance(data, dict):
            self.fail(f"{path} must hold a JSON object, not {type(data).__name__}", param, ctx)
        return data


class StorageUrl(click.ParamType[str]):
    """A local folder or an fsspec URL (``s3://bucket/prefix``, ``memory://...``)."""

    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The URL as given; an empty one, or one that looks mistyped (``s3:/bucket``), is a usage error."""
        from darts_export.storage import url_problem

        url = str(value)
        if not url.strip():
            self.fail("empty; give a local folder or a URL such as s3://bucket/prefix", param, ctx)
        if (problem := url_problem(url)) is not None:
            self.fail(f"{url!r}: {problem}", param, ctx)
        return url


KEY_VALUE = KeyValue()
JSON_OBJECT_FILE = JsonObjectFile()
STORAGE_URL = StorageUrl()


# --- global options: merged into the invocation's Settings wherever they appear -------------------


def _settings(ctx: click.Context) -> Settings:
    return ctx.ensure_object(Settings)


def _set_json(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    _settings(ctx).as_json |= value


def _set_quiet(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    _settings(ctx).quiet |= value


def _add_verbose(ctx: click.Context, _: click.Parameter, value: int) -> None:
    _settings(ctx).verbose += value


def _add_option_pairs(ctx: click.Context, _: click.Parameter, value: tuple[tuple[str, Any], ...]) -> None:
    _settings(ctx).option_pairs.update(value)


def _add_option_file(ctx: click.Context, _: click.Parameter, value: dict[str, Any] | None) -> None:
    if value is not None:
        _settings(ctx).option_files.append(value)


_GLOBAL_OPTIONS = (
    click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print the result (manifest, report) as JSON on stdout.",
    ),
    click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_add_verbose,
        help="More log output on stderr (-v: per tile, -vv: per artifact).",
    ),
    click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_set_quiet,
        help="Only errors on stderr; no progress.",
    ),
    click.option(
        "--storage-option",
        type=KEY_VALUE,
        multiple=True,
        expose_value=False,
        callback=_add_option_pairs,
        help="An fsspec/s3fs option (repeatable), e.g. endpoint_url=http://127.0.0.1:9000 or "
        'client_kwargs=\'{"region_name": "eu-central-1"}\'; values are parsed as JSON when they parse. '
        "Without any, s3:// uses the standard AWS environment (AWS_PROFILE, AWS_ENDPOINT_URL, ...).",
    ),
    click.option(
        "--storage-options-file",
        type=JSON_OBJECT_FILE,
        expose_value=False,
        callback=_add_option_file,
        help="Storage options as a JSON object file (--storage-option values win).",
    ),
)


def global_options(func: F) -> F:
    """Declare the global options on a group or command; before or after the subcommand, they merge."""
    for option in reversed(_GLOBAL_OPTIONS):
        func = option(func)
    return func


def target_options(func: F) -> F:
    """``--overwrite/--no-overwrite`` and ``--fallback-dir`` of the commands that write an export."""
    func = click.option(
        "--fallback-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="A local folder to write to when OUT_DIR is unreachable (exit code 6); "
        "publish it later with `darts-export sync`.",
    )(func)
    return click.option(
        "--overwrite/--no-overwrite",
        default=True,
        show_default=True,
        help="Replace an existing export at OUT_DIR, or stop with exit code 5.",
    )(func)


def catalog_options(func: F) -> F:
    """``--collection`` and ``--href-base`` of the commands that write an export's STAC item."""
    func = click.option(
        "--href-base",
        metavar="URL",
        help="Public URL of the folder that holds the export folders (e.g. https://data.example.org/darts): "
        "the item's hrefs become URL/<export folder>/<file>. Default: relative hrefs (a portable folder).",
    )(func)
    return click.option(
        "--collection",
        default="darts",
        show_default=True,
        metavar="ID",
        help="The STAC collection the item names and links to (../collection.json); '' for none.",
    )(func)
