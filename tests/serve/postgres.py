"""A private PostgreSQL server for the tests: initdb into a fresh folder, a free port on loopback, trust login.

Looks for Debian's ``postgresql`` package (``initdb`` and ``pg_ctl`` on ``PATH`` or in
``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root, so under root the cluster is made
and run by the unprivileged user ``nobody`` (through ``runuser``) in a folder it owns. Whatever cannot be
done raises :class:`Unavailable` with the reason, which the fixture turns into a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.serve.conftest import free_port

#: The cluster's superuser (trust login from loopback only) and the database every test copies.
USER = "pcbsiam"
#: A server time zone other than UTC, so that a timestamp read back in local time would show.
TIMEZONE = "America/New_York"
#: The user that runs the server when the tests run as root.
UNPRIVILEGED = "nobody"


class Unavailable(RuntimeError):
    """PostgreSQL cannot be run here; the message says why."""


def find_bin() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: on ``PATH``, else the newest ``/usr/lib/postgresql/*/bin``.

    Raises:
        Unavailable: neither place has both.
    """
    found = [shutil.which("initdb"), shutil.which("pg_ctl")]
    if all(found):
        return Path(found[0]).resolve().parent  # type: ignore[arg-type]
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in versions:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise Unavailable(
        "PostgreSQL's initdb and pg_ctl were found neither on PATH nor in /usr/lib/postgresql/*/bin: "
        "install Debian's postgresql package (.ci/run does so as root)"
    )


class PostgresServer:
    """A running private cluster; :meth:`create_database` gives each test its own database.

    Args:
        bindir: folder of ``initdb``, ``pg_ctl`` and ``postgres``.
        root: an empty folder for the cluster, its socket and its log (removed by :meth:`stop`).
    """

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.root = bindir, root
        self.data, self.log = root / "data", root / "server.log"
        self.port = 0
        self._as: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise Unavailable("running as root, and runuser is missing to run PostgreSQL as an unprivileged user")
            try:
                shutil.chown(root, UNPRIVILEGED)
            except (LookupError, OSError) as exc:
                raise Unavailable(f"running as root, and {root} cannot be given to user {UNPRIVILEGED}: {exc}") from exc
            self._as = [runuser, "-u", UNPRIVILEGED, "--"]

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a PostgreSQL program (as :data:`UNPRIVILEGED` under root) in the cluster's folder.

        Raises:
            Unavailable: the program is missing or ran past ``timeout`` seconds.
        """
        cmd = [*self._as, *args]
        try:
            return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"{Path(args[0]).name} could not be run: {exc}") from exc

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        """``pg_ctl`` on this cluster with its log, waiting at most 60 s for the action to complete."""
        pg_ctl = str(self.bindir / "pg_ctl")
        return self._run(pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", *args)

    def _tail(self, text: str = "") -> str:
        log = self.log.read_text(errors="replace") if self.log.is_file() else ""
        lines = [ln for ln in (text + "\n" + log).splitlines() if ln.strip()]
        return " | ".join(lines[-4:])[-600:]

    def start(self, tries: int = 3) -> None:
        """initdb (UTF-8, C locale, trust login for :data:`USER`), then ``pg_ctl start`` on a free port.

        Raises:
            Unavailable: initdb failed, or the server did not start on any of ``tries`` ports.
        """
        init = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        if init.returncode != 0:
            raise Unavailable(f"initdb failed (exit {init.returncode}): {self._tail(init.stderr)}")
        for _ in range(tries):
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c full_page_writes=off -c timezone={TIMEZONE} -c max_connections=60"
            )
            started = self._pg_ctl("-o", options, "start")
            if started.returncode == 0:
                return
        raise Unavailable(f"the PostgreSQL server did not start: {self._tail(started.stdout + started.stderr)}")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every open connection is dropped; same port, same data.

        Raises:
            Unavailable: the server did not come back.
        """
        done = self._pg_ctl("-m", "fast", "restart")
        if done.returncode != 0:
            raise Unavailable(f"the PostgreSQL server did not restart: {self._tail(done.stdout + done.stderr)}")

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server (psycopg 3 over TCP on loopback)."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name``; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; kill the postmaster if that fails; remove the folder."""
        try:
            if (self.data / "postmaster.pid").is_file():
                stopped = self._pg_ctl("-m", "fast", "stop")
                if stopped.returncode != 0 and (self.data / "postmaster.pid").is_file():
                    pid = int((self.data / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(0.5)
        except (OSError, ValueError, IndexError, Unavailable):
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server, stopped and removed on leaving (also on failure).

    The folder is made under the system temporary folder rather than pytest's (which only its owner may
    enter, and where the socket path could grow past its 107 bytes).

    Raises:
        Unavailable: PostgreSQL is missing or cannot be started here.
    """
    bindir = find_bin()
    root = Path(tempfile.mkdtemp(prefix="pcbsiam-pg-"))
    try:
        server = PostgresServer(bindir, root)
    except Unavailable:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        server.start()
        yield server
    finally:
        server.stop()
