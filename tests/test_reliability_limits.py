"""Class 3 of docs/reliability.md: no unbounded resources from small inputs.

A few characters can ask for terabytes: a wavelength step of 1e-7, a YAML alias
bomb, ``nbundles: 1000000000``, a tile-compressed header claiming 10¹¹ pixels.
Every size derived from an input is bounded (:mod:`gpuspec.limits`) before
anything is allocated, and refused with the size and the limit: exit 2 for a
command-line option or a manifest, exit 1 for a file. Each case runs under a
memory limit and a timeout, so a regression shows as a failure, not a swap storm.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import fitsio
import numpy as np
import pytest
import yaml

import reliability_world as W
from reliability_world import Case

R = "6500,6540,0.8"
#: address-space limit of the processes of this module (a refused case needs little)
MEMORY_LIMIT = 3 * 2 ** 30


@pytest.fixture(scope="module")
def w():
    return W.world()


def _extract(*more):
    return lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p", w["psf"]["r0"], "-o",
                         t / "f.fits", *more]


def _coadd(*more):
    return lambda w, t: ["coadd", "-i", w["spectra"][0], "-o", t / "c.fits", "--no-gpu", *more]


def _stdstars(*more):
    def argv(w, t):
        c = w["calibration"]
        cams = ("b0", "r0", "z0")
        return ["fit-stdstars", "--frames", *[c[k]["frame"] for k in cams], "--skymodels",
                *[c[k]["sky"] for k in cams], "--fiberflats", *[c[k]["fiberflat"] for k in cams],
                "-o", t / "std.fits", "--backend", "numpy", *more]
    return argv


def _giant(extname, t, name, compress_key="R0", camera="r0"):
    """A FITS file whose tile-compressed HDU ``extname`` claims 10^11 pixels in one tile."""
    path = str(t / name)
    with fitsio.FITS(path, "rw", clobber=True) as fx:
        fx.write(None, header=[{"name": "EXPID", "value": 100}, {"name": "NIGHT",
                                                                  "value": 20250115}])
        fx.write(np.zeros((1, 1000), "i4"), extname=extname, compress="RICE",
                 tile_dims=(1, 1000), header=[{"name": "CAMERA", "value": camera}])
    for k, v in (("ZNAXIS1", "1000000"), ("ZTILE1", "1000000"), ("ZNAXIS2", "100000"),
                 ("ZTILE2", "100000")):
        path = W.edit_card(path, t, extname, k, v, name=name)
    return path


CLI_CASES = [
    Case("extract-step-1e-7", _extract("-w", "6520,6560,1e-7"), 2,
         lambda w, t: ["--wavelength", "limit"]),
    Case("extract-range-1e9", _extract("-w", "0,1e9,1"), 2, lambda w, t: ["--wavelength"]),
    Case("extract-step-denormal", _extract("-w", "6500,6540,1e-300"), 2,
         lambda w, t: ["--wavelength"]),
    Case("extract-range-inf", _extract("-w", "6500,inf,0.8"), 2, lambda w, t: ["--wavelength"]),
    Case("extract-nan", _extract("-w", "nan,6540,0.8"), 2, lambda w, t: ["--wavelength"]),
    Case("extract-nwavestep-1e9", _extract("-w", R, "--nwavestep", "1000000000"), 2,
         lambda w, t: ["--nwavestep"]),
    Case("extract-nwavestep-float", _extract("-w", R, "--nwavestep", "1e9"), 2,
         lambda w, t: ["--nwavestep"]),
    Case("extract-bundlesize-1e9", _extract("-w", R, "--bundlesize", "1000000000"), 2,
         lambda w, t: ["--bundlesize"]),
    Case("extract-nproc-1e5", _extract("-w", R, "--nproc", "100000"), 2,
         lambda w, t: ["--nproc"]),
    Case("threads-1e5", lambda w, t: ["--threads", "100000", "info", w["raw"]], 2,
         lambda w, t: ["--threads"]),
    Case("coadd-lin-step-1e-9", _coadd("--lin-step", "1e-9"), 1,
         lambda w, t: ["lin-step", "limit"]),
    Case("coadd-grid-1e12-wide", _coadd("--lin-step", "1", "--wave-min", "1", "--wave-max",
                                        "1e12"), 1, lambda w, t: ["limit"]),
    Case("coadd-lin-step-denormal", _coadd("--lin-step", "1e-300"), 1, lambda w, t: ["limit"]),
    Case("coadd-spectroperf-lin-step-1e-9", _coadd("--spectroperf", "--lin-step", "1e-9"), 1,
         lambda w, t: ["limit"]),
    Case("stdstars-z-res-1e-12", _stdstars("--z-res", "1e-12"), 2,
         lambda w, t: ["--z-res", "limit"]),
    Case("stdstars-z-max-1e6", _stdstars("--z-max", "1e6"), 2, lambda w, t: ["--z-max"]),
    Case("stdstars-z-max-0-z-res-denormal", _stdstars("--z-max", "0", "--z-res", "1e-300"), 2,
         lambda w, t: ["--z-res", "limit"]),
    Case("fiberflat-smoothing-1e-9",
         lambda w, t: ["compute-fiberflat", "-i", w["calibration"]["b0"]["flat"], "-o",
                       t / "ff.fits", "--smoothing-resolution", "1e-9", "--backend", "numpy"],
         1, lambda w, t: ["frame-b0-00000099", "spline knots", "limit"]),
    Case("group-nside-2-40", lambda w, t: ["group", "-i", w["frame"]["b0"], "-o", t / "hp",
                                           "--nside", str(2 ** 40)], 2,
         lambda w, t: ["--nside"], lambda w, t: [t / "hp"]),
    Case("status-interval-1e-9", lambda w, t: ["status", w["prod"], "--interval", "1e-9"], 2,
         lambda w, t: ["--interval"]),
    # files whose headers ask for 10^11 pixels
    Case("raw-camera-1e11-pixels", lambda w, t: ["preproc", "-i", _giant("R0", t, "raw.fits.fz"),
                                                 "--camera", "r0", "-o", t / "p.fits",
                                                 "--nobias", "--nodark", "--nopixflat",
                                                 "--nomask", "--no-gpu"], 1,
         lambda w, t: ["raw.fits.fz", "R0", "pixels", "limit"]),
    Case("bias-1e11-pixels", lambda w, t: ["preproc", "-i", w["raw"], "--camera", "r0", "-o",
                                           t / "p.fits", "--bias", _giant("BIAS", t, "bias.fits"),
                                           "--nodark", "--nopixflat", "--nomask", "--no-gpu"], 1,
         lambda w, t: ["bias.fits", "limit"]),
    Case("psf-xtrace-100-coefficients", lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p",
                                                      _wide_trace(w, t), "-o", t / "f.fits",
                                                      "-w", R], 1,
         lambda w, t: ["psf-wide", "XTRACE", "coefficients"]),
    Case("info-1e11-pixels", lambda w, t: ["info", _giant("IMAGE", t, "img.fits")], None),
]


def _wide_trace(w, t):
    def change(ext, data, hdr):
        if ext == "XTRACE":
            data = np.concatenate([data, np.zeros((data.shape[0], 100))], axis=1)
        return data, hdr
    return W.rewrite(w["psf"]["r0"], t, change, name="psf-wide.fits")


@pytest.mark.parametrize("case", CLI_CASES, ids=repr)
def test_sizes_from_options_and_headers_are_bounded(case, w, tmp_path):
    t0 = time.time()
    if case.status is None:  # info reads headers only: it may succeed, never allocate
        rc, out, err = W.run_gpuspec([str(a) for a in case.argv(w, tmp_path)])
        assert "Traceback" not in err and rc in (0, 1), err
    else:
        W.run_case(case, w, tmp_path)
    assert time.time() - t0 < 120  # refused before any work (loose: the machine is shared)


# --------------------------------------------------------------------------- manifests

def _manifest(w, t, edit, name="m.yaml"):
    """The night's manifest changed by ``edit(doc) -> doc or text``."""
    with open(w["manifest"]) as f:
        doc = yaml.safe_load(f)
    doc["production"] = str(t / "prod")
    out = edit(doc)
    text = out if isinstance(out, str) else yaml.safe_dump(out, sort_keys=False)
    path = t / name
    path.write_text(text)
    return path


def _set(path, value):
    def edit(doc):
        d = doc
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        return doc
    return edit


BOMB = "\n".join(["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                 + [f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)])


def _with_bomb(path):
    """The manifest with a billion-laughs anchor block and the key ``path`` = ``*l8``."""
    def edit(doc):
        _set(path, "BOMB_HERE")(doc)
        text = yaml.safe_dump(doc, sort_keys=False).replace("BOMB_HERE", "*l8")
        return "x-bomb:\n" + "\n".join("  " + ln for ln in BOMB.splitlines()) + "\n" + text
    return edit


def _nest(depth):
    def edit(doc):
        text = yaml.safe_dump(doc, sort_keys=False)
        return text + "x-deep: " + "[" * depth + "]" * depth + "\n"
    return edit


def _big(doc):
    return yaml.safe_dump(doc, sort_keys=False) + ("# " + "x" * 1000 + "\n") * 17_000


MANIFEST_CASES = [
    ("nbundles-1e9", _set(["steps", "extract", "nbundles"], 10 ** 9), ["nbundles", "maximum"]),
    ("fibers-per-bundle-1e9", _set(["steps", "extract", "fibers_per_bundle"], 10 ** 9),
     ["fibers_per_bundle"]),
    ("bundles-per-task-1e9", _set(["steps", "extract", "bundles_per_task"], 10 ** 9),
     ["bundles_per_task"]),
    ("bundle-index-1e9", _set(["steps", "extract", "bundles"], [10 ** 9]), ["bundles"]),
    ("wavelength-step-1e-7", _set(["steps", "extract", "wavelength"],
                                  {"b": [5000, 5040, 0.8], "r": [6500, 6540, 1e-7],
                                   "z": [8500, 8540, 0.8]}), ["wavelength.r", "limit"]),
    ("wavelength-inf", _set(["steps", "extract", "wavelength"],
                            {"b": [5000, float("inf"), 0.8], "r": [6500, 6540, 0.8],
                             "z": [8500, 8540, 0.8]}), ["wavelength.b"]),
    ("threads-1e6", _set(["run", "threads"], 10 ** 6), ["run.threads"]),
    ("nside-2-40", _set(["steps", "group", "nside"], 2 ** 40), ["nside"]),
    ("nside-3", _set(["steps", "group", "nside"], 3), ["nside", "power of 2"]),
    ("alias-bomb-in-wavelength", _with_bomb(["steps", "extract", "wavelength", "r"]),
     ["alias"]),
    ("alias-bomb-in-options", _with_bomb(["steps", "preproc", "options"]), ["alias"]),
    ("alias-bomb-in-exposures", _with_bomb(["inputs", "exposures"]), ["alias"]),
    ("nested-10000-deep", _nest(10_000), ["nested"]),
    ("nested-100-deep", _nest(100), ["nested"]),
    ("manifest-17-megabytes", _big, ["limit"]),
]


@pytest.mark.parametrize("name,edit,names", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_manifest_sizes_are_bounded(name, edit, names, w, tmp_path):
    path = _manifest(w, tmp_path, edit)
    t0 = time.time()
    r = _bounded([path, "--check"])
    W.check_error(r.returncode, r.stderr, 2, [str(path)] + names, prog="gpuspec-run")
    assert len(r.stderr) < 5000  # never an expanded structure
    assert time.time() - t0 < 120
    # and a run refuses to start the same way, writing nothing
    r = _bounded([path])
    W.check_error(r.returncode, r.stderr, 2, names, prog="gpuspec-run")
    assert not os.path.exists(tmp_path / "prod" / "run" / "state.sqlite3")


def _bounded(args):
    """gpuspec-run in a subprocess under :data:`MEMORY_LIMIT` and a timeout."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-m", "gpuspec.launch.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=W.env(),
                          preexec_fn=limit)


def test_long_value_is_cut_in_the_message(w, tmp_path):
    """A 1 MB path in a manifest: the error line stays short (cut in the middle)."""
    path = _manifest(w, tmp_path, _set(["inputs", "psf"], "/x" * 500_000 + "{camera}.fits"))
    rc, _, err = W.run_gpuspec([path, "--check"], prog="gpuspec-run")
    line = W.check_error(rc, err, 2, ["inputs.psf"], prog="gpuspec-run")
    assert len(line) < 2500 and "characters]" in line


def test_limits_are_generous_for_desi_sizes():
    """The limits never refuse a DESI-sized input (one home: gpuspec.limits)."""
    from gpuspec import limits
    from gpuspec.extract.files import grid_size

    assert grid_size(3600.0, 9824.0, 0.1) < limits.MAX_NWAVE       # whole range at 0.1 A
    assert 4256 * 4194 * 4 < limits.MAX_IMAGE_PIXELS                # 4 raw CCDs' worth
    assert 20 * 25 <= limits.MAX_FIBERS_PER_CAMERA
    assert 8 <= limits.MAX_PSF_HALFSIZE and 6 <= limits.MAX_PSF_GHDEG
