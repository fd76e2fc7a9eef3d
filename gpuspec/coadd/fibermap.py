"""Coadded FIBERMAP and per-exposure EXP_FIBERMAP (desispec ``coadd_fibermap`` semantics).

Host-side (NumPy) table work: one row per target in the coadded FIBERMAP, the
per-exposure columns in EXP_FIBERMAP with IN_COADD_B/R/Z and, when a
normalisation was run, COADD_NORM and SIGMA_COADD_NORM.
"""

from __future__ import annotations

import numpy as np

from .groups import ordered_unique, use_for_coadd

__all__ = ["coadd_fibermap", "fiberstatus_column", "PEREXP_COLUMNS"]

_MTL = ("PRIORITY", "SUBPRIORITY")
_EXP = ("NIGHT", "EXPID", "MJD", "TILEID", "EXPTIME")
_FA = ("PETAL_LOC", "DEVICE_LOC", "LOCATION", "FIBER", "FIBERSTATUS", "FIBERASSIGN_X",
       "FIBERASSIGN_Y", "LAMBDA_REF", "PLATE_RA", "PLATE_DEC")
_COORDS = ("NUM_ITER", "FIBER_X", "FIBER_Y", "DELTA_X", "DELTA_Y", "FIBER_RA", "FIBER_DEC")
_CFRAME = ("PSF_TO_FIBER_SPECFLUX",)
PEREXP_COLUMNS = ("TARGETID",) + _MTL + _EXP + _FA + _COORDS + _CFRAME + \
    ("IN_COADD_B", "IN_COADD_R", "IN_COADD_Z", "COADD_NORM", "SIGMA_COADD_NORM")
_TARGET_BITCOLS = ("CMX_TARGET",
                   "SV1_DESI_TARGET", "SV1_BGS_TARGET", "SV1_MWS_TARGET", "SV1_SCND_TARGET",
                   "SV2_DESI_TARGET", "SV2_BGS_TARGET", "SV2_MWS_TARGET", "SV2_SCND_TARGET",
                   "SV3_DESI_TARGET", "SV3_BGS_TARGET", "SV3_MWS_TARGET", "SV3_SCND_TARGET",
                   "DESI_TARGET", "BGS_TARGET", "MWS_TARGET", "SCND_TARGET")


def _mean_std_ra_dec(ras, decs):
    """Mean RA/Dec (deg) and their standard deviations (arcsec, RA with cos(dec)), RA wrap safe."""
    ras = np.asarray(ras, dtype=np.float64)
    decs = np.asarray(decs, dtype=np.float64)
    if np.max(ras) - np.min(ras) > 180:
        offset = 180.0
        ras = (ras + offset) % 360
    else:
        offset = 0.0
    mean_dec = np.mean(decs)
    std_dec = np.std(decs) * 3600
    mean_ra = (np.mean(ras) - offset + 360) % 360
    std_ra = np.std(ras) * np.cos(np.radians(mean_dec)) * 3600
    return mean_ra, std_ra, mean_dec, std_dec


def _build(names_types, n):
    return np.zeros(n, dtype=[(nm, dt, sh) for nm, dt, sh in names_types])


def fiberstatus_column(names) -> str:
    """``FIBERSTATUS`` (uncoadded input) or ``COADD_FIBERSTATUS`` (a coadd); ValueError else.

    Backends: host.
    """
    if "FIBERSTATUS" in names:
        return "FIBERSTATUS"
    if "COADD_FIBERSTATUS" in names:
        return "COADD_FIBERSTATUS"
    raise ValueError("no FIBERSTATUS nor COADD_FIBERSTATUS column in fibermap")


def coadd_fibermap(fibermap, onetile: bool = False, coadd_norm=None, sigma_coadd_norm=None):
    """Coadd a per-exposure fibermap.

    Parameters
    ----------
    fibermap : structured ndarray
        One row per input spectrum (needs TARGETID and FIBERSTATUS or COADD_FIBERSTATUS).
    onetile : bool
        Inputs come from one tile: keep FIBER/TILEID/... and add MEAN_FIBER_X/Y.
    coadd_norm, sigma_coadd_norm : (nrows,) arrays, optional
        Per-exposure normalisation factors and their errors (EXP_FIBERMAP columns).

    Returns
    -------
    (tfmap, exp_fibermap) : structured ndarrays
        One row per target (first-appearance order) and one per input row.

    Raises
    ------
    ValueError
        ``onetile`` with several TILEIDs, or no FIBERSTATUS column.

    Backends: host (NumPy table work).
    """
    fm = np.asarray(fibermap)
    names = list(fm.dtype.names)
    if onetile and "TILEID" in names:
        ntile = len(np.unique(fm["TILEID"]))
        if ntile != 1:
            raise ValueError(f"input has {ntile} tiles, but onetile=True")
    fskey = fiberstatus_column(names)
    fs = fm[fskey].astype(np.int64)
    inb, inr, inz = (use_for_coadd(fs, c) for c in "brz")
    efm = _exp_fibermap(fm, {"IN_COADD_B": inb, "IN_COADD_R": inr, "IN_COADD_Z": inz},
                        coadd_norm, sigma_coadd_norm)
    targets, first = ordered_unique(fm["TARGETID"])
    layout, mean_cols = _target_layout(fm, onetile)
    tf = _build(layout, targets.size)
    for c in names:
        oc = "COADD_FIBERSTATUS" if c == "FIBERSTATUS" else c
        if oc in tf.dtype.names:
            tf[oc] = fm[c][first]
    good = inb | inr | inz
    for i, jj in enumerate(_rows_of_targets(fm["TARGETID"], targets)):
        _reduce_target(tf, i, fm, jj, good[jj], fs[jj], mean_cols)
    if "NIGHT" not in names:
        tf["COADD_NUMNIGHT"] = -1
    if "TILEID" not in names:
        tf["COADD_NUMTILE"] = -1
    return tf, efm


def _exp_fibermap(fm, in_coadd: dict, coadd_norm, sigma_coadd_norm):
    """EXP_FIBERMAP: the per-exposure columns, IN_COADD_B/R/Z and the normalisation."""
    nrows = len(fm)
    names = fm.dtype.names
    extra = dict(in_coadd)
    if coadd_norm is not None:
        extra["COADD_NORM"] = np.asarray(coadd_norm, dtype=np.float32)
        extra["SIGMA_COADD_NORM"] = (np.zeros(nrows, np.float32) if sigma_coadd_norm is None
                                     else np.asarray(sigma_coadd_norm, dtype=np.float32))
    cols = [c for c in PEREXP_COLUMNS if c in names or c in extra]
    efm = _build([(c, (extra[c].dtype if c in extra else fm.dtype[c].base),
                   (() if c in extra else fm.dtype[c].shape)) for c in cols], nrows)
    for c in cols:
        efm[c] = extra[c] if c in extra else fm[c]
    return efm


_MEAN_COLS = ("DELTA_X", "DELTA_Y", "PSF_TO_FIBER_SPECFLUX")
_RMS_COLS = ("DELTA_X", "DELTA_Y")
_DROP = {"NIGHT", "EXPID", "MJD", "EXPTIME", "NUM_ITER", "PSF_TO_FIBER_SPECFLUX"}
_DROP_MULTITILE = {"TILEID", "FIBER", "FIBER_X", "FIBER_Y", "PRIORITY", "PETAL_RA", "PETAL_DEC",
                   "LAMBDA_REF", "FIBERASSIGN_X", "FIBERASSIGN_Y", "PETAL_LOC", "DEVICE_LOC",
                   "LOCATION"}


def _target_layout(fm, onetile: bool):
    """Columns of the coadded FIBERMAP (desispec ``coadd_fibermap`` order and types)."""
    names = list(fm.dtype.names)
    mean_cols = list(_MEAN_COLS) + (["FIBER_X", "FIBER_Y"] if onetile else [])
    layout = [[c, fm.dtype[c].base, fm.dtype[c].shape] for c in names]
    layout += [["COADD_NUMEXP", np.int16, ()], ["COADD_EXPTIME", np.float32, ()],
               ["COADD_NUMNIGHT", np.int16, ()], ["COADD_NUMTILE", np.int16, ()]]
    for k in mean_cols:
        if k in names:
            layout.append(["MEAN_" + k, np.float32, ()])
            if k in _RMS_COLS:
                layout.append(["RMS_" + k, np.float32, ()])
            layout = [x for x in layout if x[0] != k]
    if "FIBER_RA" in names and "FIBER_DEC" in names:
        layout += [["MEAN_FIBER_RA", np.float64, ()], ["STD_FIBER_RA", np.float32, ()],
                   ["MEAN_FIBER_DEC", np.float64, ()], ["STD_FIBER_DEC", np.float32, ()]]
        layout = [x for x in layout if x[0] not in ("FIBER_RA", "FIBER_DEC")]
    if "MJD" in names:
        for k in ("MIN_MJD", "MAX_MJD", "MEAN_MJD"):
            if k not in [x[0] for x in layout]:
                layout.append([k, np.float64, ()])
    for x in layout:
        if x[0] == "FIBERSTATUS":
            x[0] = "COADD_FIBERSTATUS"
    drop = _DROP if onetile else _DROP | _DROP_MULTITILE
    return [x for x in layout if x[0] not in drop], [k for k in mean_cols if k in names]


def _rows_of_targets(tids, targets):
    """Row indices of every target, in input order (host loop: metadata only)."""
    tindex = {t: i for i, t in enumerate(targets.tolist())}
    rows_of = [[] for _ in range(targets.size)]
    for r, t in enumerate(np.asarray(tids).tolist()):
        rows_of[tindex[t]].append(r)
    return [np.asarray(r) for r in rows_of]


def _reduce_target(tf, i, fm, jj, good, fs, mean_cols):
    """Per-target columns of row ``i`` from the input rows ``jj`` (``good``: usable)."""
    names = fm.dtype.names
    ngood = int(np.count_nonzero(good))
    tf["COADD_NUMEXP"][i] = ngood
    if ngood > 0:
        comp = good
        tf["COADD_FIBERSTATUS"][i] = np.bitwise_and.reduce(fs[good])
    else:
        comp = ~good
        tf["COADD_FIBERSTATUS"][i] = np.bitwise_or.reduce(fs)
    if "NIGHT" in names:
        tf["COADD_NUMNIGHT"][i] = len(np.unique(fm["NIGHT"][jj][good]))
    if "TILEID" in names:
        tf["COADD_NUMTILE"][i] = len(np.unique(fm["TILEID"][jj][good]))
    tf["COADD_EXPTIME"][i] = np.sum(fm["EXPTIME"][jj][good]) if "EXPTIME" in names else -1
    for k in mean_cols:
        vals = fm[k][jj][comp]
        tf["MEAN_" + k][i] = np.mean(vals)
        if k in _RMS_COLS:
            tf["RMS_" + k][i] = np.float32(np.sqrt(np.mean(vals ** 2)))
    if "FIBER_RA" in names and "FIBER_DEC" in names:
        _reduce_radec(tf, i, fm, jj, comp)
    if "MJD" in names:
        vals = fm["MJD"][jj][comp]
        tf["MIN_MJD"][i], tf["MAX_MJD"][i], tf["MEAN_MJD"][i] = \
            np.min(vals), np.max(vals), np.mean(vals)
    tnames = tf.dtype.names
    for k in ("FIBER_RA_IVAR", "FIBER_DEC_IVAR", "DELTA_X_IVAR", "DELTA_Y_IVAR"):
        if k in tnames:
            tf[k][i] = 1.0 / np.mean(1.0 / fm[k][jj][comp])
    for k in _TARGET_BITCOLS:
        if k in tnames:
            tf[k][i] = np.bitwise_or.reduce(fm[k][jj], axis=0)


def _reduce_radec(tf, i, fm, jj, comp):
    """MEAN/STD_FIBER_RA/DEC over the rows with a measured position (desispec's choice)."""
    gc = (fm["FIBER_RA"][jj] != 0) | (fm["FIBER_DEC"][jj] != 0)
    cc = gc if np.count_nonzero(gc) > 0 else ~gc
    ccc = comp & cc if np.count_nonzero(comp & cc) > 0 else cc
    mra, sra, mdec, sdec = _mean_std_ra_dec(fm["FIBER_RA"][jj][ccc], fm["FIBER_DEC"][jj][ccc])
    tf["MEAN_FIBER_RA"][i], tf["STD_FIBER_RA"][i] = mra, np.float32(sra)
    tf["MEAN_FIBER_DEC"][i], tf["STD_FIBER_DEC"][i] = mdec, np.float32(sdec)
