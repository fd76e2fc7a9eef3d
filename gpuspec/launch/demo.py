"""Manifest for a simulated night (``gpuspec simulate --out D``).

:func:`make_demo_manifest` looks at the simulator's output folder (layout in
docs/design.md, "Simulated night layout")::

    D/raw/{NIGHT}/{EXPID:08d}/desi-{EXPID:08d}.fits.fz   (+ fibermap-{EXPID:08d}.fits)
    D/calib/{bias,dark,pixflat,mask}-{camera}.fits
    D/psf/psf-{camera}.fits

and writes a manifest running the gpuspec steps on it, for example the README
demo: a flat-lamp exposure and science exposures, three cameras, a few bundles,
one process, SQLite state. Flat exposures are recognised by the OBSTYPE of their
raw header (:mod:`gpuspec.launch.calibgraph`); with at least one (or a nightly
``fiberflat``) the calibration steps are included by default::

    from gpuspec.launch.demo import make_demo_manifest
    path = make_demo_manifest("sim", "prod", bundles=[0, 1])
    # then: gpuspec-run prod/manifest.yaml
"""

from __future__ import annotations

import glob
import os
import re

import yaml

from ..camword import cameras_to_camword, is_camera
from ..extract.defaults import SPECTER
from .manifest import CALIB_KINDS, CALIB_STEPS, STEPS, load_manifest

__all__ = ["make_demo_manifest", "find_exposures", "find_cameras"]


def find_exposures(simdir: str) -> list[tuple[int, int]]:
    """``(night, expid)`` of every ``raw/{NIGHT}/{EXPID}/desi-{EXPID}.fits.fz`` (or ``.fits``).

    Backends: host only.
    """
    out = []
    for path in sorted(glob.glob(os.path.join(simdir, "raw", "*", "*", "desi-*.fits*"))):
        m = re.search(r"raw/(\d+)/(\d{8})/desi-(\d{8})\.fits(\.fz)?$", path.replace(os.sep, "/"))
        if m and m.group(2) == m.group(3):
            out.append((int(m.group(1)), int(m.group(2))))
    return sorted(set(out))


def find_cameras(simdir: str) -> list[str]:
    """Cameras that have a PSF ``psf/psf-{camera}.fits``.

    Backends: host only.
    """
    cams = []
    for path in glob.glob(os.path.join(simdir, "psf", "psf-*.fits")):
        c = os.path.basename(path)[4:-5]
        if is_camera(c):
            cams.append(c)
    return sorted(cams)


def _simulation_info(simdir: str) -> dict:
    import json

    path = os.path.join(simdir, "simulation.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _sim_wavelength(info: dict):
    """{arm: [min, max, step]} from simulation.json, or None."""
    step = info.get("wave_step")
    out = {}
    for cam, ci in (info.get("camera_info") or {}).items():
        wr = ci.get("wave_range") if isinstance(ci, dict) else None
        if step and wr and len(wr) == 2:
            out[cam[0]] = [float(wr[0]), float(wr[1]), float(step)]
    return out or None


def _available_steps(registry: str) -> list[str]:
    from .registry import get_registry

    reg = get_registry(registry)
    missing = reg.unavailable(STEPS)
    steps = []
    for s in STEPS:  # stop at the first step that cannot run: the later ones need its outputs
        if s in missing:
            break
        steps.append(s)
    return steps


def _demo_steps(steps, registry, calibrate, fiberflat, simdir, chosen) -> list:
    """The steps of the demo manifest: those given, else every available one, without
    the calibration steps when the night has no flat (and no fiberflat is given)."""
    if steps is None:
        steps = _available_steps(registry)
        if calibrate is None:
            calibrate = fiberflat is not None or _has_flats(simdir, chosen)
        if not calibrate:
            steps = [s for s in steps if s not in CALIB_STEPS]
    return list(steps)


def _extract_settings(nbundles, fibers_per_bundle, bundles_per_task, wavelength, bundles,
                      flat_extract_options) -> dict:
    """``steps.extract`` of the demo manifest."""
    out = {"nbundles": int(nbundles), "fibers_per_bundle": int(fibers_per_bundle),
           "bundles_per_task": int(bundles_per_task), "wavelength": wavelength}
    if bundles is not None:
        out["bundles"] = [int(b) for b in bundles]
    if flat_extract_options is not None:
        out["flat_options"] = dict(flat_extract_options)
    return out


def make_demo_manifest(simdir: str, proddir: str, *, manifest: str | None = None,
                       exposures: list | None = None, cameras=None, bundles=(0, 1, 2),
                       bundles_per_task: int = 1, nbundles: int = 20,
                       fibers_per_bundle: int = SPECTER.bundlesize, steps: list | None = None,
                       backend: str = "auto", wavelength=None, nside: int = 64,
                       registry: str = "desi", progress_interval: float = 10.0,
                       step_options: dict | None = None, calibrate: bool | None = None,
                       fiberflat=None, flat_extract_options: dict | None = None) -> str:
    """Write a manifest that reduces a simulated night; return its path.

    Parameters
    ----------
    simdir : str
        Output folder of the simulator.
    proddir : str
        Production folder to create.
    manifest : str, optional
        Where to write the manifest (default ``{proddir}/manifest.yaml``).
    exposures : list of (night, expid) or of expid, optional
        Default: every exposure found under ``simdir/raw``.
    cameras : camword or list, optional
        Default: every camera with a PSF under ``simdir/psf``.
    bundles : sequence of int or None
        Bundles to extract (None: all ``nbundles``); those beyond the simulated
        fibers (``nspec`` of ``simulation.json``) are dropped.
    bundles_per_task, nbundles, fibers_per_bundle : int
        Task sizing and the bundle geometry.
    steps : list of str, optional
        Default: the steps whose implementation is installed, in data-flow order
        up to the first missing one.
    backend : {"auto", "numpy", "cupy"}
    wavelength : "psf", "default" or {arm: [min, max, step]}, optional
        Default: the simulated ``wave_range`` and ``wave_step`` of each arm from
        ``simulation.json``, else ``"default"`` (the DESI grids).
    nside : int
        HEALPix nside of the group step.
    registry : str
        Step registry (``desi``).
    progress_interval : float
        Seconds between progress lines.
    step_options : dict of step -> dict, optional
        Keyword options of each step's function (``steps.<step>.options`` in the
        manifest), e.g. ``{"extract": {"model_ivar": True}}``.
    calibrate : bool, optional
        Include the calibration steps (fiberflat … cframe; group and coadd then read
        cframes). Default: when a chosen exposure is a flat (OBSTYPE FLAT in its raw
        header) or ``fiberflat`` is given; otherwise the production is uncalibrated.
        Ignored when ``steps`` is given.
    fiberflat : str or dict, optional
        Nightly fiber flat (``inputs.fiberflat``: a template with ``{camera}``,
        ``{night}``, or a camera mapping).
    flat_extract_options : dict, optional
        Extraction options for the flat-lamp exposures (``steps.extract.flat_options``;
        default: those of the science exposures).

    Returns
    -------
    str
        Path of the manifest; it has been validated with
        :func:`gpuspec.launch.manifest.load_manifest`.

    Backends: host only (writes YAML; ``backend`` is the one the production will use).
    """
    simdir = os.path.abspath(simdir)
    proddir = os.path.abspath(proddir)
    chosen = _choose_exposures(simdir, exposures)
    camword = _camword(simdir, cameras)
    steps = _demo_steps(steps, registry, calibrate, fiberflat, simdir, chosen)
    info = _simulation_info(simdir)
    nspec = info.get("nspec")
    if bundles is not None and nspec:
        nb = -(-int(nspec) // int(fibers_per_bundle))
        bundles = [b for b in bundles if b < nb]
        if not bundles:
            raise ValueError(f"none of the requested bundles holds simulated fibers (nspec={nspec})")
    if wavelength is None:
        wavelength = _sim_wavelength(info) or "default"
    doc = {
        "production": proddir,
        "registry": registry,
        "backend": backend,
        "inputs": {
            "rawdir": os.path.join(simdir, "raw"),
            "cameras": camword,
            "exposures": [{"night": n, "expid": e} for n, e in chosen],
            "psf": os.path.join(simdir, "psf", "psf-{camera}.fits"),
            "calib": _sim_calib(simdir),
            **({"fiberflat": fiberflat} if fiberflat is not None else {}),
        },
        "steps": {s: {} for s in steps},
        "run": {"progress_interval": float(progress_interval)},
    }
    if "extract" in steps:
        doc["steps"]["extract"] = _extract_settings(nbundles, fibers_per_bundle,
                                                    bundles_per_task, wavelength, bundles,
                                                    flat_extract_options)
    if "group" in steps:
        doc["steps"]["group"] = {"nside": int(nside)}
    for s, opts in (step_options or {}).items():
        if s in doc["steps"] and opts:
            doc["steps"][s]["options"] = dict(opts)
    return _write_manifest(doc, manifest or os.path.join(proddir, "manifest.yaml"), simdir)


def _choose_exposures(simdir: str, exposures) -> list[tuple[int, int]]:
    found = find_exposures(simdir)
    if not found:
        raise FileNotFoundError(f"no raw exposure under {simdir}/raw/NIGHT/EXPID/")
    if exposures is None:
        return found
    chosen = []
    for e in exposures:
        if isinstance(e, (tuple, list)):
            chosen.append((int(e[0]), int(e[1])))
            continue
        match = [f for f in found if f[1] == int(e)]
        if not match:
            raise FileNotFoundError(f"exposure {e} not found under {simdir}/raw")
        chosen.append(match[0])
    return chosen


def _has_flats(simdir: str, chosen) -> bool:
    """True when one of the chosen exposures is a flat (OBSTYPE FLAT in its raw header)."""
    from .calibgraph import exposure_obstype

    for night, expid in chosen:
        d = os.path.join(simdir, "raw", str(night), f"{expid:08d}")
        raws = glob.glob(os.path.join(d, f"desi-{expid:08d}.fits*"))
        if raws and exposure_obstype(raws[0]) == "FLAT":
            return True
    return False


def _camword(simdir: str, cameras) -> str:
    if cameras is None:
        cams = find_cameras(simdir)
        if not cams:
            raise FileNotFoundError(f"no PSF under {simdir}/psf/psf-CAMERA.fits")
        return cameras_to_camword(cams)
    return cameras if isinstance(cameras, str) else cameras_to_camword(list(cameras))


def _sim_calib(simdir: str) -> dict:
    """``{kind: template}`` of the calibrations the simulator wrote."""
    calib = {}
    for kind in CALIB_KINDS:
        if glob.glob(os.path.join(simdir, "calib", f"{kind}-*.fits")):
            calib[kind] = os.path.join(simdir, "calib", f"{kind}-{{camera}}.fits")
    return calib


def _write_manifest(doc: dict, path: str, simdir: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = ("# gpuspec-run manifest for the simulated night in " + simdir + "\n"
            "# run: gpuspec-run " + os.path.abspath(path) + "\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    load_manifest(path)  # validate what was written
    return os.path.abspath(path)


def main(argv=None) -> int:
    """``python -m gpuspec.launch.demo SIMDIR PRODDIR [--bundles 0,1] ...``: write the manifest.

    Backends: host only.
    """
    import argparse

    p = argparse.ArgumentParser(prog="python -m gpuspec.launch.demo",
                                description="Write a gpuspec-run manifest for a folder made by "
                                            "'gpuspec simulate'.")
    p.add_argument("simdir")
    p.add_argument("proddir")
    p.add_argument("--manifest", help="manifest path (default PRODDIR/manifest.yaml)")
    p.add_argument("--bundles", default="0,1,2", help="bundles to extract (default 0,1,2)")
    p.add_argument("--bundles-per-task", type=int, default=1)
    p.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"))
    p.add_argument("--steps", help="comma-separated steps (default: all installed; the "
                                   "calibration steps only with a flat exposure)")
    a = p.parse_args(argv)
    path = make_demo_manifest(a.simdir, a.proddir, manifest=a.manifest,
                              bundles=[int(b) for b in a.bundles.split(",") if b.strip()],
                              bundles_per_task=a.bundles_per_task, backend=a.backend,
                              steps=a.steps.split(",") if a.steps else None)
    print(path)
    print(f"run: gpuspec-run {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
