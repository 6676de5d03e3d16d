"""A throwaway PostgreSQL + PostGIS server for the pgstac tests.

``initdb`` into a fresh temporary folder, ``pg_ctl`` on a free loopback port (TCP only, no
socket file, no fsync), trust authentication; stopped and removed afterwards. PostgreSQL
refuses to run as root, so under root the server runs as the ``postgres`` system user
(``runuser``). When no PostgreSQL with PostGIS is installed, :func:`start_cluster` raises
:class:`PostgresUnavailableError` naming the command that provides it; ``.ci/run`` runs it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "apt-get install -y postgresql postgresql-15-postgis-3"
DSN_ENV = "DARTS_TEST_PGSTAC_DSN"
"""A DSN of an existing PostgreSQL + PostGIS database to use instead of a throwaway server."""

_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 40
"""


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server binaries with PostGIS on this machine."""


@dataclass(frozen=True)
class Cluster:
    """A running throwaway server: its DSN and how to stop it."""

    dsn: str
    folder: Path
    bindir: Path
    user_prefix: tuple[str, ...]

    def stop(self) -> None:
        """Stop the server at once and delete its folder."""
        try:
            subprocess.run(
                [*self.user_prefix, str(self.bindir / "pg_ctl"), "-D", str(self.folder / "db"), "-m", "immediate",
                 "-w", "stop"],
                check=False, capture_output=True, timeout=30,
            )  # fmt: skip
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _bindir() -> Path:
    candidates = [Path(p).resolve().parent for p in (shutil.which("initdb"),) if p]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    for bindir in candidates:
        bindir = bindir.resolve()
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise PostgresUnavailableError(f"no PostgreSQL server (initdb, pg_ctl) found; run: {INSTALL_HINT}")


def _check_postgis(bindir: Path) -> None:
    config = bindir / "pg_config"
    sharedir = (
        subprocess.run([str(config), "--sharedir"], capture_output=True, text=True, check=True).stdout.strip()
        if config.exists()
        else str(Path("/usr/share/postgresql") / bindir.parent.name)
    )
    if not (Path(sharedir) / "extension" / "postgis.control").exists():
        raise PostgresUnavailableError(f"PostgreSQL in {bindir} has no PostGIS extension; run: {INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_cluster() -> Cluster:
    """Start a fresh server; raise :class:`PostgresUnavailableError` when PostgreSQL + PostGIS are missing."""
    bindir = _bindir()
    _check_postgis(bindir)
    prefix: tuple[str, ...] = ()
    folder = Path(tempfile.mkdtemp(prefix="darts-pgstac-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError as exc:
            shutil.rmtree(folder)
            message = f"running as root and there is no 'postgres' user; run: {INSTALL_HINT}"
            raise PostgresUnavailableError(message) from exc
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ("runuser", "-u", "postgres", "--")
    db = folder / "db"
    port = _free_port()
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(db), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        with (db / "postgresql.conf").open("a") as conf:
            conf.write(_SETTINGS.format(port=port))
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(db), "-l", str(folder / "server.log"), "-w", "-t", "60",
             "start"],
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (folder / "server.log").read_text() if (folder / "server.log").exists() else ""
        output = getattr(exc, "stderr", b"") or b""
        Cluster("", folder, bindir, prefix).stop()
        raise RuntimeError(f"PostgreSQL did not start: {exc}\n{output.decode(errors='replace')}\n{log}") from exc
    return Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", folder, bindir, prefix)
