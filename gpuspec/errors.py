"""Exceptions raised by gpuspec.

All input problems raise a subclass of :class:`GpuspecError` whose message names
the file, the HDU and/or the keyword at fault. :func:`describe` is the one mapping
of any exception to a one-line message and an exit status, used by every command
line (docs/reliability.md).
"""

from __future__ import annotations

__all__ = ["GpuspecError", "InputError", "MissingFileError", "MissingHDUError",
           "MissingKeywordError", "BadSectionError", "BadDataError", "UsageError", "LimitError",
           "OutputError", "StateError", "Terminated", "describe", "os_error_text",
           "handle_sigterm", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERNAL",
           "EXIT_INTERRUPTED", "EXIT_TERMINATED"]


class GpuspecError(Exception):
    """Base class of gpuspec errors."""


class InputError(GpuspecError, ValueError):
    """An input file or array is malformed or inconsistent."""

    def __init__(self, message: str, path: str | None = None, hdu: str | int | None = None,
                 keyword: str | None = None):
        where = []
        if path is not None:
            where.append(f"file {path}")
        if hdu is not None:
            where.append(f"HDU {hdu}")
        if keyword is not None:
            where.append(f"keyword {keyword}")
        full = f"{', '.join(where)}: {message}" if where else message
        super().__init__(full)
        self.path, self.hdu, self.keyword = path, hdu, keyword


class MissingFileError(InputError, FileNotFoundError):
    """A required input file does not exist."""


class MissingHDUError(InputError, KeyError):
    """A required HDU is missing from a FITS file."""

    def __str__(self) -> str:  # KeyError would add quotes
        return self.args[0]


class MissingKeywordError(InputError, KeyError):
    """A required header keyword is missing."""

    def __str__(self) -> str:
        return self.args[0]


class BadSectionError(InputError):
    """A FITS section string (e.g. BIASSECA) cannot be parsed or is out of range."""


class BadDataError(InputError):
    """Array data are invalid (NaN, wrong shape, negative exposure time, ...)."""


class UsageError(GpuspecError, ValueError):
    """A bad command line or option value (exit status 2); the message names the option."""


class LimitError(InputError):
    """A size derived from the input exceeds a documented limit (:mod:`gpuspec.limits`)."""


class OutputError(GpuspecError, OSError):
    """An output cannot be written (folder not writable, disk full, a directory in the way).

    The message names the output file and the real cause (``No space left on device``,
    ``File too large`` for ``ulimit -f``, ``Permission denied``, ...).
    """

    def __init__(self, message: str, path: str | None = None):
        super().__init__(f"cannot write {path}: {message}" if path else message)
        self.path = path

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return self.args[0]


class StateError(GpuspecError, RuntimeError):
    """The state database of a production cannot be read or written."""


class Terminated(BaseException):
    """SIGTERM (a batch system's time limit, ``kill``) turned into an exception, like Ctrl-C.

    Raised by the handler that :func:`handle_sigterm` installs, so that atomic writes
    remove their temporary files and running tasks are recorded before the exit (143).
    """


#: Exit statuses of every gpuspec command (docs/reliability.md).
EXIT_OK = 0           #: success (gpuspec-run: every task done)
EXIT_FAILED = 1       #: bad or inconsistent input, output not writable, a task failed
EXIT_USAGE = 2        #: bad command line / option value; gpuspec-run: cannot start
EXIT_INTERNAL = 3     #: an unexpected error (a bug in gpuspec): one line, -v for the traceback
EXIT_INTERRUPTED = 130  #: Ctrl-C (SIGINT)
EXIT_TERMINATED = 143   #: SIGTERM

_ERRNO_HINTS = {
    "ENOSPC": "no space left on device (disk full)",
    "EDQUOT": "disk quota exceeded",
    "EFBIG": "file too large (file-size limit, ulimit -f?)",
    "EROFS": "read-only file system",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "EISDIR": "is a directory",
    "ENOTDIR": "a component of the path is not a directory",
    "ENOENT": "no such file or directory",
    "EEXIST": "file exists",
    "ENAMETOOLONG": "file name too long",
    "EMFILE": "too many open files",
    "EIO": "input/output error",
}


def os_error_text(exc: OSError) -> str:
    """``PATH: reason`` for an OSError (the file names and the errno in words).

    Backends: host only (plain values).
    """
    import errno as _errno

    name = _errno.errorcode.get(exc.errno or -1, "")
    reason = _ERRNO_HINTS.get(name) or (exc.strerror or str(exc) or type(exc).__name__)
    files = [f for f in (exc.filename, exc.filename2) if f is not None]
    if not files:
        return reason if exc.errno else (_first_line(str(exc)) or type(exc).__name__)
    return f"{' -> '.join(str(f) for f in files)}: {reason}"


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit status of any exception reaching a command line.

    The one mapping of gpuspec (every entry point uses it, docs/reliability.md):
    GpuspecError -> its message, 1 (UsageError: 2); OSError -> the file and the
    reason, 1; MemoryError -> 1; KeyboardInterrupt -> 130; Terminated -> 143;
    anything else is a bug: ``internal error``, 3.

    Backends: host only (plain values).
    """
    import sqlite3

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)", EXIT_INTERRUPTED
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM)", EXIT_TERMINATED
    if isinstance(exc, UsageError):
        return _one_line(str(exc)), EXIT_USAGE
    if isinstance(exc, GpuspecError):
        return _one_line(str(exc)), EXIT_FAILED
    if isinstance(exc, OSError):
        return _one_line(os_error_text(exc)), EXIT_FAILED
    if isinstance(exc, MemoryError):
        return (f"out of memory ({_first_line(str(exc)) or 'MemoryError'}); an input "
                "probably asks for too much (see docs/reliability.md, limits)"), EXIT_FAILED
    if isinstance(exc, sqlite3.Error):
        return f"state database error: {_first_line(str(exc))}", EXIT_FAILED
    if isinstance(exc, RecursionError):
        return "input nested too deeply (RecursionError)", EXIT_FAILED
    return (f"internal error: {type(exc).__name__}: {_first_line(str(exc))} (a bug in "
            "gpuspec: run again with -v for the traceback and report it)"), EXIT_INTERNAL


#: Longest message printed (a 10 MB path in a manifest is shown cut in the middle).
MAX_MESSAGE = 2000


def _one_line(text: str) -> str:
    """Multi-line messages joined with '; ' (an error is always one line), at most
    :data:`MAX_MESSAGE` characters."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    out = "; ".join(lines)
    if len(out) > MAX_MESSAGE:
        half = MAX_MESSAGE // 2 - 20
        out = f"{out[:half]} ...[{len(out) - 2 * half} characters]... {out[-half:]}"
    return out


def handle_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (no-op elsewhere).

    Backends: host only.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def _raise(signum, frame):
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, _raise)
    except (ValueError, OSError):  # pragma: no cover - not the main thread / no signals
        pass
