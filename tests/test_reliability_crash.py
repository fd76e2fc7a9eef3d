"""Class 1 of docs/reliability.md: nothing a production cannot recover from.

* every PSF is validated when read: a broken PSF is a one-line error naming the
  file and HDU (never a segmentation fault in compiled code);
* compiled code never reads out of bounds, whatever the input (the Numba
  normal-matrix builder is fed hostile indices directly);
* hostile images and grids end in a clean error or a result, never a crash;
* a task whose process dies (a signal, a crash in native code, ``os._exit``) is
  recorded as failed with the cause while the other tasks go on, and the
  production completes once the cause is gone.
"""

from __future__ import annotations

import os
import sqlite3

import fitsio
import numpy as np
import pytest

import reliability_world as W
from reliability_world import Case

R = "6500,6540,0.8"


@pytest.fixture(scope="module")
def w():
    return W.world()


def _extract(psf_maker, *more):
    """argv of an r0 extraction with the PSF made by ``psf_maker(w, tmp)``."""
    return lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p", psf_maker(w, t), "-o",
                         t / "frame.fits", "-w", R, *more]


def _psf_key(key, value, hdu="PSF"):
    def make(w, t):
        dst = W.copy(w["psf"]["r0"], t, f"psf-{hdu}-{key}.fits")
        with fitsio.FITS(dst, "rw") as fx:
            fx[hdu].write_key(key, value)
        return dst
    return make


def _psf_param(param, fn):
    """A PSF copy whose PSF-table coefficients of ``param`` are changed by ``fn(c)``."""
    def make(w, t):
        dst = W.copy(w["psf"]["r0"], t, f"psf-{param}.fits")
        with fitsio.FITS(dst, "rw") as fx:
            tab = fx["PSF"].read()
            names = [n.decode().strip() if isinstance(n, bytes) else str(n).strip()
                     for n in tab["PARAM"]]
            k = names.index(param)
            tab["COEFF"][k] = fn(tab["COEFF"][k])
            fx["PSF"].write(tab)
        return dst
    return make


def _psf_rewrite(change, tag):
    return lambda w, t: W.rewrite(w["psf"]["r0"], t, change, name=f"psf-{tag}.fits")


def _drop_row(param):
    def change(ext, data, hdr):
        if ext == "PSF":
            names = [n.decode().strip() if isinstance(n, bytes) else str(n).strip()
                     for n in data["PARAM"]]
            data = data[[i for i, n in enumerate(names) if n != param]]
        return data, hdr
    return change


def _shape(ext_name, fn):
    def change(ext, data, hdr):
        return (fn(data) if ext == ext_name else data), hdr
    return change


def _sigma(c):
    c = c.copy()
    c[:] = 0
    c[:, 0] = -1.0
    return c


def _nan_one(c):
    c = c.copy()
    c[7, 0] = np.nan
    return c


_PSF = "psf-"
PSF_CASES = [
    Case("nan-trace-x", _extract(lambda w, t: W.nan_psf(w["psf"]["r0"], t)), 1,
         lambda w, t: [_PSF, "XTRACE", "non-finite"]),
    Case("inf-trace-y", _extract(lambda w, t: W.nan_psf(w["psf"]["r0"], t, "YTRACE", (0, 0),
                                                        np.inf)), 1,
         lambda w, t: [_PSF, "YTRACE"]),
    Case("nan-sigma", _extract(_psf_param("GHSIGX", _nan_one)), 1,
         lambda w, t: ["psf-GHSIGX", "GHSIGX"]),
    Case("negative-sigma", _extract(_psf_param("GHSIGY", _sigma)), 1,
         lambda w, t: ["psf-GHSIGY", "GHSIGY", "> 0"]),
    Case("nan-gh-coefficient", _extract(_psf_param("GH-2-1", _nan_one)), 1,
         lambda w, t: ["GH-2-1"]),
    Case("psfver-99", _extract(_psf_key("PSFVER", "99")), 1,
         lambda w, t: ["PSFVER", "99"]),
    Case("psftype-unknown", _extract(_psf_key("PSFTYPE", "SPOTGRID")), 1,
         lambda w, t: ["PSFTYPE"]),
    Case("hsizex-zero", _extract(_psf_key("HSIZEX", 0)), 1, lambda w, t: ["HSIZEX"]),
    Case("hsizey-huge", _extract(_psf_key("HSIZEY", 100000)), 1, lambda w, t: ["HSIZEY"]),
    Case("ghdeg-negative", _extract(_psf_key("GHDEGX", -1)), 1, lambda w, t: ["GHDEGX"]),
    Case("ghdeg-huge", _extract(_psf_key("GHDEGY", 5000)), 1, lambda w, t: ["GHDEGY"]),
    Case("hsize-text", _extract(_psf_key("HSIZEX", "big")), 1, lambda w, t: ["HSIZEX"]),
    Case("npix-zero", _extract(_psf_key("NPIX_Y", 0)), 1, lambda w, t: ["NPIX_Y"]),
    Case("wave-domain-reversed", _extract(_psf_key("WAVEMIN", 9000.0, "XTRACE")), 1,
         lambda w, t: ["XTRACE", "WAVEMIN"]),
    Case("wave-domain-nan", _extract(_psf_key("WAVEMAX", "nan", "PSF")), 1,
         lambda w, t: ["WAVEMAX"]),
    Case("psferr-text", _extract(_psf_key("PSFERR", "abc")), 1, lambda w, t: ["PSFERR"]),
    Case("missing-gh00", _extract(_psf_rewrite(_drop_row("GH-0-0"), "nogh00")), 1,
         lambda w, t: ["GH-0-0"]),
    Case("missing-sigma", _extract(_psf_rewrite(_drop_row("GHSIGX"), "nosigx")), 1,
         lambda w, t: ["GHSIGX"]),
    Case("ytrace-fewer-fibers", _extract(_psf_rewrite(_shape("YTRACE", lambda a: a[:-7]),
                                                      "yshort")), 1,
         lambda w, t: ["YTRACE", "fibers"]),
    Case("xtrace-1d", _extract(_psf_rewrite(_shape("XTRACE", lambda a: a[0]), "x1d")), 1,
         lambda w, t: ["XTRACE"]),
    Case("xtrace-3d", _extract(_psf_rewrite(_shape("XTRACE", lambda a: a[None]), "x3d")), 1,
         lambda w, t: ["XTRACE"]),
    Case("no-psf-hdu", _extract(_psf_rewrite(lambda e, d, h: None if e == "PSF" else (d, h),
                                             "nopsfhdu")), 1, lambda w, t: ["PSF"]),
    Case("no-ytrace", _extract(_psf_rewrite(lambda e, d, h: None if e == "YTRACE" else (d, h),
                                            "noy")), 1, lambda w, t: ["YTRACE"]),
    Case("truncated-psf", _extract(lambda w, t: W.truncate(w["psf"]["r0"], t)), 1,
         lambda w, t: ["trunc-psf", "truncated"]),
    Case("psf-is-text", _extract(lambda w, t: _text(t / "psf.fits", "not a psf\n")), 1,
         lambda w, t: ["psf.fits"]),
    Case("psf-empty-file", _extract(lambda w, t: _text(t / "empty.fits", "")), 1,
         lambda w, t: ["empty.fits"]),
    Case("psf-is-directory", _extract(lambda w, t: _mkdir(t / "adir.fits")), 1,
         lambda w, t: ["adir.fits"]),
]


def _text(path, text):
    path.write_text(text)
    return path


def _mkdir(path):
    os.makedirs(path, exist_ok=True)
    return path


@pytest.mark.parametrize("case", PSF_CASES, ids=repr)
def test_broken_psf_is_an_error(case, w, tmp_path):
    W.run_case(case, w, tmp_path)


def test_nan_psf_in_a_fresh_process_is_not_a_crash(w, tmp_path):
    """The original report: SIGSEGV in the Numba builder. Now exit 1, file and HDU named."""
    psf = W.nan_psf(w["psf"]["r0"], tmp_path)
    r = W.run_sub(["extract", "-i", w["preproc"]["r0"], "-p", psf, "-o", tmp_path / "f.fits",
                   "-w", R])
    W.check_error(r.returncode, r.stderr, 1, [os.path.basename(psf), "XTRACE"])


# --------------------------------------------------------------------------- hostile images

def _image(fn, tag):
    """A preproc r0 copy whose planes are changed by ``fn(name, data) -> data``."""
    def make(w, t):
        return W.rewrite(w["preproc"]["r0"], t, lambda e, d, h: (fn(e, d), h),
                         name=f"preproc-{tag}.fits")
    return make


def _zero_ivar(e, d):
    return np.zeros_like(d) if e == "IVAR" else d


def _nan_pix(e, d):
    if e == "IMAGE":
        d = d.copy()
        d[100:140, 10:300] = np.nan
    return d


def _crop(e, d):
    return d[:40, :40] if e in ("IMAGE", "IVAR", "MASK") else d


def _all_masked(e, d):
    return np.full_like(d, 1) if e == "MASK" else d


IMAGE_CASES = [
    # a result or a clean error, never a crash: status None means 0 or 1
    Case("ivar-all-zero", lambda w, t: ["extract", "-i", _image(_zero_ivar, "iv0")(w, t), "-p",
                                        w["psf"]["r0"], "-o", t / "f.fits", "-w", R], None),
    Case("nan-pixels", lambda w, t: ["extract", "-i", _image(_nan_pix, "nan")(w, t), "-p",
                                     w["psf"]["r0"], "-o", t / "f.fits", "-w", R], None),
    Case("all-masked", lambda w, t: ["extract", "-i", _image(_all_masked, "mask")(w, t), "-p",
                                     w["psf"]["r0"], "-o", t / "f.fits", "-w", R], None),
    Case("image-cropped-40px", lambda w, t: ["extract", "-i", _image(_crop, "crop")(w, t), "-p",
                                             w["psf"]["r0"], "-o", t / "f.fits", "-w", R], 1),
    Case("grid-far-outside-psf", lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p",
                                               w["psf"]["r0"], "-o", t / "f.fits", "-w",
                                               "20000,20040,0.8"], 1),
    Case("grid-negative-wavelengths", lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p",
                                                    w["psf"]["r0"], "-o", t / "f.fits",
                                                    "--wavelength=-6540,-6500,0.8"], 1),
    Case("fibers-past-psf-end", lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p",
                                              w["psf"]["r0"], "-o", t / "f.fits", "-w", R,
                                              "--specmin", "498", "--nspec", "5"], 1),
    Case("fibers-past-fibermap", lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p",
                                               w["psf"]["r0"], "-o", t / "f.fits", "-w", R,
                                               "--nspec", "40"], 1),
    Case("bundle-past-fibermap", lambda w, t: ["extract", "-i", w["preproc"]["r0"], "-p",
                                               w["psf"]["r0"], "-o", t / "f.fits", "-w", R,
                                               "--bundles", "7"], 1),
]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=repr)
def test_hostile_image_or_grid_never_crashes(case, w, tmp_path):
    argv = [str(a) for a in case.argv(w, tmp_path)]
    rc, _, err = W.run_gpuspec(argv)  # in this process: a crash would take pytest down
    assert "Traceback" not in err and "internal error" not in err, err
    if case.status is None:
        assert rc in (0, 1), err
    else:
        W.check_error(rc, err, case.status)
    if rc:
        assert not os.path.exists(tmp_path / "f.fits")


# --------------------------------------------------------------------------- compiled code

def _kernel_args(**over):
    """Valid arguments of normal_cpu.normal_matrices for 1 patch of 2 fibers x 3 wavelengths
    (the patch index arrays flat here; :func:`_normal` packs them in a ChunkLayout)."""
    nf, nw, ny, nx = 2, 3, 5, 7
    a = dict(stamps=np.ones((nf, nw, ny, nx)), xc=np.tile([[10], [16]], (1, nw)).astype(np.int64),
             yc=np.tile(np.arange(nw) * 2 + 20, (nf, 1)).astype(np.int64),
             ivar=np.ones((60, 60)), x0=0, y0=0, fb0=np.array([0]), nf=np.array([2]),
             k0=np.array([0]), nw=np.array([3]), boxes=np.array([[0, 60, 0, 60]]), NW=3, F=2)
    a.update(over)
    return a


def _normal(a):
    """``M`` of normal_cpu.normal_matrices on the arguments of :func:`_kernel_args`."""
    from gpuspec.extract import normal_cpu
    from gpuspec.extract.layout import ChunkLayout

    P, F, NW = len(a["fb0"]), a["F"], a["NW"]
    perm = np.tile(np.arange(F, dtype=np.int64), (P, 1))
    lay = ChunkLayout(P=P, F=F, NW=NW, NK=0, nf=a["nf"], nw=a["nw"], k0=a["k0"], fb0=a["fb0"],
                      boxes=a["boxes"], valid=np.ones((P, F, NW), bool), perm=perm, pos=perm)
    M, _, _, _ = normal_cpu.normal_matrices(a["stamps"], a["xc"], a["yc"], a["ivar"],
                                         np.ones_like(a["ivar"]), a["x0"], a["y0"], lay)
    return M


KERNEL_CASES = {
    "corners-int64-min": dict(xc=np.full((2, 3), np.iinfo(np.int64).min)),
    "corners-int64-max": dict(yc=np.full((2, 3), np.iinfo(np.int64).max)),
    "corners-mixed-extremes": dict(xc=np.array([[np.iinfo(np.int64).min, 5, 9],
                                                [np.iinfo(np.int64).max, 7, -3]])),
    "box-inverted": dict(boxes=np.array([[60, 0, 60, 0]])),
    "box-huge": dict(boxes=np.array([[-2 ** 62, 2 ** 62, -2 ** 62, 2 ** 62]])),
    "image-origin-far": dict(x0=2 ** 62, y0=-2 ** 62),
    "empty-ivar": dict(ivar=np.ones((0, 0))),
    "fibers-past-stamps": dict(fb0=np.array([1]), nf=np.array([2])),
    "negative-first-fiber": dict(fb0=np.array([-1])),
    "waves-past-stamps": dict(k0=np.array([2])),
    "more-fibers-than-layout": dict(F=1),
    "more-waves-than-layout": dict(NW=2),
    "negative-counts": dict(nf=np.array([-5])),
    "corner-shape-mismatch": dict(xc=np.zeros((1, 1), np.int64)),
    "ragged-patch-arrays": dict(k0=np.array([0, 0])),
}


@pytest.mark.parametrize("name", sorted(KERNEL_CASES))
def test_numba_kernel_never_reads_out_of_bounds(name):
    from gpuspec.extract import normal_cpu

    if not normal_cpu.available():
        pytest.skip("numba not available")
    args = _kernel_args(**KERNEL_CASES[name])
    try:
        M = _normal(args)
    except ValueError as exc:
        assert "normal_matrices" in str(exc)
        return
    assert np.isfinite(M).all()
    # an entry can only sum products of in-bounds pixels: at most the stamp size
    assert np.abs(M).max() <= args["stamps"].shape[2] * args["stamps"].shape[3]


def test_numba_kernel_valid_arguments_unchanged():
    """The bounds checks change nothing for valid input (same M as without them)."""
    from gpuspec.extract import normal_cpu

    if not normal_cpu.available():
        pytest.skip("numba not available")
    a = _kernel_args()
    M = _normal(a)
    # independent: overlap of the stamps of fibers 0/1, counted pixel by pixel
    ref = np.zeros_like(M)
    for f in range(2):
        for j in range(3):
            for g in range(2):
                for k in range(3):
                    ya, yb = a["yc"][f, j], a["yc"][g, k]
                    xa, xb = a["xc"][f, j], a["xc"][g, k]
                    oy = max(0, min(ya, yb) + 5 - max(ya, yb))
                    ox = max(0, min(xa, xb) + 7 - max(xa, xb))
                    ref[0, f * 3 + j, g * 3 + k] = oy * ox
    np.testing.assert_array_equal(M, ref)


# --------------------------------------------------------------------------- task processes

def _toy(tmp_path, name="prod", **kw):
    from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

    inputs = make_toy_inputs(str(tmp_path / "in"))
    path = tmp_path / f"{name}.yaml"
    path.write_text(toy_manifest_text(inputs, str(tmp_path / name), **kw))
    return str(path), str(tmp_path / name), inputs


def _rows(prod):
    con = sqlite3.connect(os.path.join(prod, "run", "state.sqlite3"))
    try:
        return {n: (s, e) for n, s, e in con.execute("SELECT name, state, error FROM tasks")}
    finally:
        con.close()


DEATHS = {  # task -> (how it dies, what the error must say)
    "preproc-r0-00000001": ("SIGKILL", "SIGKILL"),
    "extract-b1-00000002-b00-01": ("SIGSEGV", "SIGSEGV"),
    "extract-z0-00000002-b02-02": ("SIGABRT", "SIGABRT"),
    "frame-b0-00000001": ("SIGBUS", "SIGBUS"),
}
NATIVE = {  # real crashes in native code (reliability_steps)
    "preproc-b1-00000001": ("segv", "SIGSEGV"),
    "extract-r1-00000002-b00-01": ("badptr", "SIGSEGV"),
    "extract-b0-00000002-b02-02": ("abort", "SIGABRT"),
    "frame-z1-00000001": ("exit", "exited with status 3"),
}


@pytest.mark.slow
def test_signal_deaths_fail_alone_then_production_completes(tmp_path, monkeypatch):
    """Tasks killed by SIGKILL (the OOM killer), SIGSEGV, SIGABRT, SIGBUS: each recorded
    failed with its signal; every other task is done; a re-run without the faults
    finishes and gives the products of a production that never failed."""
    path, prod, inputs = _toy(tmp_path, crash_tasks={k: v[0] for k, v in DEATHS.items()})
    rc, out, err = W.run_gpuspec([path, "-q"], prog="gpuspec-run")
    assert rc == 1, err
    rows = _rows(prod)
    for name, (_, word) in DEATHS.items():
        state, error = rows[name]
        assert state == "failed" and "TaskProcessDied" in error and word in error, (name, error)
    failed = {n for n, (s, _) in rows.items() if s == "failed"}
    real = {n for n in failed if not rows[n][1].startswith("dependency ")}
    assert real == set(DEATHS)
    assert {s for n, (s, _) in rows.items() if n not in failed} == {"done"}
    log = os.path.join(prod, "run", "logs", "extract", "extract-b1-00000002-b00-01.log")
    assert "SIGSEGV" in open(log).read()
    # the faults removed: resume, and compare with a production that never failed
    with open(path) as f:
        text = f.read()
    text = text.split("  crash_tasks:")[0]
    with open(path, "w") as f:
        f.write(text)
    assert W.run_gpuspec([path, "-q"], prog="gpuspec-run")[0] == 0
    ref_path, ref_prod, _ = _toy(tmp_path, "ref")
    assert W.run_gpuspec([ref_path, "-q"], prog="gpuspec-run")[0] == 0
    assert _products(prod) == _products(ref_prod)


@pytest.mark.slow
def test_native_crashes_fail_alone(tmp_path, monkeypatch):
    """A segmentation fault, a NULL read, abort() and os._exit in the step's own code."""
    monkeypatch.setenv("GPUSPEC_TEST_CRASH", ",".join(f"{k}={v[0]}" for k, v in NATIVE.items()))
    path, prod, _ = _toy(tmp_path)
    text = open(path).read().replace("registry: toy", "registry: reliability_steps:CRASHY")
    open(path, "w").write(text)
    rc, out, err = W.run_gpuspec([path, "-q"], prog="gpuspec-run")
    assert rc == 1, err
    rows = _rows(prod)
    for name, (_, word) in NATIVE.items():
        assert rows[name][0] == "failed" and word in rows[name][1], (name, rows[name])
    done = [n for n, (s, _) in rows.items() if s == "done"]
    assert len(done) >= 20  # the others went on


@pytest.mark.slow
def test_task_option_records_a_crash(tmp_path):
    """``gpuspec-run M --task NAME`` of a task that dies: exit 1, recorded failed, no
    traceback; the command itself survives."""
    path, prod, _ = _toy(tmp_path, crash_tasks={"preproc-b0-00000001": "SIGSEGV"})
    r = W.run_sub([path, "--task", "preproc-b0-00000001"], prog="gpuspec-run")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "SIGSEGV" in r.stdout + r.stderr
    state, error = _rows(prod)["preproc-b0-00000001"]
    assert state == "failed" and "SIGSEGV" in error


def test_in_process_mode_still_available(tmp_path):
    """``run.isolate: false`` runs tasks in the rank itself (no task process)."""
    path, prod, _ = _toy(tmp_path, isolate=False)
    rc, out, err = W.run_gpuspec([path, "-q"], prog="gpuspec-run")
    assert rc == 0, err
    assert set(s for s, _ in _rows(prod).values()) == {"done"}


def _products(prod):
    import glob
    import hashlib

    out = {}
    for p in glob.glob(os.path.join(prod, "**", "*.json"), recursive=True):
        rel = os.path.relpath(p, prod)
        if not rel.startswith("run"):
            out[rel] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


# the calibration steps (fiberflat ... cframe) as tasks: the same isolation

CALIB_DEATHS = {  # calibration task -> how its process dies
    "sky-b0-00000100": "SIGSEGV",
    "fluxcalib-r0-00000101": "SIGKILL",
    "cframe-b0-00000101": "SIGABRT",
}


def test_calibration_task_deaths_fail_alone_then_production_completes(tmp_path):
    """A sky, a fluxcalib and a cframe task whose processes die (SIGSEGV, SIGKILL,
    SIGABRT): each is failed with its signal, only their dependents fail with them,
    and the same manifest without the faults completes to a never-failed production."""
    path, prod = W.calibrated_toy(tmp_path, "prod", crash_tasks=CALIB_DEATHS)
    rc, out, err = W.run_gpuspec([path, "-q"], prog="gpuspec-run")
    assert rc == 1, err
    rows = _rows(prod)
    for name, sig in CALIB_DEATHS.items():
        state, error = rows[name]
        assert state == "failed" and "TaskProcessDied" in error and sig in error, (name, error)
    failed = {n for n, (s, _) in rows.items() if s == "failed"}
    assert {n for n in failed if not rows[n][1].startswith("dependency ")} == set(CALIB_DEATHS)
    for other in ("fiberflatnight-b-20250101", "sky-r0-00000100", "stdstars-0-00000101",
                  "cframe-z0-00000101"):  # independent of the three: done
        assert rows[other][0] == "done", (other, rows[other])
    assert rows["stdstars-0-00000100"][0] == "failed"  # needs sky-b0-00000100
    text = open(path).read().split("  crash_tasks:")[0]
    open(path, "w").write(text)
    assert W.run_gpuspec([path, "-q"], prog="gpuspec-run")[0] == 0
    assert {s for s, _ in _rows(prod).values()} == {"done"}
    ref_path, ref_prod = W.calibrated_toy(tmp_path, "ref")
    assert W.run_gpuspec([ref_path, "-q"], prog="gpuspec-run")[0] == 0
    assert _products(prod) == _products(ref_prod)
