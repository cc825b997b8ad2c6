"""A PostgreSQL server for the test session's catalogs (`pytest --catalog postgresql`).

`MMOPS_TEST_POSTGRES_URL` names a server to use (a role that may create databases); otherwise a throw-away
cluster is made with the machine's PostgreSQL binaries (Debian's `postgresql` package: `make test` installs it)
in a temporary folder, listening on loopback only, and removed at the end. Every test project gets a
database of its own, named in the project's `.env`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

DRIVER = "postgresql+psycopg"


def _bindir() -> Path | None:
    """The server binaries: on PATH, from pg_config, or Debian's /usr/lib/postgresql/<version>/bin."""
    if found := shutil.which("initdb"):
        return Path(found).parent
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


@dataclass
class PostgresServer:
    admin_url: URL
    _stop: list[str] | None = None
    _tmp: Path | None = None
    _databases: list[str] = field(default_factory=list)

    @classmethod
    def start(cls) -> PostgresServer:
        if url := os.environ.get("MMOPS_TEST_POSTGRES_URL"):
            return cls(make_url(url).set(drivername=DRIVER))
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine: install Debian's "
                               "`postgresql` package, or set MMOPS_TEST_POSTGRES_URL to a server")
        tmp = Path(tempfile.mkdtemp(prefix="mmops-pg-"))
        # PostgreSQL refuses to run as root: as root, run it as the package's `postgres` user
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_user:
            shutil.chown(tmp, "postgres")
        data, port = tmp / "data", free_port()
        # the session's own server outlives every test (pg_ctl hands it to init): without the mark that
        # the leftover-process check (conftest) looks for, it is not taken for a test's leftover
        env = {k: v for k, v in os.environ.items() if k != "MMOPS_TEST_SESSION"}
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "mmops",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, env=env)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off -c max_connections=200"
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "server.log"), "-o",
                        options, "-w", "start"], check=True, capture_output=True, env=env)
        stop = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
        return cls(URL.create(DRIVER, username="mmops", host="127.0.0.1", port=port, database="postgres"),
                   stop, tmp)

    def create_database(self, name: str) -> str:
        """A fresh, empty database; its URL."""
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        self._databases.append(name)
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def stop(self) -> None:
        if self._stop is None:  # a server of the user's: drop what the session made
            engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                for name in self._databases:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            engine.dispose()
            return
        subprocess.run(self._stop, capture_output=True)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
