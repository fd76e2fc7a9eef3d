"""Benchmarks of the gpuspec suite: preproc, extraction, coadd.

Each ``bench_<name>(size, backend_name)`` runs in a process whose BLAS/OpenMP thread
counts were pinned before numpy was imported (``python -m perf`` does that), follows
:func:`perf.protocol.measure` and returns a list of records.

Cases (``size`` = ``small`` | ``full``):

preproc
    ``caseA_<run>`` for the 4 runs of shared/reference Case A (desispec second-call time
    as the reference); ``full``: also a synthetic full-size camera (4128 x 4114,
    500 traces, cosmics) with and without cosmic-ray rejection, and (numpy, when
    desispec is installed) ``fullccd_vs_desispec``: gpuspec and desispec's preproc
    interleaved in the same process on the same files (perf/bench_preproc.py).
extract
    ``caseB_clean`` and ``caseB_masked`` (specter ex2d, 50 fibers x 375 bins);
    ``bundle``: one 25-fiber bundle over the whole r wavelength range of a rendered
    full-CCD frame; ``frame``: the frame, 50 fibers (small) or 500 fibers (full).
coadd
    ``caseC_<call>`` (desispec coadd/resample/decorrelate, plus the spectroperf coadd);
    ``healpix_plain`` and ``healpix_spectroperf`` on a synthetic HEALPix pixel
    (20 targets x 2 exposures small, 200 x 4 full, b/r/z cameras); on cupy also
    ``healpix500_spectroperf``, goal 1b's pixel of ``protocol.GOAL1B_NTARGET`` targets
    (x the size's exposures; the CPU has goal 1a instead).

With ``threads`` > 1 (multi-threaded run) the numpy extraction also uses ``nproc``
= threads forked bundle workers (BLAS stays at 1 thread inside extraction, see
``gpuspec.threads``).
"""

from __future__ import annotations

import os
import time

from . import protocol as P

SIZES = {
    "small": {"repeat": 3, "frame_nspec": 50, "scaling_nspec": 100, "ntarget": 20, "nexp": 2,
              "preproc_full": False},
    "full": {"repeat": 5, "frame_nspec": 500, "scaling_nspec": 500, "ntarget": 200, "nexp": 4,
             "preproc_full": True},
}


def _ref_dir(*parts):
    return os.path.join(P.shared_dir(), "reference", *parts)


def _nthreads() -> int:
    t = P.threads_label()
    return int(t) if t.isdigit() else 1


def _say(msg):
    print(msg, flush=True)


def _summary(rec):
    t = rec["timing"]
    s = (f"  {rec['benchmark']:8s} {rec['case']:22s} {rec['backend']:5s} thr={rec['threads']:7s} "
         f"median {t['median_s']:9.4f} s (+-{t['iqr_half_s']:.4f}, n={t['repeat']})")
    if rec.get("reference") and rec["reference"].get("ratio"):
        s += f"  ref/gpuspec x{rec['reference']['ratio']:.2f}"
    return s


# --------------------------------------------------------------------------- preproc
def bench_preproc(size: str, backend_name: str) -> list[dict]:
    """Case A (4 runs) and, for ``full``, a synthetic full-size camera."""
    import json

    import fitsio
    import numpy as np

    from gpuspec import backend
    from gpuspec.preproc import preproc

    cfg = SIZES[size]
    xp = backend.get_xp(backend_name)
    recs = []
    d = _ref_dir("public", "caseA_preproc")
    if os.path.isdir(d):
        raw, hdr = fitsio.read(os.path.join(d, "raw.fits"), 1, header=True)
        raw = backend.native(raw)
        prim = fitsio.read_header(os.path.join(d, "raw.fits"), 0)
        with open(os.path.join(d, "params.json")) as f:
            params = json.load(f)
        cal = {n: backend.native(fitsio.read(os.path.join(d, f"calib_{n}.fits")))
               for n in ("bias", "dark", "pixflat", "mask")}
        for run, info in params["runs"].items():
            kw = info["kwargs_described"]
            args = {}
            for name in ("bias", "dark", "pixflat", "mask"):
                spec = kw[name]
                if spec is False:
                    continue
                kind, fn = spec.split(":", 1)
                # files are read inside preproc (as desispec did); arrays go to the device once
                args[name] = (os.path.join(d, fn) if kind == "FILE"
                              else backend.to_device(cal[name].astype(np.float64)
                                                     if cal[name].dtype.kind == "f"
                                                     else cal[name], xp))
            args["cosmics"] = not kw["nocosmic"]
            args["use_overscan_row"] = bool(kw.get("use_overscan_row", False))
            la = P.loadavg()
            t = P.measure(lambda: preproc(raw, hdr, prim, backend=backend_name, **args), xp,
                          warmup=1, repeat=max(5, cfg["repeat"]))
            rec = P.record("preproc", f"caseA_{run}", size=size, backend_name=backend_name,
                           timing=t, xp=xp, loadavg_before=la,
                           sizes={"raw_shape": list(raw.shape), "image_shape": [240, 300]},
                           reference=P.with_reference(f"public/caseA_preproc/{run}",
                                                      t["median_s"], "second_call_s"))
            recs.append(rec)
            _say(_summary(rec))
    else:
        _say(f"  preproc: Case A skipped, no reference data in {d}")
    if cfg["preproc_full"]:
        import sys

        sys.path.insert(0, P.HERE)
        from bench_preproc import synth_camera  # perf/bench_preproc.py

        if backend_name == "numpy":
            # goal record: side by side with desispec.preproc.preproc in this process
            from bench_preproc import vs_desispec

            for r in vs_desispec(rounds=3):
                r["size"] = size
                recs.append(r)
                _say(_summary(r))
        raw, hdr, prim, calib = synth_camera()
        cal_dev = {k: backend.to_device(v, xp) for k, v in calib.items()}
        for case, cosm in (("fullccd", True), ("fullccd_nocosmic", False)):
            la = P.loadavg()
            t = P.measure(lambda: preproc(raw, hdr, prim, backend=backend_name, cosmics=cosm,
                                          **cal_dev), xp, warmup=1, repeat=3)
            rec = P.record("preproc", case, size=size, backend_name=backend_name, timing=t,
                           xp=xp, loadavg_before=la,
                           sizes={"raw_shape": list(raw.shape), "image_shape": [4128, 4114]},
                           extra={"source": "synthetic camera of perf/bench_preproc.py",
                                  "host_to_device_upload_included": True})
            recs.append(rec)
            _say(_summary(rec))
    return recs


# --------------------------------------------------------------------------- extract
def make_frame(psf, nspec: int, seed: int = 7, xp=None, truth: bool = False):
    """A rendered, noisy full-CCD frame of fibers ``0..nspec-1``.

    Returns ``(image, ivar, wave)``; wave is the 0.8 Å grid whose spots stay on the CCD.
    With ``truth=True`` also ``(wtrue, phot)``: the true photons per 0.8 Å bin on the
    wider grid ``wtrue`` (used by perf/bench_extract.py to check the extraction).
    """
    import numpy as np

    from gpuspec import backend
    from gpuspec.grids import linear_grid
    from gpuspec.psf.project import render_spectra

    xp = xp or np
    rng = np.random.default_rng(seed)
    dw = 0.8
    wrow = np.asarray(psf.wavelength(np.arange(psf.nspec), [40.0, psf.npix_y - 40.0]))
    wmin, wmax = float(np.ceil(wrow[:, 0].max())), float(np.floor(wrow[:, 1].min()))
    wave = linear_grid(wmin, wmax, dw)
    wtrue = linear_grid(wmin - 40 * dw, wmax + 40 * dw, dw)
    cont = rng.uniform(20, 120, (nspec, 1)) * (
        1 + 0.2 * np.sin(wtrue / rng.uniform(40, 200, (nspec, 1))))
    phot = cont.copy()
    for _ in range(30):
        c = rng.uniform(wmin, wmax, nspec)[:, None]
        s = rng.uniform(0.3, 1.5, nspec)[:, None]
        a = rng.uniform(200, 3000, nspec)[:, None]
        phot += a * dw * np.exp(-0.5 * ((wtrue - c) / s) ** 2) / (np.sqrt(2 * np.pi) * s)
    model = backend.to_host(render_spectra(psf, np.arange(nspec), wtrue, phot,
                                           (psf.npix_y, psf.npix_x), xp=xp))
    var = np.maximum(model, 0) + 9.0
    img = model + np.sqrt(var) * rng.standard_normal(model.shape)
    if truth:
        return img, 1.0 / var, wave, wtrue, phot
    return img, 1.0 / var, wave


def bench_extract(size: str, backend_name: str) -> list[dict]:
    """Case B clean/masked, one bundle and a frame of the rendered full CCD."""
    import fitsio

    from gpuspec import backend
    from gpuspec.extract import extract_frame
    from gpuspec.psf import read_psf

    cfg = SIZES[size]
    xp = backend.get_xp(backend_name)
    nthr = _nthreads()
    nproc = nthr if backend_name == "numpy" else 1
    recs = []
    psf_fn = _ref_dir("psf", "psf-r0-00051060.fits")
    if not os.path.exists(psf_fn):
        from gpuspec.sim.psfs import default_template_path

        psf_fn = default_template_path()
    psf = read_psf(psf_fn)
    d = _ref_dir("public", "caseB_extract")
    if os.path.isdir(d):
        inp = os.path.join(d, "input.fits")
        h = fitsio.read_header(inp, 0)
        img = backend.native(fitsio.read(inp, "IMAGE"))
        iv = backend.native(fitsio.read(inp, "IVAR"))
        pm = backend.native(fitsio.read(inp, "PIXMASK"))
        wave = backend.native(fitsio.read(inp, "WAVE"))
        xyr = [h["XMIN"], h["XMAX"], h["YMIN"], h["YMAX"]]
        for run, ivar in (("clean", iv), ("masked", iv * (pm == 0))):
            # specter ran with full_output=True (model image); forked workers need model=False
            kw = dict(xyrange=xyr, backend=backend_name, model=nproc == 1, nproc=nproc)
            la = P.loadavg()
            t = P.measure(lambda: extract_frame(img, ivar, psf, wave, 0, 50, **kw), xp,
                          warmup=1, repeat=cfg["repeat"])
            rec = P.record("extract", f"caseB_{run}", size=size, backend_name=backend_name,
                           timing=t, xp=xp, loadavg_before=la,
                           sizes={"nspec": 50, "nwave": int(wave.size),
                                  "image_shape": list(img.shape)},
                           reference=P.with_reference(f"public/caseB_extract/ex2d_{run}",
                                                      t["median_s"]),
                           extra={"nproc": nproc, "model_image": nproc == 1})
            recs.append(rec)
            _say(_summary(rec))
    else:
        _say(f"  extract: Case B skipped, no reference data in {d}")
    nspec = cfg["frame_nspec"]
    t0 = time.perf_counter()
    img, ivar, wave = make_frame(psf, nspec, xp=xp)
    t_render = time.perf_counter() - t0
    img_d, ivar_d = backend.to_device(img, xp), backend.to_device(ivar, xp)
    # one bundle: warm-up + repeat (small: 2 runs)
    la = P.loadavg()
    t = P.measure(lambda: extract_frame(img_d, ivar_d, psf, wave, 0, 25, backend=backend_name),
                  xp, warmup=1, repeat=2 if size == "small" else 3)
    rec = P.record("extract", "bundle", size=size, backend_name=backend_name, timing=t, xp=xp,
                   loadavg_before=la, sizes={"nspec": 25, "nwave": int(wave.size),
                                             "image_shape": list(img.shape)},
                   extra={"nproc": 1, "what": "fibers 0-24 of a rendered full-CCD r0 frame"})
    recs.append(rec)
    _say(_summary(rec))
    recs += _bench_bundle_task(psf_fn, img, ivar, wave, size, backend_name, xp)
    if backend_name == "numpy":
        recs += _bench_bundle_solve(psf, img, ivar, wave, size, xp)
    # the frame: warmed by the bundle runs; one timed run (numpy) / three (cupy)
    la = P.loadavg()
    t = P.measure(lambda: extract_frame(img_d, ivar_d, psf, wave, 0, nspec, backend=backend_name,
                                        nproc=nproc), xp,
                  warmup=0, repeat=1 if backend_name == "numpy" else 3)
    rec = P.record("extract", f"frame{nspec}", size=size, backend_name=backend_name, timing=t,
                   xp=xp, loadavg_before=la,
                   sizes={"nspec": nspec, "nwave": int(wave.size), "image_shape": list(img.shape)},
                   extra={"nproc": nproc, "render_s": t_render,
                          "warmed_by": "the bundle runs (same code, same PSF)",
                          "frames_per_hour": 3600.0 / t["median_s"] * (nspec / 500.0)})
    recs.append(rec)
    _say(_summary(rec))
    if backend_name == "numpy" and nthr == 1 and (os.cpu_count() or 1) >= 2:
        frame = (img, ivar, wave) if cfg["scaling_nspec"] == nspec else None
        recs += _bench_nproc_scaling(psf, cfg, size, xp, frame)
    if backend_name == "cupy":
        recs += bench_device_linalg(psf, wave, size, xp)
    return recs


#: patches per batched call in :func:`bench_device_linalg` (a chunk of the 2 GB default
#: budget holds ~25 patches at DESI geometry, docs/gpu-readiness.md)
DEVICE_CHUNK_PATCHES = 25


def bench_device_linalg(psf, wave, size, xp, nspec=500, chunks=(1, 8)) -> list[dict]:
    """cupy: the extraction's two batched LAPACK calls alone, scaled to a frame.

    ``xp.linalg.eigh`` of the kept fibers' NW × NW covariance blocks (``solve.decorrelate``;
    CuPy sends every batch to cuSOLVER's Jacobi ``syevjBatched``, documented as slow above
    n = 32, docs/gpu-readiness.md) and ``xp.linalg.cholesky`` of the F·NW normal matrices,
    on random SPD matrices of the frame's most common patch shape (``costmodel.plan_frame``),
    in calls of ``DEVICE_CHUNK_PATCHES × c`` patches for each ``c`` of ``chunks``. A GPU
    run then shows how much of a frame's time these two calls take, beside the cost
    model's bound for them.
    """
    import numpy as np

    from gpuspec.extract.solve import decorrelate

    from . import costmodel

    shapes = costmodel.plan_frame(psf, wave, nspec=nspec)
    s = max(shapes, key=lambda sh: sh.count)
    patches = sum(sh.count for sh in shapes)
    blocks = sum(sh.count * sh.NK for sh in shapes)
    rng = np.random.default_rng(5)
    recs = []
    for c in chunks:
        P_ = DEVICE_CHUNK_PATCHES * c
        for case, n, batch, per_frame in (("eigh_blocks", s.NW, P_ * s.NK, blocks),
                                          ("cholesky_normal", s.n, P_, patches)):
            B = xp.asarray(rng.standard_normal((batch, n, n)))
            A = xp.matmul(B, xp.swapaxes(B, -1, -2)) / n + xp.eye(n)
            if case == "eigh_blocks":
                fn = (lambda A=A: decorrelate(A))
            else:
                fn = (lambda A=A: xp.linalg.cholesky(A))
            la = P.loadavg()
            t = P.measure(fn, xp, warmup=1, repeat=3)
            rec = P.record("extract", f"{case}_x{c}", size=size, backend_name="cupy",
                           timing=t, xp=xp, loadavg_before=la,
                           sizes={"n": int(n), "batch": int(batch), "patches_per_call": P_},
                           extra={"per_frame_s": t["median_s"] * per_frame / batch,
                                  "per_frame_calls": per_frame / batch,
                                  "frame_patches": patches, "frame_blocks": blocks,
                                  "what": ("solve.decorrelate (batched eigh) of NW x NW blocks"
                                           if case == "eigh_blocks" else
                                           "xp.linalg.cholesky of the normal matrices")})
            recs.append(rec)
            _say(_summary(rec) + f"  -> {rec['extra']['per_frame_s']:.3f} s per frame")
    return recs


def _bench_bundle_task(psf_fn, img, ivar, wave, size, backend_name, xp) -> list[dict]:
    """A launcher bundle task: ``extract_file`` of bundle 1 from a preproc file of the
    rendered full CCD, reading only the bundle's columns (``files.CROP_COLUMNS``, the
    default) and the whole image, interleaved round by round (3 rounds, after a warm-up
    of each). The frames are the same bit for bit (a test checks it)."""
    import tempfile

    import numpy as np

    from gpuspec import backend
    from gpuspec import io as gio
    from gpuspec.extract import extract_file, files
    from gpuspec.image import Image

    with tempfile.TemporaryDirectory(prefix="gpuspec-bundle-task-") as tmp:
        pre = os.path.join(tmp, "preproc-r0.fits")
        pix, iv = backend.to_host(img), backend.to_host(ivar)
        gio.write_image(pre, Image(pix=pix, ivar=iv, mask=np.zeros(pix.shape, np.int32),
                                   readnoise=np.full(pix.shape, 3.0, np.float32),
                                   camera="r0", meta={"CAMERA": "r0", "EXPTIME": 900.0}))

        def task(crop):
            old = files.CROP_COLUMNS
            files.CROP_COLUMNS = crop
            try:
                extract_file(pre, psf_fn, os.path.join(tmp, f"frame-{crop}.fits"), wave,
                             bundles=[1], backend=backend_name)
            finally:
                files.CROP_COLUMNS = old

        fns = {"bundle_task_columns": lambda: task(True),
               "bundle_task_whole_image": lambda: task(False)}
        for fn in fns.values():
            fn()                                                        # warm-up
        la = P.loadavg()
        tim = P.interleave(fns, xp, rounds=3)
    cpu = {k: np.asarray(t.get("cpu_s") or t["runs_s"]) for k, t in tim.items()}
    speedup = float(np.median(cpu["bundle_task_whole_image"] / cpu["bundle_task_columns"]))
    recs = []
    for name, t in tim.items():
        rec = P.record("extract", name, size=size, backend_name=backend_name, timing=t, xp=xp,
                       loadavg_before=la, sizes={"nspec": 25, "nwave": int(np.size(wave)),
                                                 "image_shape": list(np.shape(img))},
                       extra={"what": "extract_file of bundle 1 from a preproc file (files "
                                      "to files, as a launcher task)",
                              "interleaved_with": [k for k in tim if k != name][0],
                              "cpu_speedup_columns_vs_whole": speedup})
        recs.append(rec)
        _say(_summary(rec))
    _say(f"  extract: bundle task, columns only vs whole image: x{speedup:.2f} (CPU, "
         "interleaved)")
    return recs


def _bench_bundle_solve(psf, img, ivar, wave, size, xp, rounds: int = 4) -> list[dict]:
    """Bundle 0 with the block-sparse host solve (``core.USE_BLOCKSOLVE``, the default)
    and with dense LAPACK per patch, interleaved round by round after a warm-up of each.
    The frames agree to rounding (``tests/test_blocksolve.py``,
    ``tests/test_extract_paths.py``)."""
    import numpy as np

    from gpuspec.extract import core, extract_frame

    def run(blocks):
        old = core.USE_BLOCKSOLVE
        core.USE_BLOCKSOLVE = blocks
        try:
            extract_frame(img, ivar, psf, wave, 0, 25, backend="numpy")
        finally:
            core.USE_BLOCKSOLVE = old

    fns = {"bundle_solve_blocks": lambda: run(True), "bundle_solve_dense": lambda: run(False)}
    for fn in fns.values():
        fn()                                                            # warm-up
    la = P.loadavg()
    tim = P.interleave(fns, xp, rounds=rounds)
    cpu = {k: np.asarray(t.get("cpu_s") or t["runs_s"]) for k, t in tim.items()}
    ratio = cpu["bundle_solve_dense"] / cpu["bundle_solve_blocks"]
    speedup = float(np.median(ratio))
    recs = []
    for name, t in tim.items():
        rec = P.record("extract", name, size=size, backend_name="numpy", timing=t, xp=xp,
                       loadavg_before=la, sizes={"nspec": 25, "nwave": int(np.size(wave)),
                                                 "image_shape": list(np.shape(img))},
                       extra={"what": "bundle 0 of the rendered frame, the normal matrices "
                                      "solved block-sparse or dense (core.USE_BLOCKSOLVE)",
                              "interleaved_with": [k for k in tim if k != name][0],
                              "cpu_speedup_blocks_vs_dense": speedup,
                              "cpu_ratio_rounds": ratio.tolist()})
        recs.append(rec)
        _say(_summary(rec))
    _say(f"  extract: bundle, block-sparse vs dense solve: x{speedup:.2f} (CPU, interleaved)")
    return recs


def _bench_nproc_scaling(psf, cfg, size, xp, frame=None) -> list[dict]:
    """Goal 2c: the same frame in 1 and in 2 forked single-threaded processes.

    Runs in the threads = 1 child (BLAS pinned to one thread), interleaved round by round
    (``protocol.interleave``), on a frame of several bundles (``scaling_nspec`` fibers:
    4 bundles small, 20 full; ``frame`` = (image, ivar, wave) reuses a rendered one) so that the two workers get balanced work; the 2-bundle
    frame50 pair of the thread-setting children is at the mercy of its slowest bundle.
    """
    from gpuspec.extract import extract_frame

    nspec = cfg["scaling_nspec"]
    # the frame benchmark's own frame when it has these fibers (full size), else a new one
    img, ivar, wave = frame if frame is not None else make_frame(psf, nspec, xp=xp)
    extract_frame(img, ivar, psf, wave, 0, 25, backend="numpy")        # warm (numba, caches)
    la = P.loadavg()
    fns = {npr: (lambda npr=npr: extract_frame(img, ivar, psf, wave, 0, nspec,
                                               backend="numpy", nproc=npr)) for npr in (1, 2)}
    tim = P.interleave(fns, xp, rounds=2)
    speedup = tim[1]["median_s"] / tim[2]["median_s"]
    recs = []
    for npr in (1, 2):
        rec = P.record("extract", f"frame{nspec}_nproc{npr}", size=size, backend_name="numpy",
                       timing=tim[npr], xp=xp, loadavg_before=la,
                       sizes={"nspec": nspec, "nwave": int(wave.size),
                              "image_shape": list(img.shape)},
                       extra={"nproc": npr, "interleaved_with": f"frame{nspec}_nproc{3 - npr}",
                              "speedup_2_vs_1": speedup, "cpu_count": os.cpu_count()})
        recs.append(rec)
        _say(_summary(rec))
    _say(f"  extract: {nspec} fibers, 2 processes vs 1: x{speedup:.2f} (wall, interleaved)")
    return recs


# --------------------------------------------------------------------------- coadd
def bench_coadd(size: str, backend_name: str) -> list[dict]:
    """Case C calls (vs desispec) and a synthetic HEALPix pixel (plain and spectroperf)."""
    import fitsio

    from gpuspec import backend
    from gpuspec.coadd import coadd, coadd_spectroperf, decorrelate, spectroperf_resample
    from gpuspec.coadd.synth import make_spectra
    from gpuspec.io.spectra import read_spectra

    cfg = SIZES[size]
    xp = backend.get_xp(backend_name)
    recs = []
    d = _ref_dir("public", "caseC_coadd")
    if os.path.isdir(d):
        inp = read_spectra(os.path.join(d, "input_spectra.fits"))
        two = read_spectra(os.path.join(d, "resample_twoband_input.fits"))
        w1 = read_spectra(os.path.join(d, "resample_single.fits")).wave["r"]
        w2 = read_spectra(os.path.join(d, "resample_twoband.fits")).wave["br"]
        with fitsio.FITS(os.path.join(d, "decorrelate.fits")) as fx:
            wavebin = fx[0].read_header()["WAVEBIN"]
            cb, cf = backend.native(fx["CINV_BAND"].read()), backend.native(fx["CINVF"].read())
        cases = {
            "coadd_default": (lambda: coadd(inp, onetile=True, backend=backend_name),
                              "seconds"),
            "coadd_nonorm": (lambda: coadd(inp, onetile=True, no_normalize=True,
                                           backend=backend_name), "seconds"),
            "resample_single": (lambda: spectroperf_resample(inp, w1, backend=backend_name),
                                "seconds"),
            "resample_twoband": (lambda: spectroperf_resample(two, w2, backend=backend_name),
                                 "seconds"),
            "decorrelate": (lambda: decorrelate(cb, cf, wavebin, backend=backend_name),
                            "seconds_total"),
            "coadd_spectroperf": (lambda: coadd_spectroperf(inp, inp.wave["r"],
                                                            backend=backend_name), None),
        }
        for name, (fn, key) in cases.items():
            la = P.loadavg()
            t = P.measure(fn, xp, warmup=1, repeat=max(5, cfg["repeat"]))
            ref = P.with_reference(f"public/caseC_coadd/{name}", t["median_s"], key) if key \
                else None
            rec = P.record("coadd", f"caseC_{name}", size=size, backend_name=backend_name,
                           timing=t, xp=xp, loadavg_before=la, reference=ref,
                           sizes={"ntarget": 5, "nexp": 3, "nwave": 375})
            recs.append(rec)
            _say(_summary(rec))
    else:
        _say(f"  coadd: Case C skipped, no reference data in {d}")
    sp, _ = make_spectra(ntarget=cfg["ntarget"], nexp=cfg["nexp"], seed=11)
    sizes = {"ntarget": cfg["ntarget"], "nexp": cfg["nexp"], "cameras": list(sp.bands),
             "shapes": {b: list(sp.flux[b].shape) for b in sp.bands}}
    mb = 8192 if backend_name == "cupy" else 1024
    recs.extend(_bench_healpix_pair(sp, sizes, cfg, size, backend_name, xp, mb))
    if backend_name == "cupy":
        # goal 1b's pixel (500+ targets), on the GPU only: the CPU has goal 1a
        big, _ = make_spectra(ntarget=P.GOAL1B_NTARGET, nexp=cfg["nexp"], seed=12)
        bsz = dict(sizes, ntarget=P.GOAL1B_NTARGET,
                   shapes={b: list(big.flux[b].shape) for b in big.bands})
        la = P.loadavg()
        t = P.measure(lambda: coadd_spectroperf(big, backend=backend_name, max_blocks=mb), xp,
                      warmup=1, repeat=2)
        rec = P.record("coadd", P.GOAL1B_CASE, size=size, backend_name=backend_name, timing=t,
                       xp=xp, loadavg_before=la, sizes=bsz,
                       extra={"targets_per_s": bsz["ntarget"] / t["median_s"],
                              "max_blocks": mb})
        recs.append(rec)
        _say(_summary(rec))
    return recs


def _bench_healpix_pair(sp, sizes, cfg, size, backend_name, xp, mb) -> list[dict]:
    """Goal 1a: the plain coadd (``coadd`` + ``coadd_cameras``, one brz spectrum per
    target) and ``coadd_spectroperf`` of one pixel, interleaved round by round
    (``protocol.interleave``, after one warm-up call each), so that a change of the
    machine's speed hits both; ``extra.ratio_rounds`` has the CPU-time ratio of each
    round (spectroperf / plain of the same round)."""
    import numpy as np

    from gpuspec.coadd import coadd, coadd_cameras, coadd_spectroperf

    fns = {"healpix_plain": lambda: coadd_cameras(coadd(sp, onetile=True,
                                                        backend=backend_name),
                                                  backend=backend_name),
           "healpix_spectroperf": lambda: coadd_spectroperf(sp, backend=backend_name,
                                                            max_blocks=mb)}
    for fn in fns.values():
        fn()                                                            # warm-up
    la = P.loadavg()
    tim = P.interleave(fns, xp, rounds=max(5, cfg["repeat"]))
    cpu = {k: np.asarray(t.get("cpu_s") or t["runs_s"]) for k, t in tim.items()}
    rounds = cpu["healpix_spectroperf"] / cpu["healpix_plain"]
    recs = []
    for name, t in tim.items():
        extra = {"targets_per_s": sizes["ntarget"] / t["median_s"],
                 "max_blocks": mb if "spectroperf" in name else None,
                 "interleaved_with": ("healpix_spectroperf" if name == "healpix_plain"
                                      else "healpix_plain"),
                 "ratio_rounds": [float(r) for r in rounds]}
        rec = P.record("coadd", name, size=size, backend_name=backend_name, timing=t, xp=xp,
                       loadavg_before=la, sizes=sizes, extra=extra)
        recs.append(rec)
        _say(_summary(rec))
    _say(f"  coadd: spectroperf / plain x{np.median(rounds):.2f} (CPU, interleaved; rounds "
         f"{rounds.min():.2f}-{rounds.max():.2f})")
    return recs


BENCHMARKS = {"preproc": bench_preproc, "extract": bench_extract, "coadd": bench_coadd}
