"""``gpuspec demo``: simulate a small night and reduce it end to end.

The demo is the README's first command. It runs the simulator, then every
reduction step that exists, in data-flow order:

1. ``simulate``  — one exposure, cameras b0 r0 z0, a few bundles of fibers;
2. ``preproc``   — raw → preproc images;
3. ``extract``   — preproc → frames;
4. ``group``     — frames → HEALPix spectra files;
5. ``coadd``     — spectra → coadds.

Steps 2–5 run through ``gpuspec-run`` on a manifest written for the simulated
night (SQLite state, no MPI), exactly as a production would; with
``--no-launcher`` the same tasks are called one after the other in this process.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

log = logging.getLogger("gpuspec.demo")

__all__ = ["run_demo", "add_parser"]


def _step(msg: str):
    print(f"[gpuspec demo] {msg}", flush=True)


def run_demo(out: str, cameras=("b0", "r0", "z0"), nspec: int = 50, nexp: int = 1, seed: int = 1,
             backend: str = "auto", use_launcher: bool = True) -> dict:
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
    use_launcher : bool
        True: ``gpuspec-run`` (SQLite state). False: the same tasks (same graph,
        names and settings) called one after the other in this process, no state.

    Returns
    -------
    dict
        Paths of what was produced, per step. Host side; the steps run on ``backend``.
    """
    from .launch.demo import make_demo_manifest
    from .sim import simulate_night

    out = os.path.abspath(out)
    simdir = os.path.join(out, "sim")
    prod = os.path.join(out, "prod")
    os.makedirs(out, exist_ok=True)
    result: dict = {"simdir": simdir, "prod": prod}

    t0 = time.perf_counter()
    _step(f"simulating {nexp} exposure(s), cameras {','.join(cameras)}, {nspec} fibers -> {simdir}")
    result["simulation"] = simulate_night(simdir, cameras=list(cameras), nspec=nspec, nexp=nexp,
                                          seed=seed)
    # model_ivar: weight pixels by a model of the signal (unbiased fluxes; see
    # gpuspec.extract.variance) -- the coadds are then consistent with the truth.
    manifest = make_demo_manifest(simdir, prod, backend=backend,
                                  step_options={"extract": {"model_ivar": True}})
    result["manifest"] = manifest
    if use_launcher:
        from .launch.runner import run_manifest

        _step(f"running the production with gpuspec-run {manifest}")
        result["launcher_rc"] = run_manifest(manifest)
        _step(f"production state: gpuspec status {prod} --once")
    else:
        _run_tasks_directly(manifest)
    result.update(_products(manifest))
    _step(f"done in {time.perf_counter() - t0:.1f} s; outputs under {prod}")
    for kind in ("preproc", "frames", "spectra", "coadds"):
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

    kinds = {"preproc": "preproc", "frame": "frames", "group": "spectra", "coadd": "coadds"}
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
                   help="call the tasks one after the other in this process (no gpuspec-run, "
                        "no state database)")
    p.set_defaults(func=_cli)
    return p


def _cli(args) -> int:
    cams = [c.strip() for c in args.cameras.split(",") if c.strip()]
    res = run_demo(args.out, cameras=cams, nspec=args.nspec, nexp=args.nexp, seed=args.seed,
                   backend="numpy" if args.no_gpu else "auto",
                   use_launcher=not args.no_launcher)
    rc = res.get("launcher_rc", 0)
    return int(rc or 0)
