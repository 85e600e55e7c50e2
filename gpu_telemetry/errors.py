"""Named failures and the exit codes the commands map them to (sysexits.h numbers)."""

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOURCE_FAILED = 69  # EX_UNAVAILABLE: nvidia-smi or NVML missing, failing, hung, unparsable
EXIT_DATAERR = 65  # EX_DATAERR: the database refused a value; the file goes to spool/bad/
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a bug; only reached with a traceback under --debug
EXIT_CANT_CREATE = 73  # EX_CANTCREAT: a picture or report could not be written where asked
EXIT_IO = 74  # EX_IOERR: the spool itself could not be written
EXIT_SPOOLED = 75  # EX_TEMPFAIL: database unreachable, work kept on disk for later
EXIT_NO_PERMISSION = 77  # EX_NOPERM: the database role may not do this
EXIT_CONFIG = 78  # EX_CONFIG


class TelemetryError(Exception):
    """Base of the failures a command reports as one line and an exit code."""

    exit_code = EXIT_SOFTWARE


class ConfigError(TelemetryError):
    exit_code = EXIT_CONFIG


class SourceError(TelemetryError):
    """The GPU source (nvidia-smi, or NVML with GPU_SOURCE=nvml) could not give a reading.

    `kind` classifies the failure (gpu_lost, timeout, driver_mismatch, ...); `message` keeps
    the source's own words, folded to one line, so the event row shows what the driver said;
    `returncode` is nvidia-smi's exit status or NVML's return code (the same numbers: nvidia-smi
    exits with the NVML code of its failure).
    """

    exit_code = EXIT_SOURCE_FAILED

    def __init__(self, kind: str, message: str, returncode: int | None = None,
                 source: str = "nvidia-smi"):
        self.kind = kind
        self.message = message
        self.returncode = returncode
        self.source = source
        super().__init__(message)

    def describe(self) -> str:
        """One line: `nvidia-smi failed (gpu_lost, exit 15): GPU is lost ...`."""
        if self.returncode is None:
            code = ""
        elif self.source == "nvidia-smi":
            code = f", exit {self.returncode}"
        else:
            code = f", code {self.returncode}"
        return f"{self.source} failed ({self.kind}{code}): {self.message}"


class SpoolError(TelemetryError):
    exit_code = EXIT_IO


class OutputError(TelemetryError):
    """A PNG or report cannot be written where asked (a folder in the way, no permission, a
    full disk); the message names the path and what the system said."""

    exit_code = EXIT_CANT_CREATE


class DatabaseError(TelemetryError):
    """The database could not take the data; the caller keeps it on disk.

    Each subclass names one cause and the exit code a command reports for it; the loop tells
    them apart to say once, in its log, what to fix (docs/architecture.md, Errors).
    """

    exit_code = EXIT_SPOOLED
    #: The configuration key or command that fixes it, for the one-line hint.
    fix: str = ""


class DatabaseUnreachable(DatabaseError):
    """No answer: connection refused, a timeout, the server gone mid-way, a full disk there.
    Transient by nature: retrying later delivers."""

    exit_code = EXIT_SPOOLED


class SchemaMissing(DatabaseError):
    """The database answers but lacks a table or column we write: never initialised, or a
    migration not applied."""

    exit_code = EXIT_CONFIG
    fix = "run bin/init_db.sh"


class LoginRefused(DatabaseError):
    """The server refuses the login: wrong password or user, no such database, a PGPORT
    that is not a port."""

    exit_code = EXIT_CONFIG
    fix = "check PGUSER, PGPASSWORD, PGDATABASE and PGPORT in .env"


class PermissionDenied(DatabaseError):
    """Logged in, but the role may not write (no INSERT grant, a read-only role or server)."""

    exit_code = EXIT_NO_PERMISSION
    fix = "use the writer role as PGUSER, or create it: bin/init_db.sh --writer-role NAME"


class RejectedValue(DatabaseError):
    """The database refused one value (a constraint, an out-of-range number): retrying
    cannot deliver this sample, so flush quarantines it."""

    exit_code = EXIT_DATAERR


class StatusError(TelemetryError):
    """status.json cannot be written as asked: a tag, memo or run id it refuses (usage, exit 2)
    or a folder it cannot write to (exit 74)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        self.exit_code = exit_code
        super().__init__(message)
