"""Accounting of the emulated device: host synchronisations (with their call sites),
bytes moved each way, uploads, and live/peak device memory.

One process-wide :data:`LEDGER`. ``with counting() as rec:`` gives the figures of a block.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import weakref

import numpy as np

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
#: frames in these files are helpers, not call sites (backend.to_host / to_device)
_SKIP_FILES = {os.path.join(os.path.dirname(os.path.dirname(_PKG_DIR)), "backend.py")}


class DeviceSynchronized(RuntimeError):
    """Raised, as ``cupyx.DeviceSynchronized``, when a synchronisation happens inside
    ``cupyx.allow_synchronize(False)`` (or :func:`forbid_sync`)."""


def call_site(skip_dirs=(_PKG_DIR,)) -> str:
    """``file:line (function)`` of the first frame outside the emulation package."""
    f = sys._getframe(1)
    while f is not None and (os.path.dirname(os.path.abspath(f.f_code.co_filename)) in skip_dirs
                             or os.path.abspath(f.f_code.co_filename) in _SKIP_FILES):
        f = f.f_back
    if f is None:  # pragma: no cover
        return "?"
    fn = f.f_code.co_filename
    for root in (os.getcwd(),):
        if fn.startswith(root + os.sep):
            fn = fn[len(root) + 1:]
    return f"{fn}:{f.f_lineno} ({f.f_code.co_name})"


class Ledger:
    """Counters of the emulated device (see :func:`snapshot` for the keys)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tracked: dict[int, int] = {}
        self.live_bytes = 0
        self.reset()

    def reset(self):
        """Zero every counter; peak memory restarts from the memory live now."""
        self.syncs = collections.Counter()          # (kind, site) -> count
        self.d2h_bytes = 0
        self.h2d_bytes = 0
        self.uploads = collections.Counter()        # site -> count of host->device copies
        self.peak_bytes = self.live_bytes
        self.allow_sync = True

    # ---- events
    def sync(self, kind: str, nbytes: int = 0):
        site = call_site()
        with self._lock:
            self.syncs[(kind, site)] += 1
            self.d2h_bytes += int(nbytes)
        if not self.allow_sync:
            raise DeviceSynchronized(f"device synchronisation ({kind}) at {site} while "
                                     "synchronisation is not allowed")

    def upload(self, nbytes: int):
        site = call_site()
        with self._lock:
            self.uploads[site] += 1
            self.h2d_bytes += int(nbytes)

    def track(self, a: np.ndarray):
        """Count the buffer under ``a`` as device memory until it is freed."""
        b = a
        while isinstance(b.base, np.ndarray):
            b = b.base
        key = id(b)
        if key in self._tracked:
            return
        n = int(b.nbytes)
        with self._lock:
            self._tracked[key] = n
            self.live_bytes += n
            if self.live_bytes > self.peak_bytes:
                self.peak_bytes = self.live_bytes
        weakref.finalize(b, self._free, key)

    def _free(self, key):
        with self._lock:
            n = self._tracked.pop(key, 0)
            self.live_bytes -= n

    # ---- reports
    @property
    def nsync(self) -> int:
        return sum(self.syncs.values())

    @property
    def nupload(self) -> int:
        return sum(self.uploads.values())

    def snapshot(self) -> dict:
        """A plain dict: ``syncs`` (total), ``sync_sites`` ({"kind @ site": n}),
        ``d2h_bytes``, ``h2d_bytes``, ``uploads`` (count), ``upload_sites``,
        ``peak_bytes`` (since the last reset) and ``live_bytes``."""
        return dict(syncs=self.nsync,
                    sync_sites={f"{k} @ {s}": n for (k, s), n in self.syncs.items()},
                    d2h_bytes=self.d2h_bytes, h2d_bytes=self.h2d_bytes,
                    uploads=self.nupload, upload_sites=dict(self.uploads),
                    peak_bytes=self.peak_bytes, live_bytes=self.live_bytes)


LEDGER = Ledger()


class Record(dict):
    """Figures of a :func:`counting` block (a dict, filled when the block ends)."""

    def sites(self) -> str:
        lines = [f"  {n:5d}  {k}" for k, n in sorted(self.get("sync_sites", {}).items(),
                                                     key=lambda kv: -kv[1])]
        lines += [f"  {n:5d}  upload @ {k}" for k, n in sorted(self.get("upload_sites", {}).items(),
                                                               key=lambda kv: -kv[1])]
        return "\n".join(lines)


@contextlib.contextmanager
def counting():
    """``with counting() as rec:`` → ``rec`` holds :meth:`Ledger.snapshot` of the block;
    peak memory is the peak above the memory live when the block started."""
    import gc

    gc.collect()
    rec = Record()
    LEDGER.reset()
    base = LEDGER.live_bytes
    try:
        yield rec
    finally:
        snap = LEDGER.snapshot()
        snap["peak_bytes"] = snap["peak_bytes"] - base
        snap["live_bytes_start"] = base
        rec.update(snap)


@contextlib.contextmanager
def forbid_sync():
    """Any synchronisation inside the block raises :class:`DeviceSynchronized`."""
    old = LEDGER.allow_sync
    LEDGER.allow_sync = False
    try:
        yield
    finally:
        LEDGER.allow_sync = old
