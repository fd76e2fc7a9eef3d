"""Task graph of a production: manifest -> tasks with inputs, outputs and dependencies.

::

    preproc(expid, camera) -> extract(expid, camera, bundles) -> frame(expid, camera)
        -> group(healpix) -> coadd(healpix)

Output paths follow the DESI production layout under the production folder::

    preproc/{NIGHT}/{EXPID:08d}/preproc-{cam}-{EXPID:08d}.fits
    exposures/{NIGHT}/{EXPID:08d}/bundles/frame-{cam}-{EXPID:08d}-b{B0:02d}-{B1:02d}.fits
    exposures/{NIGHT}/{EXPID:08d}/frame-{cam}-{EXPID:08d}.fits
    healpix/{SURVEY}/{PROGRAM}/{HPIX//100}/{HPIX}/spectra-{SURVEY}-{PROGRAM}-{HPIX}.fits
    healpix/{SURVEY}/{PROGRAM}/{HPIX//100}/{HPIX}/coadd-{SURVEY}-{PROGRAM}-{HPIX}.fits

A group task exists for every HEALPix pixel (NESTED, ``steps.group.nside``) that
holds at least one fiber extracted from one of the frames; the pixels come from
the fibermaps (``FIBER``, ``TARGET_RA``, ``TARGET_DEC``). Its dependencies are the
frames with fibers in that pixel.

A step listed in ``steps.<s>.after`` adds a barrier: every task of ``s`` waits for
every task of the listed steps. Steps absent from the manifest create no tasks;
their outputs, when a later step needs them, must already exist.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Iterable

import numpy as np

from .manifest import STEP_CHAIN, STEPS, Manifest, ManifestError

__all__ = ["Task", "build_graph", "topological_order", "outputs_current", "rerun_command",
           "fibermap_pixels", "paths"]


@dataclasses.dataclass
class Task:
    """One unit of work.

    Attributes
    ----------
    name : str
        Unique name, e.g. ``extract-b0-00000001-b00-01``.
    step : str
        One of :data:`gpuspec.launch.manifest.STEPS`.
    deps : list of str
        Names of the tasks that must be done first.
    inputs : list of str
        Every file read (outputs of ``deps`` and external inputs).
    outputs : list of str
        Every file written.
    params : dict
        JSON-serialisable arguments for the step function (see ``steps.py``).
    command : str
        Shell command that re-runs this task alone.
    """

    name: str
    step: str
    deps: list
    inputs: list
    outputs: list
    params: dict
    command: str = ""
    order: int = 0


# --------------------------------------------------------------------------- paths

class paths:
    """DESI production layout (relative to the production folder)."""

    @staticmethod
    def preproc(prod, night, expid, cam, ext="fits"):
        return os.path.join(prod, "preproc", str(night), f"{expid:08d}",
                            f"preproc-{cam}-{expid:08d}.{ext}")

    @staticmethod
    def partial_frame(prod, night, expid, cam, b0, b1, ext="fits"):
        return os.path.join(prod, "exposures", str(night), f"{expid:08d}", "bundles",
                            f"frame-{cam}-{expid:08d}-b{b0:02d}-{b1:02d}.{ext}")

    @staticmethod
    def frame(prod, night, expid, cam, ext="fits"):
        return os.path.join(prod, "exposures", str(night), f"{expid:08d}",
                            f"frame-{cam}-{expid:08d}.{ext}")

    @staticmethod
    def healpix_dir(prod, survey, program, hpix):
        return os.path.join(prod, "healpix", survey, program, str(hpix // 100), str(hpix))

    @staticmethod
    def spectra(prod, survey, program, hpix, ext="fits"):
        return os.path.join(paths.healpix_dir(prod, survey, program, hpix),
                            f"spectra-{survey}-{program}-{hpix}.{ext}")

    @staticmethod
    def coadd(prod, survey, program, hpix, ext="fits"):
        return os.path.join(paths.healpix_dir(prod, survey, program, hpix),
                            f"coadd-{survey}-{program}-{hpix}.{ext}")


def rerun_command(manifest_path: str, task_name: str) -> str:
    """The command that re-runs one task alone (one process, log on the terminal)."""
    return f"gpuspec-run {shlex.quote(manifest_path)} --task {shlex.quote(task_name)}"


# --------------------------------------------------------------------------- healpix

_FM_CACHE: dict = {}


def fibermap_pixels(fibermap: str, fibers: Iterable[int], nside: int) -> dict[int, list[int]]:
    """HEALPix pixels (NESTED) of the given fibers: ``{pixel: [fibers...]}``.

    Reads ``FIBER``, ``TARGET_RA``, ``TARGET_DEC`` from the ``FIBERMAP`` HDU (or the
    first table). Fibers absent from the fibermap or with non-finite coordinates
    are ignored.
    """
    import fitsio
    import healpy

    key = (os.path.abspath(fibermap), os.stat(fibermap).st_mtime_ns)
    if key not in _FM_CACHE:
        with fitsio.FITS(fibermap) as f:
            ext = "FIBERMAP" if "FIBERMAP" in f else 1
            names = f[ext].get_colnames()
            for col in ("FIBER", "TARGET_RA", "TARGET_DEC"):
                if col not in names:
                    raise ManifestError(f"fibermap {fibermap} HDU {ext} has no column {col}")
            t = f[ext].read(columns=["FIBER", "TARGET_RA", "TARGET_DEC"])
        _FM_CACHE[key] = (np.asarray(t["FIBER"]).astype(np.int64),
                          np.asarray(t["TARGET_RA"]).astype(np.float64),
                          np.asarray(t["TARGET_DEC"]).astype(np.float64))
    fib, ra, dec = _FM_CACHE[key]
    sel = np.isin(fib, np.asarray(list(fibers), dtype=np.int64)) & np.isfinite(ra) & np.isfinite(dec)
    pix = healpy.ang2pix(nside, ra[sel], dec[sel], nest=True, lonlat=True)
    out: dict[int, list[int]] = {}
    for p, f in zip(pix.tolist(), fib[sel].tolist()):
        out.setdefault(int(p), []).append(int(f))
    return out


# --------------------------------------------------------------------------- graph

def _bundle_groups(ext: dict) -> list[list[int]]:
    bundles = ext.get("bundles")
    if bundles is None:
        bundles = list(range(ext["nbundles"]))
    bundles = sorted(set(bundles))
    n = ext["bundles_per_task"]
    return [bundles[i:i + n] for i in range(0, len(bundles), n)]


def _wavelength(ext: dict, cam: str):
    w = ext.get("wavelength", "default")
    if w == "psf":
        return "psf"
    if w == "default":
        from .manifest import DEFAULT_WAVELENGTH

        return list(DEFAULT_WAVELENGTH[cam[0]])
    if cam[0] not in w:
        return None
    return list(w[cam[0]])


def build_graph(m: Manifest, ext: str = "fits") -> list[Task]:
    """Expand a manifest into tasks, in a topological order.

    Parameters
    ----------
    m : Manifest
    ext : str
        File extension of the products (``fits``; the toy registry uses ``json``).

    Returns
    -------
    list of Task

    Raises
    ------
    ManifestError
        An input that a listed step needs from a step not run is missing, a
        wavelength grid is missing for an arm, or the graph has a cycle.
    """
    prod = m.production
    run = set(m.steps)
    tasks: dict[str, Task] = {}
    by_step: dict[str, list[str]] = {s: [] for s in STEPS}
    calibs = ("bias", "dark", "pixflat", "mask")
    xs = m.step("extract") if "extract" in m.data["steps"] else _extract_defaults(m)
    groups = _bundle_groups(xs)
    fpb = xs["fibers_per_bundle"]
    nfib_cam = xs["nbundles"] * fpb
    grp = m.step("group") if "group" in m.data["steps"] else _group_defaults(m)
    nside, survey, program = grp["nside"], grp["survey"], grp["program"]
    producer: dict[str, str] = {}  # output file -> task name

    def add(t: Task):
        if t.step not in run:
            return
        if t.name in tasks:
            raise ManifestError(f"duplicate task {t.name}", m.path)
        for o in t.outputs:
            producer[o] = t.name
        tasks[t.name] = t
        by_step[t.step].append(t.name)

    frames_of_pixel: dict[int, list[str]] = {}
    for e in m.exposures():
        night, expid = e["night"], e["expid"]
        for cam in e["cameras"]:
            pre = paths.preproc(prod, night, expid, cam, ext)
            cal = {k: m.camera_file(k, cam) for k in calibs}
            add(Task(f"preproc-{cam}-{expid:08d}", "preproc", [],
                     [e["raw"]] + [p for p in cal.values() if p] +
                     ([e["fibermap"]] if e["fibermap"] and os.path.exists(e["fibermap"]) else []),
                     [pre], dict(raw=e["raw"], camera=cam, outfile=pre, fibermap=e["fibermap"],
                                 night=night, expid=expid, **cal,
                                 options=m.step("preproc").get("options", {}))))
            parts = []
            for g in groups:
                part = paths.partial_frame(prod, night, expid, cam, g[0], g[-1], ext)
                parts.append(part)
                psf = m.camera_file("psf", cam)
                wave = _wavelength(xs, cam)
                if "extract" in run and wave is None:
                    raise m.error("steps.extract.wavelength",
                                  f"no wavelength grid for arm {cam[0]!r} (camera {cam})")
                add(Task(f"extract-{cam}-{expid:08d}-b{g[0]:02d}-{g[-1]:02d}", "extract", [],
                         [pre] + ([psf] if psf else []), [part],
                         dict(preproc=pre, psf=psf, outfile=part, camera=cam, bundles=g,
                              nbundles=xs["nbundles"], fibers_per_bundle=fpb, wavelength=wave,
                              night=night, expid=expid, options=xs.get("options", {}))))
            frame = paths.frame(prod, night, expid, cam, ext)
            add(Task(f"frame-{cam}-{expid:08d}", "frame", [], list(parts), [frame],
                     dict(parts=list(parts), outfile=frame, camera=cam, night=night, expid=expid,
                          options=m.step("frame").get("options", {}))))
            if run & {"group", "coadd"}:
                if e["fibermap"] is None or not os.path.exists(e["fibermap"]):
                    raise m.error(e["key"], f"fibermap needed to find the HEALPix pixels: "
                                            f"{e['fibermap']}")
                petal = int(cam[1])
                fibers = [petal * nfib_cam + b * fpb + k for g in groups for b in g
                          for k in range(fpb)]
                for p in fibermap_pixels(e["fibermap"], fibers, nside):
                    frames_of_pixel.setdefault(p, []).append(frame)
    for p in sorted(frames_of_pixel):
        spec = paths.spectra(prod, survey, program, p, ext)
        frames = sorted(frames_of_pixel[p])
        add(Task(f"group-{p}", "group", [], frames, [spec],
                 dict(frames=frames, outfile=spec, healpix=p, nside=nside, survey=survey,
                      program=program, options=grp.get("options", {}))))
        cofile = paths.coadd(prod, survey, program, p, ext)
        add(Task(f"coadd-{p}", "coadd", [], [spec], [cofile],
                 dict(spectra=spec, outfile=cofile, healpix=p,
                      options=m.step("coadd").get("options", {}))))

    # dependencies: producers of the inputs, and 'after' barriers
    for t in tasks.values():
        deps = []
        for f in t.inputs:
            if f in producer:
                deps.append(producer[f])
            elif not os.path.exists(f):
                raise m.error(f"steps.{t.step}", f"task {t.name} needs {f}, which does not "
                              f"exist and which no task of this manifest makes (step "
                              f"{STEP_CHAIN.get(t.step)} is not run)")
        for s in m.step(t.step).get("after", []):
            deps.extend(by_step.get(s, []))
        t.deps = sorted(set(deps) - {t.name})
        t.command = rerun_command(m.path, t.name)
    order = topological_order(tasks)
    for i, name in enumerate(order):
        tasks[name].order = i
    return [tasks[n] for n in order]


def _extract_defaults(m):
    from .manifest import SCHEMA

    return {k: f.default for k, f in SCHEMA["steps"].schema["extract"].schema.items()}


def _group_defaults(m):
    from .manifest import SCHEMA

    return {k: f.default for k, f in SCHEMA["steps"].schema["group"].schema.items()}


def topological_order(tasks: dict[str, Task]) -> list[str]:
    """Task names ordered so that every task comes after its dependencies.

    Ties are broken by step order, then name. Raises ManifestError on a cycle.
    """
    import heapq

    rank = {s: i for i, s in enumerate(STEPS)}
    indeg = {n: 0 for n in tasks}
    users: dict[str, list[str]] = {n: [] for n in tasks}
    for n, t in tasks.items():
        for d in t.deps:
            if d not in tasks:
                raise ManifestError(f"task {n} depends on unknown task {d}")
            indeg[n] += 1
            users[d].append(n)
    heap = [(rank.get(tasks[n].step, 99), n) for n, k in indeg.items() if k == 0]
    heapq.heapify(heap)
    out = []
    while heap:
        _, n = heapq.heappop(heap)
        out.append(n)
        for u in users[n]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(heap, (rank.get(tasks[u].step, 99), u))
    if len(out) != len(tasks):
        stuck = sorted(n for n, k in indeg.items() if k > 0)
        raise ManifestError(f"dependency cycle among tasks: {', '.join(stuck[:5])}")
    return out


def outputs_current(task: Task) -> bool:
    """True when every output exists and none is older than any existing input."""
    try:
        out_t = min(os.stat(o).st_mtime_ns for o in task.outputs)
    except (FileNotFoundError, ValueError):
        return False
    in_t = [os.stat(i).st_mtime_ns for i in task.inputs if os.path.exists(i)]
    return not in_t or out_t >= max(in_t)
