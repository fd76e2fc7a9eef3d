"""Row grouping of spectra by target: padded (ntarget, nexp) index tables.

Coadds are vectorised across targets by gathering the rows of each target into
a padded ``(ntarget, nmax)`` table. Padding entries point at a row index equal
to ``nrows`` (an all-zero row appended by :func:`gather_rows`) and are flagged
invalid, so they contribute nothing to any sum.
"""

from __future__ import annotations

import numpy as np

from ..maskbits import fibermask

__all__ = ["ordered_unique", "target_index_table", "gather_rows", "use_for_coadd",
           "nonamp_bad_fiberstatus"]


def ordered_unique(values):
    """Unique values in order of first appearance, and the index of each first appearance.

    Backends: host (numpy).
    """
    values = np.asarray(values)
    _, first = np.unique(values, return_index=True)
    first = np.sort(first)
    return values[first], first


def nonamp_bad_fiberstatus() -> int:
    """FIBERSTATUS bits that exclude an exposure from any coadd (desispec
    ``get_all_nonamp_fiberbitmask_val``).

    Backends: host.
    """
    bits = 0
    for name in ("BROKENFIBER", "MISSINGPOSITION", "BADPOSITION", "BADFIBER", "BADTRACE",
                 "BADARC", "BADFLAT", "MANYBADCOL", "MANYREJECTED"):
        try:
            bits |= fibermask.mask(name)
        except AttributeError:  # MANYBADCOL is not defined in this desispec version
            pass
    return bits


def use_for_coadd(fiberstatus, band: str):
    """Boolean array: exposures usable for a coadd of ``band`` (b, r, z or a combination).

    Mirrors desispec ``use_for_coadd``: the non-amplifier bad bits, plus BADAMPB/R/Z
    for the cameras in ``band``.

    Backends: host (numpy).
    """
    bits = nonamp_bad_fiberstatus()
    for c, name in (("b", "BADAMPB"), ("r", "BADAMPR"), ("z", "BADAMPZ")):
        if c in band.lower():
            bits |= fibermask.mask(name)
    return (np.asarray(fiberstatus).astype(np.int64) & bits) == 0


def target_index_table(targetids, targets, use=None):
    """Padded table of the row indices of each target.

    Parameters
    ----------
    targetids : (nrows,) array
        TARGETID of every row.
    targets : (ntarget,) array
        Targets, in output order.
    use : (nrows,) bool, optional
        Rows to include (default all).

    Returns
    -------
    idx : (ntarget, nmax) int64
        Row indices in input order; padding = nrows.
    valid : (ntarget, nmax) bool

    Backends: host (numpy); the tables are uploaded by the callers.
    """
    targetids = np.asarray(targetids)
    nrows = targetids.size
    order = np.argsort(targets, kind="stable")
    pos = np.searchsorted(targets[order], targetids)
    pos = np.clip(pos, 0, max(len(targets) - 1, 0))
    tindex = order[pos] if len(targets) else np.zeros(nrows, int)
    ok = (targets[tindex] == targetids) if len(targets) else np.zeros(nrows, bool)
    if use is not None:
        ok &= np.asarray(use, bool)
    rows = np.nonzero(ok)[0]
    t = tindex[rows]
    srt = np.argsort(t, kind="stable")
    rows, t = rows[srt], t[srt]
    counts = np.bincount(t, minlength=len(targets))
    nmax = int(counts.max()) if counts.size else 0
    start = np.concatenate([[0], np.cumsum(counts)[:-1]]) if counts.size else np.zeros(0, int)
    slot = np.arange(rows.size) - start[t]
    idx = np.full((len(targets), max(nmax, 1)), nrows, dtype=np.int64)
    idx[t, slot] = rows
    valid = idx < nrows
    return idx, valid


def gather_rows(a, idx, xp):
    """``a[idx]`` with index ``nrows`` meaning a zero row. ``a`` is (nrows, ...); ``idx`` a
    host array or an array of ``a``'s backend. No host synchronisation. Backends: numpy, cupy."""
    n = a.shape[0]
    if xp is np or not isinstance(idx, np.ndarray):
        ii = idx          # already on the backend of ``a`` (no upload)
    else:
        ii = xp.asarray(idx)
    out = a[xp.clip(ii, 0, max(n - 1, 0))]
    pad = (ii >= n).reshape(ii.shape + (1,) * (out.ndim - ii.ndim))
    # a where, not a boolean-mask assignment: that would synchronise on cupy
    return xp.where(pad, xp.zeros((), dtype=out.dtype), out)
