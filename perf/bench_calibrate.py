#!/usr/bin/env python
"""Calibration benchmark: gpuspec vs desispec on one full-size frame, side by side.

One synthetic exposure of 500 fibers on the full DESI camera grid(s) (b 3600–5800,
r 5760–7620, z 7520–9824 Å at 0.8 Å; 50 sky fibers, 10 standard stars), built by
:func:`gpuspec.calibrate.synthetic.make_exposure`. For each camera, in the same process:

- ``fiberflat``: ``compute_fiberflat`` of the flat-lamp frame;
- ``sky``: ``compute_sky`` of the flat-fielded science frame (default method);
- ``fluxcalib``: ``compute_flux_calibration`` of the sky-subtracted frame with the
  same stellar models.

desispec 0.70 (the interop extra) runs the same call on the same arrays (its
fiber-acceptance corrections set to 1, as desimodel's data are not installed); the
record's ``reference`` holds its time and the ratio desispec / gpuspec (> 1: gpuspec
faster). Threads are pinned (default 1) before numpy is imported. gpuspec: 1 warm-up
and ``--repeat`` timed runs (median); desispec: one timed run (its runs are long).
Writes ``perf/results/<host>-<UTC stamp>-calibrate.jsonl`` (perf/protocol.py records).

Usage::

    python perf/bench_calibrate.py [--cameras r] [--backends numpy[,cupy]] [--no-desispec]
"""

from __future__ import annotations

import argparse
import os
import sys


def _pin_threads(n: int):
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[v] = str(n)


if __name__ == "__main__":
    _pre = argparse.ArgumentParser(add_help=False)
    _pre.add_argument("--threads", type=int, default=1)
    _pin_threads(_pre.parse_known_args()[0].threads)

import logging  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

import perf.protocol as P  # noqa: E402
from gpuspec import backend  # noqa: E402
from gpuspec.calibrate.fiberflat import apply_fiberflat, compute_fiberflat  # noqa: E402
from gpuspec.calibrate.fluxcalib import compute_flux_calibration  # noqa: E402
from gpuspec.calibrate.sky import compute_sky, subtract_sky  # noqa: E402
from gpuspec.calibrate.synthetic import make_exposure  # noqa: E402
from gpuspec.grids import DESI_WAVE as PRODUCTION_WAVE, WAVE_STEP  # noqa: E402


def full_waves(bands):
    from gpuspec.coadd.synth import camera_waves

    return camera_waves(bands, step=WAVE_STEP, ranges=PRODUCTION_WAVE)


def _desi_frame(fr):
    import desispec.frame
    from astropy.table import Table

    return desispec.frame.Frame(fr.wave.copy(), np.array(fr.flux, float),
                                np.array(fr.ivar, float),
                                mask=np.array(fr.mask).astype(np.uint32),
                                resolution_data=np.array(fr.resolution_data, float),
                                fibermap=Table(np.asarray(fr.fibermap).copy()),
                                meta=dict(fr.meta))


def _desispec_setup():
    try:
        import desispec.fiberfluxcorr as ffc
        from desiutil.log import get_logger
    except ImportError:
        return False
    get_logger().setLevel(logging.WARNING)
    ffc.flat_to_psf_flux_correction = lambda fm, seeing=1.1: np.ones(len(fm))
    ffc.psf_to_fiber_flux_correction = lambda fm, seeing=1.1: np.ones(len(fm))
    return True


def _inputs(exp, cam):
    """Flat frame, flat-fielded frame, sky-subtracted frame (numpy) of one camera."""
    ff = compute_fiberflat(exp.flats[cam], backend="numpy")
    fr = apply_fiberflat(exp.frames[cam], ff, backend="numpy")
    sky = compute_sky(fr, backend="numpy")
    return exp.flats[cam], fr, subtract_sky(fr, sky, backend="numpy")


def _desi_calls(exp, flat, fr, sub):
    import desispec.fiberflat
    import desispec.fluxcalibration
    import desispec.sky

    tr = exp.truth
    return {
        "fiberflat": ("desispec.fiberflat.compute_fiberflat",
                      lambda: desispec.fiberflat.compute_fiberflat(_desi_frame(flat))),
        "sky": ("desispec.sky.compute_sky", lambda: desispec.sky.compute_sky(_desi_frame(fr))),
        "fluxcalib": ("desispec.fluxcalibration.compute_flux_calibration",
                      lambda: desispec.fluxcalibration.compute_flux_calibration(
                          _desi_frame(sub), tr["template_wave"], tr["template_flux"],
                          tr["std_fibers"])),
    }


def _our_calls(exp, flat, fr, sub, name):
    tr = exp.truth
    return {
        "fiberflat": lambda: compute_fiberflat(flat, backend=name),
        "sky": lambda: compute_sky(fr, backend=name),
        "fluxcalib": lambda: compute_flux_calibration(sub, tr["template_wave"],
                                                      tr["template_flux"], tr["std_fibers"],
                                                      backend=name),
    }


def run(args) -> list[dict]:
    have_desi = (not args.no_desispec) and _desispec_setup()
    bands = tuple(c[0] for c in args.cameras.split(","))
    exp = make_exposure(nfiber=args.nfiber, bands=bands, waves=full_waves(bands),
                        nsky=args.nsky, nstd=args.nstd, seed=1)
    recs = []
    for cam in (f"{b}0" for b in bands):
        flat, fr, sub = _inputs(exp, cam)
        sizes = {"nspec": exp.frames[cam].nspec, "nwave": exp.frames[cam].nwave,
                 "nsky": args.nsky, "nstd": args.nstd, "camera": cam}
        desi = {}
        if have_desi:
            for step, (call, fn) in _desi_calls(exp, flat, fr, sub).items():
                t0 = time.perf_counter()
                fn()
                desi[step] = (call, time.perf_counter() - t0)
                print(f"{cam} {step:10s} desispec {desi[step][1]:8.2f} s", flush=True)
        for name in args.backends.split(","):
            try:
                xp = backend.get_xp(name)
            except backend.BackendUnavailable as exc:
                print(f"skip {name}: {exc}")
                continue
            for step, fn in _our_calls(exp, flat, fr, sub, name).items():
                la = list(os.getloadavg())
                timing = P.measure(fn, xp, warmup=1, repeat=args.repeat)
                ref = None
                if step in desi:
                    call, s = desi[step]
                    ref = {"name": f"desispec 0.70 {step}", "call": call, "key": "same run",
                           "seconds": s, "ratio": s / timing["median_s"],
                           "measured_on": "this machine, this run, same inputs, 1 run"}
                recs.append(P.record("calibrate", f"{step}-{cam[0]}", size="full",
                                     backend_name=name, timing=timing, xp=xp, sizes=sizes,
                                     reference=ref, loadavg_before=la))
                r = f"  ratio {ref['ratio']:.2f}" if ref else ""
                print(f"{cam} {step:10s} gpuspec[{name}] {timing['median_s']:8.3f} s{r}",
                      flush=True)
    return recs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cameras", default="b0,r0,z0")
    p.add_argument("--backends", default="numpy")
    p.add_argument("--nfiber", type=int, default=500)
    p.add_argument("--nsky", type=int, default=50)
    p.add_argument("--nstd", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-desispec", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    recs = run(args)
    host = P.machine()["host"]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(args.out, f"{host}-{stamp}-calibrate.jsonl")
    for r in recs:
        errs = P.validate(r)
        if errs:
            raise SystemExit(f"invalid record: {errs}")
    if recs:
        P.append(path, recs)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
