"""Overscan branches not exercised by the reference runs: charge trails, PER_ROW with a large
OSTEP, raw-shaped darks."""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest

from conftest import require_reference
from gpuspec import backend
from gpuspec.io.util import parse_sec
from gpuspec.maskbits import ccdmask
from gpuspec.preproc import preproc
from gpuspec.preproc.overscan import amp_overscan, cosmic_trail_rows, overscan_right_of_data
from gpuspec.preproc.stats import clipped_stats_rows


def _raw():
    d = require_reference("caseA_preproc")
    raw, hdr = fitsio.read(os.path.join(d, "raw.fits"), 1, header=True)
    prim = fitsio.read_header(os.path.join(d, "raw.fits"), 0)
    return d, raw, {r["name"]: r["value"] for r in hdr.records()}, \
        {r["name"]: r["value"] for r in prim.records()}


def test_charge_trail_rows_replaced(xp):
    rng = np.random.default_rng(2)
    ny, nx = 200, 700
    raw = 1000 + rng.normal(0, 2, (ny, nx))
    ov = (slice(0, ny), slice(320, 350))        # overscan right of a left amp's active area
    data = (slice(0, ny), slice(20, 320))
    raw[80:82, 100] = 60000.0                   # big deposit in the 300 active columns
    raw[79:83, 320:350] += 12.0                 # its trail in the overscan
    levels, _ = clipped_stats_rows(xp.asarray(raw[ov]))
    bad = backend.to_host(cosmic_trail_rows(xp.asarray(raw), ov, data, levels))
    # rows 79..82 deviate by 12 ADU but only 80, 81 hold the deposit: those two, +/- 2 rows
    assert np.flatnonzero(bad).tolist() == [78, 79, 80, 81, 82, 83]
    res = amp_overscan(xp.asarray(raw), ov, data, per_row_allowed=True)
    assert res.badrows == 6 and res.method == "AVERAGE"
    # without the deposit the same overscan offset is kept (no trail detected)
    raw2 = raw.copy()
    raw2[80:82, 100] = 1000.0
    levels2, _ = clipped_stats_rows(xp.asarray(raw2[ov]))
    assert not backend.to_host(cosmic_trail_rows(xp.asarray(raw2), ov, data, levels2)).any()


@pytest.mark.parametrize("side", ["right", "left"])
def test_charge_trail_side_comes_from_datasec(side):
    """The active band searched for a deposit is beside the overscan on DATASEC's side
    (desispec's rule), wherever the amp sits on the CCD: here an amp whose overscan
    starts past nx/2 (right) or between nx/4 and nx/2 (left): a guess from the overscan's
    position (the former ``nx//4 < start < nx//2`` rule) looks on the wrong side."""
    rng = np.random.default_rng(3)
    ny, nx = 200, 400
    raw = 1000 + rng.normal(0, 2, (ny, nx))
    if side == "right":          # [data 0:340][overscan 340:370][30 spare columns]
        data, ov, hit = (slice(0, ny), slice(0, 340)), (slice(0, ny), slice(340, 370)), 300
    else:                        # [120 spare columns][overscan 120:150][data 150:400]
        data, ov, hit = (slice(0, ny), slice(150, 400)), (slice(0, ny), slice(120, 150)), 200
    assert overscan_right_of_data(data, ov) == (side == "right")
    raw[80:82, hit] = 60000.0
    raw[79:83, ov[1]] += 12.0
    levels, _ = clipped_stats_rows(raw[ov])
    bad = cosmic_trail_rows(raw, ov, data, levels)
    assert np.flatnonzero(bad).tolist() == [78, 79, 80, 81, 82, 83]


def test_per_row_with_large_step_sets_badreadnoise():
    d, raw, hdr, prim = _raw()
    r = raw.astype(np.int64)
    ys, _ = parse_sec(hdr["DATASECC"])
    r[ys.start + 70:ys.stop, :332] += 8         # 8 ADU jump in amp C (data, prescan, overscan)
    r = r.astype(np.int32)
    avg = preproc(r, hdr, prim, backend="numpy", cosmics=False)
    per = preproc(r, hdr, prim, backend="numpy", cosmics=False, use_overscan_row=True)
    assert avg.meta["OMETHC"] == "AVERAGE" and per.meta["OMETHC"] == "PER_ROW"
    assert per.meta["OSTEPC"] > 5
    cy, cx = parse_sec(hdr["CCDSECC"])
    assert np.all(per.mask[cy, cx] & ccdmask.BADREADNOISE)
    assert not np.any(avg.mask[cy, cx] & ccdmask.BADREADNOISE)
    # PER_ROW removes the jump: rows above/below it agree in the per-row image
    lo = np.median(per.pix[cy][60:70, cx])
    hi = np.median(per.pix[cy][72:82, cx])
    assert abs(hi - lo) < 3.0
    lo = np.median(avg.pix[cy][60:70, cx])
    hi = np.median(avg.pix[cy][72:82, cx])
    assert abs(hi - lo) > 8.0


def test_raw_shaped_dark_equals_trimmed_dark():
    d, raw, hdr, prim = _raw()
    dark = fitsio.read(os.path.join(d, "calib_dark.fits")).astype(np.float64)
    draw = np.zeros(raw.shape)
    for amp in "ABCD":
        dy, dx = parse_sec(hdr["DATASEC" + amp])
        cy, cx = parse_sec(hdr["CCDSEC" + amp])
        draw[dy, dx] = dark[cy, cx] / hdr["GAIN" + amp]      # ADU/s
    a = preproc(raw, hdr, prim, backend="numpy", dark=dark, cosmics=False)
    b = preproc(raw, hdr, prim, backend="numpy", dark=draw, cosmics=False)
    np.testing.assert_allclose(b.pix, a.pix, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(b.readnoise, a.readnoise, rtol=1e-12, atol=1e-12)
    # and the dark array (a rate) gives the same as the dark file
    c = preproc(raw, hdr, prim, backend="numpy", dark=os.path.join(d, "calib_dark.fits"),
                cosmics=False)
    np.testing.assert_allclose(c.pix, a.pix, rtol=0, atol=1e-4)
    # EXPTIME = 0: the dark is all zeros and not applied
    z = preproc(raw, hdr, {**prim, "EXPTIME": 0.0}, backend="numpy", dark=dark, cosmics=False)
    n = preproc(raw, hdr, prim, backend="numpy", cosmics=False)
    assert np.array_equal(z.pix, n.pix)
