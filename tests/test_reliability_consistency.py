"""Class 2 of docs/reliability.md: no silent data loss or corruption.

Every file that enters a step is checked against the others (rows, cameras,
bands, shapes, exposures); an inconsistency is an error (exit 1) that names the
files, never a smaller or wrong output with exit 0. The cases are written as a
user breaks things: a table edited by hand, files of two cameras mixed up, the
same file given twice, a calibration of the wrong kind.
"""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest

import reliability_world as W
from reliability_world import Case

R, B, Z = "6500,6540,0.8", "5000,5040,0.8", "8500,8540,0.8"


@pytest.fixture(scope="module")
def w():
    return W.world()


def _spectra(change, tag):
    """A spectra file copy rewritten by ``change(ext, data, hdr)``."""
    return lambda w, t: W.rewrite(w["spectra"][0], t, change, name=f"spectra-{tag}.fits")


def _rows(exts, n=-1):
    def change(ext, data, hdr):
        if ext in exts and data is not None:
            data = data[:n]
        return data, hdr
    return change


def _cols(exts, n=-1):
    def change(ext, data, hdr):
        if ext in exts and data is not None:
            data = data[..., :n]
        return data, hdr
    return change


def _frame(cam, change, tag):
    return lambda w, t: W.rewrite(w["frame"][cam], t, change, name=f"frame-{tag}.fits")


def _coadd(make):
    return lambda w, t: ["coadd", "-i", make(w, t), "-o", t / "coadd.fits", "--no-gpu"]


def _calib(kind, cam, fn, tag):
    """A calibration copy whose image is ``fn(image)``."""
    def make(w, t):
        return W.rewrite(w["calib"][kind][cam], t, lambda e, d, h: (fn(d), h),
                         name=f"{kind}-{tag}.fits")
    return make


def _preproc(cam, **calibs):
    """argv of ``gpuspec preproc`` of one camera with calibrations (callables or paths)."""
    def argv(w, t):
        out = ["preproc", "-i", w["raw"], "--camera", cam, "-o", t / "preproc.fits",
               "--no-gpu", "--nocosmic"]
        for k in ("bias", "dark", "pixflat", "mask"):
            v = calibs.get(k, w["calib"][k][cam])
            out += [f"--{k}", v(w, t) if callable(v) else v]
        return out
    return argv


def _set_key(src_key, ext, key, value, tag):
    def make(w, t):
        src = src_key(w)
        dst = W.copy(src, t, f"{tag}.fits")
        with fitsio.FITS(dst, "rw") as fx:
            fx[ext].write_key(key, value)
        return dst
    return make


def _nan(d):
    d = d.astype("f4")
    d[5:9, 5:9] = np.nan
    return d


def _inf(d):
    d = d.astype("f4")
    d[0, 0] = np.inf
    return d


def _shifted(src, t):
    from gpuspec.io import read_frame, write_frame

    fr = read_frame(src)
    fr.wave = fr.wave + 0.4
    fr.meta["EXPID"] = 101  # another exposure of the same arm, on another grid
    fm = fr.fibermap.copy()
    fr.fibermap = fm
    return write_frame(str(t / "frame-b0-shifted.fits"), fr)



def _pick(w, kind, items):
    return [w["calibration"][i][kind] if i in ("b0", "r0", "z0") else i for i in items]


def _stdstars(w, t, frames=("b0", "r0", "z0"), skies=("b0", "r0", "z0"),
              flats=("b0", "r0", "z0")):
    """argv of fit-stdstars (cameras of the calibration chain, or file paths)."""
    return ["fit-stdstars", "--frames", *_pick(w, "frame", frames), "--skymodels",
            *_pick(w, "sky", skies), "--fiberflats", *_pick(w, "fiberflat", flats), "-o",
            t / "std.fits", "--backend", "numpy"]


def _fluxcalib(w, t, models):
    c = w["calibration"]["r0"]
    return ["compute-fluxcalib", "-i", c["frame"], "--fiberflat", c["fiberflat"], "--sky",
            c["sky"], "--models", models, "-o", t / "fc.fits",
            "--backend", "numpy"]


def _input_frames(expid=None, spectrograph=None):
    """Rewrite a stdstars file as if it were of another exposure or spectrograph."""
    def change(ext, data, hdr):
        if ext in ("FLUX", "") and expid is not None:
            hdr["EXPID"] = expid
        if ext == "INPUT_FRAMES":
            data = data.copy()
            if expid is not None:
                data["EXPID"] = expid
            if spectrograph is not None:
                data["CAMERA"] = [f"{c.strip()[0]}{spectrograph}" for c in data["CAMERA"]]
        if ext == "FIBERS" and spectrograph is not None:
            data = data + 500 * spectrograph
        return data, hdr
    return change

CASES = [
    # --- spectra files (coadd)
    Case("fibermap-one-row-short", _coadd(_spectra(_rows({"FIBERMAP"}), "fm")), 1,
         lambda w, t: ["FIBERMAP", "rows"]),
    Case("z-band-rows-short", _coadd(_spectra(_rows({"Z_FLUX", "Z_IVAR", "Z_MASK",
                                                     "Z_RESOLUTION"}), "z")), 1,
         lambda w, t: ["Z_FLUX"]),
    Case("r-ivar-rows-short", _coadd(_spectra(_rows({"R_IVAR"}), "rivar")), 1,
         lambda w, t: ["R_FLUX"]),
    Case("b-mask-columns-short", _coadd(_spectra(_cols({"B_MASK"}), "bmask")), 1,
         lambda w, t: ["B_MASK"]),
    Case("b-wavelength-short", _coadd(_spectra(_cols({"B_WAVELENGTH"}), "bwave")), 1,
         lambda w, t: ["B_FLUX"]),
    Case("r-resolution-short", _coadd(_spectra(_cols({"R_RESOLUTION"}), "rres")), 1,
         lambda w, t: ["R_RESOLUTION"]),
    Case("band-without-ivar", _coadd(_spectra(lambda e, d, h: None if e == "Z_IVAR" else (d, h),
                                              "noziv")), 1, lambda w, t: ["Z_IVAR"]),
    Case("no-fibermap", _coadd(_spectra(lambda e, d, h: None if e == "FIBERMAP" else (d, h),
                                        "nofm")), 1, lambda w, t: ["FIBERMAP"]),
    # --- frames (group, merge)
    Case("frame-fibermap-short", lambda w, t: ["group", "-i", _frame("b0", _rows({"FIBERMAP"}),
                                                                     "fm")(w, t),
                                               "-o", t / "hp"], 1,
         lambda w, t: ["FIBERMAP"], lambda w, t: [t / "hp"]),
    Case("frame-ivar-short", lambda w, t: ["group", "-i", _frame("r0", _rows({"IVAR"}), "iv")(w, t),
                                           "-o", t / "hp"], 1,
         lambda w, t: ["IVAR"], lambda w, t: [t / "hp"]),
    Case("same-frame-twice", lambda w, t: ["group", "-i", w["frame"]["b0"],
                                           W.copy(w["frame"]["b0"], t, "again.fits"),
                                           "-o", t / "hp"], 1,
         lambda w, t: ["again.fits", "frame-b0"], lambda w, t: [t / "hp"]),
    Case("frames-of-one-arm-two-grids",
         lambda w, t: ["group", "-i", w["frame"]["b0"],
                       _shifted(w["frame"]["b0"], t), "-o", t / "hp"], 1,
         lambda w, t: ["WAVELENGTH"], lambda w, t: [t / "hp"]),
    Case("merge-two-cameras", lambda w, t: ["extract", "--merge", w["part"]["b0"],
                                            w["part"]["r0"], "-o", t / "m.fits"], 1,
         lambda w, t: ["CAMERA", "frame-b0", "frame-r0"]),
    Case("merge-same-part-twice", lambda w, t: ["extract", "--merge", w["part"]["z0"],
                                                W.copy(w["part"]["z0"], t, "dup.fits"),
                                                "-o", t / "m.fits"], 1,
         lambda w, t: ["SPECMIN", "overlap"]),
    Case("merge-specmin-text", lambda w, t: ["extract", "--merge", _set_key(
        lambda w: w["part"]["r0"], "FLUX", "SPECMIN", "abc", "part-specmin")(w, t),
        "-o", t / "m.fits"], 1, lambda w, t: ["SPECMIN"]),
    # --- preproc image x PSF x grid (extract)
    Case("b0-image-r0-psf", lambda w, t: ["extract", "-i", w["preproc"]["b0"], "-p",
                                          w["psf"]["r0"], "-o", t / "f.fits", "-w", B], 1,
         lambda w, t: ["preproc-b0", "psf-r0", "camera"]),
    Case("z0-image-b0-psf-no-camera-keyword",
         lambda w, t: ["extract", "-i", w["preproc"]["z0"], "-p",
                       _set_key(lambda w: w["psf"]["b0"], "PSF", "CAMERA", "", "psfnocam")(w, t),
                       "-o", t / "f.fits", "-w", Z], 1,
         lambda w, t: ["psfnocam", "not covered"]),
    Case("r-grid-on-b-psf", lambda w, t: ["extract", "-i", w["preproc"]["b0"], "-p",
                                          w["psf"]["b0"], "-o", t / "f.fits", "-w", R], 1,
         lambda w, t: ["psf-b0", "not covered"]),
    Case("psf-of-another-spectrograph",
         lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p",
                       _set_key(lambda w: w["psf"]["r0"], "PSF", "CAMERA", "r1", "psf-r1")(w, t),
                       "-o", t / "f.fits", "-w", R], 1, lambda w, t: ["psf-r1", "r0"]),
    Case("psfver-99", lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p",
                                    _set_key(lambda w: w["psf"]["r0"], "PSF", "PSFVER", "99",
                                             "psf99")(w, t), "-o", t / "f.fits", "-w", R], 1,
         lambda w, t: ["psf99", "PSFVER"]),
    Case("preproc-fibermap-short", lambda w, t: ["extract", "-i", W.rewrite(
        w["preproc"]["r0"], t, _rows({"FIBERMAP"}, 10), name="pre-fm.fits"), "-p",
        w["psf"]["r0"], "-o", t / "f.fits", "-w", R, "--nspec", "20"], 1,
        lambda w, t: ["pre-fm.fits", "FIBERMAP"]),
    Case("preproc-ivar-shape", lambda w, t: ["extract", "-i", W.rewrite(
        w["preproc"]["r0"], t, _rows({"IVAR"}, 100), name="pre-iv.fits"), "-p",
        w["psf"]["r0"], "-o", t / "f.fits", "-w", R], 1, lambda w, t: ["pre-iv.fits", "IVAR"]),
    # --- calibrations (preproc)
    Case("mask-negative", _preproc("r0", mask=_calib("mask", "r0", lambda d: d - 3, "neg")), 1,
         lambda w, t: ["mask-neg", "mask"]),
    Case("mask-fractional", _preproc("r0", mask=_calib("mask", "r0",
                                                       lambda d: d.astype("f4") + 0.5, "frac")),
         1, lambda w, t: ["mask-frac", "integer"]),
    Case("dark-nan", _preproc("r0", dark=_calib("dark", "r0", _nan, "nan")), 1,
         lambda w, t: ["dark-nan", "NaN"]),
    Case("pixflat-inf", _preproc("r0", pixflat=_calib("pixflat", "r0", _inf, "inf")), 1,
         lambda w, t: ["pixflat-inf"]),
    Case("bias-of-another-camera-same-shape",
         _preproc("r0", bias=_set_key(lambda w: w["calib"]["bias"]["r0"], 0, "CAMERA", "r1",
                                      "bias-r1")), 1, lambda w, t: ["bias-r1", "r1", "r0"]),
    Case("bias-of-another-arm", _preproc("r0", bias=lambda w, t: w["calib"]["bias"]["b0"]), 1,
         lambda w, t: ["bias-b0"]),
    Case("dark-given-as-bias", _preproc("r0", bias=lambda w, t: w["calib"]["dark"]["r0"]), 1,
         lambda w, t: ["dark-r0"]),
    Case("truncated-mask", _preproc("r0", mask=lambda w, t: W.truncate(w["calib"]["mask"]["r0"],
                                                                       t)), 1,
         lambda w, t: ["trunc-mask"]),
    # --- calibration steps
    Case("sky-with-fiberflat-of-another-camera",
         lambda w, t: ["compute-sky", "-i", w["calibration"]["b0"]["frame"], "--fiberflat",
                       w["calibration"]["r0"]["fiberflat"], "-o", t / "sky.fits",
                       "--backend", "numpy"], 1,
         lambda w, t: ["frame-b0", "fiberflat-r0", "CAMERA"]),
    Case("cframe-with-sky-of-another-exposure",
         lambda w, t: ["process-exposure", "-i", w["calibration"]["b0"]["frame"],
                       "--fiberflat", w["calibration"]["b0"]["fiberflat"], "--sky",
                       _set_key(lambda w: w["calibration"]["b0"]["sky"], 0, "EXPID", 555,
                                "sky-555")(w, t), "-o", t / "cf.fits", "--backend", "numpy"], 1,
         lambda w, t: ["sky-555", "EXPID"]),
    Case("fluxcalib-with-sky-of-another-camera",
         lambda w, t: ["compute-fluxcalib", "-i", w["calibration"]["z0"]["frame"],
                       "--fiberflat", w["calibration"]["z0"]["fiberflat"], "--sky",
                       w["calibration"]["r0"]["sky"], "--models",
                       w["calibration"]["stdstars"], "-o", t / "fc.fits", "--backend",
                       "numpy"], 1, lambda w, t: ["sky-r0", "CAMERA"]),
    Case("cframe-with-calib-of-another-camera",
         lambda w, t: ["process-exposure", "-i", w["calibration"]["b0"]["frame"], "--calib",
                       w["calibration"]["r0"]["fluxcalib"], "-o", t / "cf.fits", "--backend",
                       "numpy"], 1, lambda w, t: ["fluxcalib-r0", "CAMERA"]),
    Case("stdstars-frame-without-its-sky",
         lambda w, t: _stdstars(w, t, skies=["b0", "r0"]), 1,
         lambda w, t: ["frame-z0", "sky", "z0"]),
    Case("stdstars-frame-of-another-exposure",
         lambda w, t: _stdstars(w, t, frames=["b0", _set_key(
             lambda w: w["calibration"]["r0"]["frame"], "FLUX", "EXPID", 777,
             "frame-r0-777")(w, t), "z0"]), 1, lambda w, t: ["frame-r0-777", "sky", "777"]),
    Case("stdstars-same-frame-twice",
         lambda w, t: _stdstars(w, t, frames=["b0", "b0", "z0"]), 1,
         lambda w, t: ["frame-b0", "twice"]),
    Case("stdstars-sky-of-no-frame",
         lambda w, t: _stdstars(w, t, skies=["b0", "r0", "z0", _set_key(
             lambda w: w["calibration"]["z0"]["sky"], 0, "EXPID", 555, "sky-z0-555")(w, t)]),
         1, lambda w, t: ["sky-z0-555", "none of the --frames"]),
    Case("stdstars-without-the-fiberflat-of-a-camera",
         lambda w, t: _stdstars(w, t, flats=["b0", "r0"]), 1,
         lambda w, t: ["frame-z0", "fiber flat", "z0"]),
    Case("fluxcalib-with-stdstars-of-another-exposure",
         lambda w, t: _fluxcalib(w, t, W.rewrite(w["calibration"]["stdstars"], t,
                                              _input_frames(expid=555), name="std-555.fits")),
         1, lambda w, t: ["frame-r0", "std-555.fits", "EXPID"]),
    Case("fluxcalib-with-stdstars-of-another-spectrograph",
         lambda w, t: _fluxcalib(w, t, W.rewrite(w["calibration"]["stdstars"], t,
                                              _input_frames(spectrograph=1), name="std-1.fits")),
         1, lambda w, t: ["frame-r0", "std-1.fits"]),
    Case("sky-of-fewer-fibers",
         lambda w, t: ["process-exposure", "-i", w["calibration"]["b0"]["frame"], "--sky",
                       W.rewrite(w["calibration"]["b0"]["sky"], t, _rows(
                           {"SKY", "IVAR", "MASK", "STATIVAR", "THRPUTCORR",
                            "THRPUTCORR_MOD"}, 20), name="sky-short.fits"), "-o",
                       t / "cf.fits", "--backend", "numpy"], 1,
         lambda w, t: ["frame-b0", "sky-short.fits"]),
    Case("fiberflat-of-a-shifted-grid",
         lambda w, t: ["process-exposure", "-i", w["calibration"]["b0"]["frame"], "--fiberflat",
                       W.rewrite(w["calibration"]["b0"]["fiberflat"], t, lambda e, d, h: (
                           d + 5.0 if e == "WAVELENGTH" else d, h), name="ff-shift.fits"),
                       "-o", t / "cf.fits", "--backend", "numpy"], 1,
         lambda w, t: ["frame-b0", "ff-shift.fits", "wavelength"]),
    Case("average-fiberflats-of-two-arms",
         lambda w, t: ["average-fiberflat", "-i", w["calibration"]["b0"]["fiberflat"],
                       w["calibration"]["r0"]["fiberflat"], "-o", t / "aff.fits",
                       "--backend", "numpy"], 1, lambda w, t: ["wavelength"]),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.slow
def test_inconsistent_inputs_are_errors(case, w, tmp_path):
    W.run_case(case, w, tmp_path)


def test_consistent_inputs_still_work(w, tmp_path):
    """The checks refuse nothing legitimate: the same commands on consistent files."""
    ok = [
        ["coadd", "-i", w["spectra"][0], "-o", tmp_path / "c.fits", "--no-gpu"],
        ["group", "-i", *w["frame"].values(), "-o", tmp_path / "hp"],
        ["extract", "--merge", w["part"]["b0"], "-o", tmp_path / "m.fits"],
        ["process-exposure", "-i", w["calibration"]["b0"]["frame"], "--fiberflat",
         w["calibration"]["b0"]["fiberflat"], "--sky", w["calibration"]["b0"]["sky"],
         "--calib", w["calibration"]["b0"]["fluxcalib"], "-o", tmp_path / "cf.fits",
         "--backend", "numpy"],
    ]
    for argv in ok:
        rc, _, err = W.run_gpuspec(argv)
        assert rc == 0, err


def test_inputs_never_modified(w):
    """After the whole table, every file of the night is as it was built."""
    assert W.digest_tree(*W.INPUT_TREES(w)) == w["digest"]


def test_autocalib_with_a_text_expid_names_the_file(w, tmp_path):
    """A fiber flat whose EXPID was edited to text: one line naming file and keyword."""
    ff = W.copy(w["calibration"]["b0"]["fiberflat"], tmp_path, "ff-text.fits")
    with fitsio.FITS(ff, "rw") as fx:
        fx[0].write_key("EXPID", "ninety")
    rc, _, err = W.run_gpuspec(["autocalib-fiberflat", "-i", ff,
                                w["calibration"]["r0"]["fiberflat"], "--night", "20250115",
                                "--arm", "b", "--outdir", str(tmp_path / "out"),
                                "--backend", "numpy"])
    W.check_error(rc, err, 1, ["ff-text.fits", "EXPID"])
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")
