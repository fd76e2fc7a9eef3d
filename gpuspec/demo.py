"""``gpuspec demo``: simulate a small night and reduce it end to end.

The demo is the README's first command. It runs the simulator, then every
reduction step, in data-flow order:

1. ``simulate``       — a flat-lamp exposure and two science exposures, cameras
   b0 r0 z0, 25 fibers (8 sky fibers, 5 standard stars);
2. ``preproc``        — raw → preproc images;
3. ``extract``        — preproc → frames (science: with model-based pixel ivar;
   the bright flat: one pass);
4. ``fiberflat``      — flat frame → fiberflat, then ``fiberflatnight`` (autocalib);
5. ``sky``, ``stdstars``, ``fluxcalib``, ``cframe`` — science frames → calibrated
   frames in 10⁻¹⁷ erg/s/cm²/Å;
6. ``group``          — cframes → HEALPix spectra files;
7. ``coadd``          — spectra → coadds.

Steps 2–7 run through ``gpuspec-run`` on a manifest written for the simulated
night (SQLite state, no MPI), exactly as a production would; with
``--no-launcher`` the same tasks are called one after the other in this process.
``--nflat 0`` gives the uncalibrated production (group and coadd on frames).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

log = logging.getLogger("gpuspec.demo")

__all__ = ["run_demo", "add_parser"]


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children.

    The launcher runs each task in a child process (``gpuspec.launch.isolate``), so
    ``time.process_time()`` alone would miss almost all of the work.
    """
    import resource

    t = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        t += r.ru_utime + r.ru_stime
    return t


def _step(msg: str):
    print(f"[gpuspec demo] {msg}", flush=True)


#: The demo's night: fibers, exposures, sky fibers and standard stars per petal.
DEMO = dict(nspec=25, nexp=2, nflat=1, nsky=8, nstd=5)


def run_demo(out: str, cameras=("b0", "r0", "z0"), nspec: int = DEMO["nspec"],
             nexp: int = DEMO["nexp"], seed: int = 1, backend: str = "auto",
             use_launcher: bool = True, nflat: int = DEMO["nflat"], nsky: int | None = None,
             nstd: int | None = None, wave_ranges=None) -> dict:
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
        Number of science exposures.
    seed : int
        Simulator seed.
    backend : {"auto", "numpy", "cupy"}
        Array backend for the reduction steps.
    use_launcher : bool
        True: ``gpuspec-run`` (SQLite state). False: the same tasks (same graph,
        names and settings) called one after the other in this process, no state.
    nflat : int
        Flat-lamp exposures (0: no calibration, group and coadd read frames).
    nsky, nstd : int, optional
        Sky fibers and standard stars of the petal (default: 8 and 5 with 25 fibers,
        scaled with ``nspec``; the simulator's defaults without flats).
    wave_ranges : dict, optional
        ``{band: (wmin, wmax)}`` for the simulator (default: the production grids).

    Returns
    -------
    dict
        Paths of what was produced, per step. Host side; the steps run on ``backend``.

    Backends: numpy, cupy (``backend``); file I/O on the host.
    """
    from .launch.demo import make_demo_manifest
    from .sim import simulate_night

    out = os.path.abspath(out)
    simdir = os.path.join(out, "sim")
    prod = os.path.join(out, "prod")
    os.makedirs(out, exist_ok=True)
    result: dict = {"simdir": simdir, "prod": prod}

    t0 = time.perf_counter()
    c0 = _cpu_seconds()
    if nflat and nsky is None:
        nsky = max(1, round(DEMO["nsky"] * nspec / DEMO["nspec"]))
    if nflat and nstd is None:
        nstd = max(1, round(DEMO["nstd"] * nspec / DEMO["nspec"]))
    _step(f"simulating {nflat} flat-lamp and {nexp} science exposure(s), cameras "
          f"{','.join(cameras)}, {nspec} fibers -> {simdir}")
    result["simulation"] = simulate_night(simdir, cameras=list(cameras), nspec=nspec, nexp=nexp,
                                          seed=seed, nflat=nflat, nsky=nsky, nstd=nstd,
                                          wave_ranges=wave_ranges)
    # model_ivar: weight pixels by a model of the signal (unbiased fluxes; see
    # gpuspec.extract.variance) -- the coadds are then consistent with the truth. The
    # flat lamp (~1e4 electrons per pixel) does not need it: one extraction pass.
    manifest = make_demo_manifest(simdir, prod, backend=backend,
                                  step_options={"extract": {"model_ivar": True}},
                                  flat_extract_options={})
    result["manifest"] = manifest
    if use_launcher:
        from .launch.runner import run_manifest

        _step(f"running the production with gpuspec-run {manifest}")
        result["launcher_rc"] = run_manifest(manifest)
        _step(f"production state: gpuspec status {prod} --once")
    else:
        _run_tasks_directly(manifest)
    result.update(_products(manifest))
    result["wall_s"], result["cpu_s"] = time.perf_counter() - t0, _cpu_seconds() - c0
    _step(f"done in {result['wall_s']:.1f} s ({result['cpu_s']:.1f} s CPU, tasks' processes "
          f"included); outputs under {prod}")
    for kind in ("preproc", "frames", "fiberflats", "cframes", "spectra", "coadds"):
        files = result.get(kind)
        if files:
            _step(f"  {kind}: {len(files)} file(s), e.g. {files[0]}")
    if use_launcher:
        _write_report(prod, result)
    return result


def _write_report(prod: str, result: dict) -> None:
    """The production report (``gpuspec report``); skipped with a note without matplotlib."""
    try:
        from .qa.report import write_report
    except ImportError as exc:  # the qa extra is not installed
        _step(f"no report: {exc}")
        return
    try:
        result["report"] = write_report(prod, os.path.join(prod, "report.html"))
    except ImportError as exc:  # MissingDependencyError (matplotlib) is an ImportError
        _step(f"no report: {exc}")
        return
    _step(f"report: {result['report']}")


def _products(manifest: str) -> dict:
    """The outputs of each step of the production that exist."""
    from .launch.graph import build_graph
    from .launch.manifest import load_manifest

    kinds = {"preproc": "preproc", "frame": "frames", "fiberflatnight": "fiberflats",
             "cframe": "cframes", "group": "spectra", "coadd": "coadds"}
    out: dict = {}
    for t in build_graph(load_manifest(manifest)):
        if t.step in kinds:
            out.setdefault(kinds[t.step], []).extend(o for o in t.outputs if os.path.exists(o))
    return out


def _run_tasks_directly(manifest: str) -> None:
    """Every task of the manifest in graph order, in this process, without a state database."""
    from .launch.graph import build_graph
    from .launch.manifest import load_manifest
    from .launch.registry import TaskContext, get_registry

    m = load_manifest(manifest)
    reg = get_registry(m.data["registry"])
    ctx = TaskContext(backend=m.data["backend"], production=m.production)
    for t in build_graph(m, ext=reg.ext):
        _step(f"{t.name}")
        reg.func(t.step)(t, ctx)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``gpuspec demo``.

    Backends: host only (argparse).
    """
    p = subparsers.add_parser("demo", help="simulate a small night and reduce it end to end",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    p.add_argument("--cameras", default="b0,r0,z0", help="cameras (default b0,r0,z0)")
    p.add_argument("--nspec", type=int, default=DEMO["nspec"],
                   help=f"fibers per camera (multiple of 25; default {DEMO['nspec']})")
    p.add_argument("--nexp", type=int, default=DEMO["nexp"],
                   help=f"number of science exposures (default {DEMO['nexp']})")
    p.add_argument("--nflat", type=int, default=DEMO["nflat"],
                   help=f"flat-lamp exposures (default {DEMO['nflat']}; 0: uncalibrated, "
                        "group and coadd on frames)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-gpu", action="store_true", help="use numpy even if a GPU is present")
    p.add_argument("--no-launcher", action="store_true",
                   help="call the tasks one after the other in this process (no gpuspec-run, "
                        "no state database)")
    p.set_defaults(func=_cli)
    return p


def _cli(args) -> int:
    cams = [c.strip() for c in args.cameras.split(",") if c.strip()]
    res = run_demo(args.out, cameras=cams, nspec=args.nspec, nexp=args.nexp, seed=args.seed,
                   backend="numpy" if args.no_gpu else "auto",
                   use_launcher=not args.no_launcher, nflat=args.nflat)
    rc = res.get("launcher_rc", 0)
    return int(rc or 0)
