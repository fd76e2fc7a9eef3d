"""``gpuspec demo``: simulate a small night and reduce it end to end.

The demo is the README's first command. It runs the simulator, then every
reduction step that exists, in data-flow order:

1. ``simulate``  — one exposure, cameras b0 r0 z0, a few bundles of fibers;
2. ``preproc``   — raw → preproc images;
3. ``extract``   — preproc → frames;
4. ``group``     — frames → HEALPix spectra files;
5. ``coadd``     — spectra → coadds.

When the production launcher is available, steps 2–5 run through
``gpuspec-run`` on a manifest written for the simulated night (SQLite state,
no MPI), exactly as a production would; otherwise they are called directly.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import logging
import os
import time

log = logging.getLogger("gpuspec.demo")

__all__ = ["run_demo", "add_parser"]


def _have(modname: str, attr: str) -> bool:
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError:
        return False
    return hasattr(mod, attr)


def _step(msg: str):
    print(f"[gpuspec demo] {msg}", flush=True)


def run_demo(out: str, cameras=("b0", "r0", "z0"), nspec: int = 50, nexp: int = 1, seed: int = 1,
             backend: str = "auto", use_launcher: bool | None = None) -> dict:
    """Simulate a small night in ``out/sim`` and reduce it into ``out/prod``.

    Parameters
    ----------
    out : str
        Output folder (created).
    cameras : sequence of str
        Cameras to simulate and reduce.
    nspec : int
        Fibers per camera (a multiple of 25).
    nexp : int
        Number of exposures.
    seed : int
        Simulator seed.
    backend : {"auto", "numpy", "cupy"}
        Array backend for the reduction steps.
    use_launcher : bool, optional
        Force (True) or avoid (False) ``gpuspec-run``; default: use it when present.

    Returns
    -------
    dict
        Paths of what was produced, per step.
    """
    from .sim import simulate_night

    out = os.path.abspath(out)
    simdir = os.path.join(out, "sim")
    prod = os.path.join(out, "prod")
    os.makedirs(out, exist_ok=True)
    result: dict = {"simdir": simdir, "prod": prod}

    t0 = time.perf_counter()
    _step(f"simulating {nexp} exposure(s), cameras {','.join(cameras)}, {nspec} fibers -> {simdir}")
    sim = simulate_night(simdir, cameras=list(cameras), nspec=nspec, nexp=nexp, seed=seed)
    result["simulation"] = sim

    if use_launcher is None:
        use_launcher = _have("gpuspec.launch.demo", "make_demo_manifest") and \
            _have("gpuspec.launch.runner", "run_manifest")
    if use_launcher:
        from .launch.demo import make_demo_manifest
        from .launch.runner import run_manifest

        # model_ivar: weight pixels by a model of the signal (unbiased fluxes; see
        # gpuspec.extract.variance) -- the coadds are then consistent with the truth.
        manifest = make_demo_manifest(simdir, prod, backend=backend,
                                      step_options={"extract": {"model_ivar": True}})
        _step(f"running the production with gpuspec-run {manifest}")
        rc = run_manifest(manifest)
        result["manifest"] = manifest
        result["launcher_rc"] = rc
        _step(f"production state: gpuspec status {prod} --once")
    else:
        result.update(_run_steps_directly(sim, simdir, prod, backend))
    _step(f"done in {time.perf_counter() - t0:.1f} s; outputs under {prod}")
    for kind in ("preproc", "frames", "spectra", "coadds"):
        files = result.get(kind)
        if files:
            _step(f"  {kind}: {len(files)} file(s), e.g. {files[0]}")
    return result


def _run_steps_directly(sim: dict, simdir: str, prod: str, backend: str) -> dict:
    """Run preproc → extract → group → coadd by calling the step functions."""
    res: dict = {}
    raws = sorted(glob.glob(os.path.join(simdir, "raw", "*", "*", "desi-*.fits*")))
    cameras = sim.get("cameras") or []
    if not _have("gpuspec.preproc", "preproc_file"):
        _step("preproc step not available yet: stopping after the simulation")
        return res
    from .preproc import preproc_file

    preprocs = []
    for raw in raws:
        night = os.path.basename(os.path.dirname(os.path.dirname(raw)))
        expid = int(os.path.basename(os.path.dirname(raw)))
        fmfile = os.path.join(os.path.dirname(raw), f"fibermap-{expid:08d}.fits")
        for cam in cameras:
            outfile = os.path.join(prod, "preproc", night, f"{expid:08d}",
                                   f"preproc-{cam}-{expid:08d}.fits")
            calib = {k: os.path.join(simdir, "calib", f"{k}-{cam}.fits")
                     for k in ("bias", "dark", "pixflat", "mask")}
            _step(f"preproc {cam} {expid}")
            preproc_file(raw, cam, outfile, fibermap=fmfile if os.path.exists(fmfile) else None,
                         backend=backend, **calib)
            preprocs.append((night, expid, cam, outfile))
    res["preproc"] = [p[3] for p in preprocs]

    if not _have("gpuspec.extract", "extract_file"):
        _step("extraction step not available yet: stopping after preproc")
        return res
    from .extract import extract_file

    frames = []
    waves = {"b": (3600.0, 5800.0, 0.8), "r": (5760.0, 7620.0, 0.8), "z": (7520.0, 9824.0, 0.8)}
    waves.update(sim.get("wave_ranges", {}) or {})
    for night, expid, cam, pre in preprocs:
        outfile = os.path.join(prod, "exposures", night, f"{expid:08d}",
                               f"frame-{cam}-{expid:08d}.fits")
        psffile = os.path.join(simdir, "psf", f"psf-{cam}.fits")
        w = waves.get(cam, waves.get(cam[0]))
        _step(f"extract {cam} {expid} ({w[0]:.0f}-{w[1]:.0f} A)")
        extract_file(pre, psffile, outfile, tuple(w), backend=backend, model_ivar=True)
        frames.append(outfile)
    res["frames"] = frames

    if not _have("gpuspec.coadd", "group_frames"):
        _step("grouping/coadd steps not available yet: stopping after extraction")
        return res
    from .coadd import coadd_file, group_frames

    _step("group frames by HEALPix pixel")
    spectra = group_frames(frames, os.path.join(prod, "healpix"))
    res["spectra"] = spectra
    coadds = []
    for sp in spectra:
        outfile = os.path.join(os.path.dirname(sp), os.path.basename(sp).replace("spectra-", "coadd-"))
        coadd_file(sp, outfile, backend=backend)
        coadds.append(outfile)
    _step(f"coadded {len(coadds)} HEALPix pixel(s)")
    res["coadds"] = coadds
    return res


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``gpuspec demo``."""
    p = subparsers.add_parser("demo", help="simulate a small night and reduce it end to end",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    p.add_argument("--cameras", default="b0,r0,z0", help="cameras (default b0,r0,z0)")
    p.add_argument("--nspec", type=int, default=50, help="fibers per camera (multiple of 25)")
    p.add_argument("--nexp", type=int, default=1, help="number of exposures")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-gpu", action="store_true", help="use numpy even if a GPU is present")
    p.add_argument("--no-launcher", action="store_true",
                   help="call the steps directly instead of through gpuspec-run")
    p.set_defaults(func=_cli)
    return p


def _cli(args) -> int:
    cams = [c.strip() for c in args.cameras.split(",") if c.strip()]
    res = run_demo(args.out, cameras=cams, nspec=args.nspec, nexp=args.nexp, seed=args.seed,
                   backend="numpy" if args.no_gpu else "auto",
                   use_launcher=False if args.no_launcher else None)
    rc = res.get("launcher_rc", 0)
    return int(rc or 0)
