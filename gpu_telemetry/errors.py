"""Named failures and the exit codes the commands map them to (sysexits.h numbers)."""

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOURCE_FAILED = 69  # EX_UNAVAILABLE: nvidia-smi missing, failing, hung or unparsable
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
    """nvidia-smi could not give a reading.

    `kind` classifies the failure (gpu_lost, timeout, driver_mismatch, ...); `message` keeps
    nvidia-smi's own words, folded to one line, so the event row shows what the driver said.
    """

    exit_code = EXIT_SOURCE_FAILED

    def __init__(self, kind: str, message: str, returncode: int | None = None):
        self.kind = kind
        self.message = message
        self.returncode = returncode
        super().__init__(message)


class SpoolError(TelemetryError):
    exit_code = EXIT_IO


class OutputError(TelemetryError):
    """A PNG or report cannot be written where asked (a folder in the way, no permission, a
    full disk); the message names the path and what the system said."""

    exit_code = EXIT_CANT_CREATE


class DatabaseUnavailable(TelemetryError):
    """The database could not take the data; the caller keeps it on disk."""

    exit_code = EXIT_SPOOLED


class StatusError(TelemetryError):
    """status.json cannot be written as asked: a tag, memo or run id it refuses (usage, exit 2)
    or a folder it cannot write to (exit 74)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        self.exit_code = exit_code
        super().__init__(message)
