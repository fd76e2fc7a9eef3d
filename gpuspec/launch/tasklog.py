"""Per-task log files: ``PROD/run/logs/{step}/{task}.log``.

While a task runs, :func:`task_log` sends Python logging and ``sys.stdout``/
``sys.stderr`` of the process to the task's own file (appending, one header
per attempt), so that many ranks never write one file and the terminal stays
quiet. With ``tee=True`` (``gpuspec retry``) the output also reaches the terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sys
import time

from .db import run_dir

__all__ = ["log_path", "task_log"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_path(production: str, step: str, task: str) -> str:
    """Log file of one task.

    Backends: host only.
    """
    return os.path.join(run_dir(production), "logs", step, f"{task}.log")


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


@contextlib.contextmanager
def task_log(path: str, header: str = "", tee: bool = False, level: int = logging.INFO):
    """Route logging and stdout/stderr to ``path`` for the duration of the block.

    Parameters
    ----------
    path : str
        Log file (created with its folder; appended to).
    header : str
        First line written for this attempt.
    tee : bool
        Also write to the original ``sys.stdout``.
    level : int
        Logging level of the root logger during the task.

    Yields
    ------
    file
        The open log file.

    Backends: host only.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = open(path, "a", buffering=1, encoding="utf-8")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    f.write(f"==== {stamp} {socket.gethostname()} pid {os.getpid()} {header}\n")
    root = logging.getLogger()
    handler = logging.StreamHandler(f)
    handler.setFormatter(logging.Formatter(_FORMAT))
    old_level = root.level
    old_handlers = list(root.handlers)
    out = _Tee(f, sys.__stdout__ if sys.stdout is None else sys.stdout) if tee else f
    handler_tee = None
    try:
        # only this task's file (and the terminal when teeing) get records
        for h in old_handlers:
            root.removeHandler(h)
        root.addHandler(handler)
        if tee:
            handler_tee = logging.StreamHandler(sys.stdout)
            handler_tee.setFormatter(logging.Formatter(_FORMAT))
            root.addHandler(handler_tee)
        root.setLevel(level)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            yield f
    finally:
        root.removeHandler(handler)
        if handler_tee is not None:
            root.removeHandler(handler_tee)
        for h in old_handlers:
            root.addHandler(h)
        root.setLevel(old_level)
        f.close()
