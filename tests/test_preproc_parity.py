"""Parity of gpuspec.preproc with desispec on every run of shared/reference caseA_preproc.

Acceptance gates (issue 3): IMAGE, IVAR, READNOISE to a relative 1e-5 (absolute 1e-3 e-
near zero); MASK identical on >= 99.99% of the pixels and COSMIC bits identical;
OVERSCN*/OBSRDN* to 1e-4.

Regression bounds (issue 15), a few orders of magnitude tighter, so that a real regression
shows long before a gate is reached: the largest |gpuspec - desispec| of each plane and of
the header values may not exceed :data:`REGRESSION_MAX_ABS`, and MASK must be identical.
Achieved on numpy (every run): IMAGE 0, IVAR 2.2e-11 (relative 2.2e-10), READNOISE 7.0e-9 e-
(relative 1.1e-10; desispec computes the dark noise in float32), header values 0, masks
identical. The bounds leave ~10x for other BLAS/LAPACK builds and reduction orders
(float64 sums of up to ~1e5 e- differ by ~1e-11). Runs on numpy, and on cupy where a GPU
is usable.
"""

from __future__ import annotations

import functools
import json
import os

import fitsio
import numpy as np
import pytest

from conftest import require_reference
from gpuspec import backend
from gpuspec.maskbits import ccdmask
from gpuspec.preproc import preproc

CASE = "caseA_preproc"
RUNS = ("calib_cosmic", "calib_nocosmic", "nocalib_cosmic", "calib_cosmic_orsec")

#: Regression bounds: largest allowed |gpuspec - desispec| per plane (e-, or ivar units) and
#: for the numeric header values (achieved: 0, 2.2e-11, 7.0e-9, 0; see the module docstring).
REGRESSION_MAX_ABS = {"IMAGE": 1e-9, "IVAR": 2e-10, "READNOISE": 1e-7, "header": 1e-9}


@functools.lru_cache(maxsize=None)
def _inputs():
    d = require_reference(CASE)
    raw, hdr = fitsio.read(os.path.join(d, "raw.fits"), 1, header=True)
    prim = fitsio.read_header(os.path.join(d, "raw.fits"), 0)
    with open(os.path.join(d, "params.json")) as f:
        params = json.load(f)
    cal = {n: fitsio.read(os.path.join(d, f"calib_{n}.fits")) for n in
           ("bias", "dark", "pixflat", "mask")}
    return d, raw, hdr, prim, params, cal


def _kwargs(run: str) -> dict:
    d, raw, hdr, prim, params, cal = _inputs()
    kw = params["runs"][run]["kwargs_described"]
    out = {}
    for name in ("bias", "dark", "pixflat", "mask"):
        spec = kw[name]
        if spec is False:
            continue
        kind, fn = spec.split(":", 1)
        if kind == "FILE":
            out[name] = os.path.join(d, fn)
        else:
            a = cal[name]
            out[name] = a.astype(np.float64) if a.dtype.kind == "f" else a.copy()
    out["cosmics"] = not kw["nocosmic"]
    out["use_overscan_row"] = bool(kw.get("use_overscan_row", False))
    return out


@functools.lru_cache(maxsize=None)
def _run(run: str, backend_name: str):
    d, raw, hdr, prim, params, cal = _inputs()
    img = preproc(raw, hdr, prim, backend=backend_name, **_kwargs(run))
    return img


def _reference(run: str):
    d, raw, hdr, prim, params, cal = _inputs()
    fn = os.path.join(d, params["runs"][run]["output"])
    arrays = {"MASK": fitsio.read(fn, "MASK")}
    # calib_nocosmic stores only MASK: its IMAGE/IVAR/READNOISE equal calib_cosmic's
    src = fn if run != "calib_nocosmic" else os.path.join(d, "preproc_calib_cosmic.fits")
    for ext in ("IMAGE", "IVAR", "READNOISE"):
        arrays[ext] = fitsio.read(src, ext)
    return arrays, params["runs"][run]


def _close(got, ref, rel=1e-5, atol=1e-3):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape
    diff = np.abs(got - ref)
    bad = (diff > atol) & (diff > rel * np.abs(ref))
    return int(bad.sum()), float(diff.max())


@pytest.mark.parametrize("run", RUNS)
def test_preproc_parity(run, xp):
    img = _run(run, xp.__name__)
    ref, info = _reference(run)
    for name, got in (("IMAGE", img.pix), ("IVAR", img.ivar), ("READNOISE", img.readnoise)):
        nbad, dmax = _close(backend.to_host(got), ref[name])
        assert nbad == 0, f"{run} {name}: {nbad} pixels off (max |diff| {dmax})"
        assert dmax <= REGRESSION_MAX_ABS[name], \
            f"{run} {name}: max |diff| {dmax:.3g} > regression bound {REGRESSION_MAX_ABS[name]}"
    mask = backend.to_host(img.mask)
    assert mask.dtype == np.int32
    same = np.mean(mask == ref["MASK"])
    assert same >= 0.9999, f"{run}: MASK identical on only {same:.6f} of the pixels"
    assert same == 1.0, f"{run}: MASK differs on {np.sum(mask != ref['MASK'])} pixel(s) " \
                        "(regression: identical so far)"
    cos = ccdmask.COSMIC
    assert np.array_equal(mask & cos, ref["MASK"] & cos), f"{run}: COSMIC bits differ"
    # mask bit counts recorded by the reference run
    for name, count in info["mask_bit_counts"].items():
        assert int(np.sum((mask & ccdmask.mask(name)) != 0)) == count, name
    # header values
    for key, val in info["header_keys"].items():
        got = img.meta[key]
        if isinstance(val, str):
            assert got == val, key
        else:
            assert abs(float(got) - val) <= 1e-4, f"{run} {key}: {got} vs {val}"
            assert abs(float(got) - val) <= REGRESSION_MAX_ABS["header"], \
                f"{run} {key}: {got} vs {val} (regression bound)"


def test_cosmics_found_where_injected():
    """The injected cosmic-ray pixels of the truth table are all flagged COSMIC."""
    d, raw, hdr, prim, params, cal = _inputs()
    img = _run("calib_cosmic", "numpy")
    for cr in params["truth"]["cosmics"]:
        pix = [(cr["y"], cr["x"])] if cr["kind"] == "single" else [tuple(p) for p in cr["pixels"]]
        for y, x in pix:
            assert img.mask[y, x] & ccdmask.COSMIC, (cr["kind"], y, x)


def test_inputs_not_modified():
    d, raw, hdr, prim, params, cal = _inputs()
    kw = _kwargs("calib_cosmic")
    copies = {k: v.copy() for k, v in kw.items() if isinstance(v, np.ndarray)}
    raw0 = raw.copy()
    hdr_dict = {r["name"]: r["value"] for r in hdr.records()}
    hdr_copy = dict(hdr_dict)
    preproc(raw, hdr_dict, prim, backend="numpy", **kw)
    assert np.array_equal(raw, raw0)
    for k, v in copies.items():
        assert np.array_equal(kw[k], v), k
    assert hdr_dict == hdr_copy


def test_header_types_and_case():
    """astropy Header and a lower-case-keyed dict give the same result as fitsio's header."""
    from astropy.io import fits

    d, raw, hdr, prim, params, cal = _inputs()
    ref = _run("nocalib_cosmic", "numpy")
    with fits.open(os.path.join(d, "raw.fits")) as hd:
        ahdr, aprim = hd[1].header.copy(), hd[0].header.copy()
    img = preproc(raw, ahdr, aprim, backend="numpy")
    assert np.array_equal(img.pix, ref.pix) and np.array_equal(img.mask, ref.mask)
    lower = {r["name"].lower(): r["value"] for r in hdr.records()}
    img2 = preproc(raw, lower, None, backend="numpy")
    assert np.array_equal(img2.pix, ref.pix) and np.array_equal(img2.mask, ref.mask)
    assert img2.meta["OVERSCNC"] == ref.meta["OVERSCNC"]


def test_provenance_keys():
    img = _run("calib_cosmic", "numpy")
    deps = {img.meta[k]: img.meta["DEPVER" + k[6:]] for k in img.meta if k.startswith("DEPNAM")}
    assert deps["CCD_CALIB_BIAS"] == "Unknown image"
    assert deps["CCD_CALIB_DARK"] == "calib_dark.fits"
    assert deps["CCD_CALIB_MASK"] == "Unknown image"
    assert deps["CCD_CALIB_PIXFLAT"] == "Unknown image"
    assert "GPUSPEC" in deps
    assert img.meta["CAMERA"] == "b0" and img.camera == "b0"
    # primary keywords are appended
    assert img.meta["OBSTYPE"] == "SCIENCE"


def test_skipped_calibrations_record_none():
    """dark=False (skipped) records CCD_CALIB_DARK = None like the other three; None records
    nothing (desispec 0.70 omits the keyword for a skipped dark only)."""
    d, raw, hdr, prim, params, cal = _inputs()
    img = preproc(raw, hdr, prim, backend="numpy", cosmics=False, bias=False, dark=False,
                  pixflat=False, mask=False)
    deps = {img.meta[k]: img.meta["DEPVER" + k[6:]] for k in img.meta if k.startswith("DEPNAM")}
    for k in ("BIAS", "DARK", "PIXFLAT", "MASK"):
        assert deps[f"CCD_CALIB_{k}"] == "None"
    img = preproc(raw, hdr, prim, backend="numpy", cosmics=False)
    assert not any(str(img.meta[k]).startswith("CCD_CALIB") for k in img.meta
                   if k.startswith("DEPNAM"))


@pytest.mark.gpu
@pytest.mark.parametrize("run", RUNS)
def test_preproc_cupy_matches_numpy(run):
    """cupy and numpy give the same answer (run on a GPU machine), to the issue-3
    tolerances: IMAGE/IVAR/READNOISE relative 1e-5 (absolute 1e-3 near zero), MASK
    identical on >= 99.99% of the pixels with identical COSMIC bits, OVERSCN*/OBSRDN*
    (and OSTEP*) to 1e-4. GPU reductions sum in another order, so bit equality is not
    expected."""
    a = _run(run, "numpy")
    b = _run(run, "cupy")
    for name, x, y in (("IMAGE", a.pix, b.pix), ("IVAR", a.ivar, b.ivar),
                       ("READNOISE", a.readnoise, b.readnoise)):
        nbad, dmax = _close(backend.to_host(y), x)
        assert nbad == 0, f"{run} {name}: {nbad} pixels off (max |diff| {dmax})"
    mb = backend.to_host(b.mask)
    assert np.mean(mb == a.mask) >= 0.9999
    assert np.array_equal(mb & ccdmask.COSMIC, a.mask & ccdmask.COSMIC)
    for k in a.meta:
        if k.startswith(("OVERSCN", "OBSRDN", "OSTEP")):
            assert abs(float(a.meta[k]) - float(b.meta[k])) <= 1e-4, k
