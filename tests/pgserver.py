"""A throwaway real PostgreSQL server for the test suite (docs/architecture.md, Tests).

`initdb` + `pg_ctl` in a temporary folder under /tmp, on a free TCP port of 127.0.0.1, trust
authentication, durability switched off for speed. PostgreSQL refuses to run as root, so when
the suite runs as root the folder belongs to the `postgres` user and both programs run through
`runuser -u postgres --`.

When the environment names an existing server (TEST_PGHOST, optional TEST_PGPORT, TEST_PGUSER,
TEST_PGPASSWORD) that server is used instead; it cannot be stopped or restarted by the tests.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
START_TIMEOUT_SEC = 60


class PgServerError(RuntimeError):
    """The test server could not be found, initialised, started or stopped."""


def find_pg_bindir() -> Path:
    """The folder holding both `initdb` and `pg_ctl`: PATH first, then Debian's versioned dirs.

    Debian and Ubuntu keep them in /usr/lib/postgresql/<version>/bin, off PATH.
    """
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        bindir = Path(pg_ctl).resolve().parent
        if (bindir / "initdb").is_file():
            return bindir
    candidates = []
    for bindir in DEBIAN_PG_ROOT.glob("*/bin"):
        version = bindir.parent.name
        if (bindir / "pg_ctl").is_file() and (bindir / "initdb").is_file():
            key = tuple(int(part) for part in re.findall(r"\d+", version))
            candidates.append((key, bindir))
    if not candidates:
        raise PgServerError(
            "initdb/pg_ctl not found on PATH nor under /usr/lib/postgresql/*/bin; "
            "install PostgreSQL (apt-get install postgresql) or set TEST_PGHOST"
        )
    return max(candidates)[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env() -> dict[str, str]:
    # PGPORT, PGDATA and friends in the caller's environment must not steer initdb/pg_ctl.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


class PgServer:
    def __init__(self) -> None:
        self.external = bool(os.environ.get("TEST_PGHOST"))
        self._running = False
        self._tmpdir: Path | None = None
        if self.external:
            self.host = os.environ["TEST_PGHOST"]
            self._port = int(os.environ.get("TEST_PGPORT") or 5432)
            self.user = os.environ.get("TEST_PGUSER") or "postgres"
            self.password = os.environ.get("TEST_PGPASSWORD") or None
        else:
            self.host = "127.0.0.1"
            self._port = free_port()
            self.user = "postgres"
            self.password = None
            self._bindir = find_pg_bindir()
            self._as_root = os.geteuid() == 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self.external or self._running

    @property
    def can_restart(self) -> bool:
        return not self.external

    @property
    def datadir(self) -> Path:
        assert self._tmpdir is not None
        return self._tmpdir / "data"

    @property
    def logfile(self) -> Path:
        assert self._tmpdir is not None
        return self._tmpdir / "server.log"

    def libpq_env(self, dbname: str = "postgres") -> dict[str, str]:
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": dbname,
        }
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        if self._as_root:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        result = subprocess.run(argv, cwd=self._tmpdir, env=_server_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            log = ""
            if self._tmpdir is not None and self.logfile.is_file():
                log = "\n--- server log ---\n" + self.logfile.read_text(errors="replace")[-4000:]
            raise PgServerError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                                f"{result.stdout}{log}")
        return result

    def _init(self) -> None:
        self._tmpdir = Path(tempfile.mkdtemp(prefix="gpu-telemetry-pg-", dir="/tmp"))
        if self._as_root:
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PgServerError(
                    f"running as root needs a {SERVER_USER!r} user to run PostgreSQL as"
                ) from None
            os.chown(self._tmpdir, account.pw_uid, account.pw_gid)
        self._run(self._bindir / "initdb", "-D", str(self.datadir), "-A", "trust",
                  "-U", self.user, "--no-sync", "-E", "UTF8", "--locale=C")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self._tmpdir}'",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
            "max_connections": "100",
            "log_min_messages": "warning",
        }
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# gpu-telemetry test server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        atexit.register(self._atexit)

    def start(self) -> PgServer:
        if self.external or self._running:
            return self
        if self._tmpdir is None:
            self._init()
        self._run(self._bindir / "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile),
                  "-w", "-t", str(START_TIMEOUT_SEC), "start")
        self._running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if mode not in ("fast", "immediate", "smart"):
            raise ValueError(f"unknown stop mode {mode!r}")
        if self.external:
            raise PgServerError("an external test server (TEST_PGHOST) cannot be stopped")
        if not self._running:
            return
        self._run(self._bindir / "pg_ctl", "-D", str(self.datadir), "-m", mode, "-w",
                  "-t", str(START_TIMEOUT_SEC), "stop")
        self._running = False

    def require_password_for(self, group: str) -> None:
        """Members of role `group` must log in over TCP with a SCRAM password (the rest keep
        trust): for tests of passwords, .pgpass and roles. The group role must exist."""
        if self.external:
            raise PgServerError("an external test server (TEST_PGHOST) is not reconfigured")
        hba = self.datadir / "pg_hba.conf"
        line = f"host all +{group} 127.0.0.1/32 scram-sha-256\n"
        text = hba.read_text()
        if line not in text:
            hba.write_text(line + text)
        self._run(self._bindir / "pg_ctl", "-D", str(self.datadir), "reload")

    def restart(self) -> None:
        if self.external:
            raise PgServerError("an external test server (TEST_PGHOST) cannot be restarted")
        self.stop()
        self.start()

    def cleanup(self) -> None:
        if self.external:
            return
        if self._running:
            with contextlib.suppress(PgServerError):
                self.stop("immediate")
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _atexit(self) -> None:
        # An interrupted session (Ctrl-C, crash) must not leave a postmaster behind.
        self.cleanup()

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
