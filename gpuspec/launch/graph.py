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

The healpix names come from :func:`gpuspec.coadd.group.healpix_path` (the
names ``group_frames`` writes; SURVEY/PROGRAM in their headers are the same).

A group task exists for every HEALPix pixel (NESTED, ``steps.group.nside``) that
holds at least one fiber extracted from one of the frames; the fibers and their
pixels come from the fibermaps (:mod:`gpuspec.launch.fibers`: rows of the
camera's ``PETAL_LOC``, :func:`gpuspec.coadd.group.healpix_pixels`). Its
dependencies are the frames with fibers in that pixel. A frame whose fibers map
to no pixel is an error.

A step listed in ``steps.<s>.after`` adds a barrier: every task of ``s`` waits for
every task of the listed steps. Steps absent from the manifest create no tasks;
their outputs, when a later step needs them, must already exist.
"""

from __future__ import annotations

import dataclasses
import os
import shlex

from .manifest import CALIB_KINDS, STEP_CHAIN, STEPS, Manifest, ManifestError

__all__ = ["Task", "build_graph", "topological_order", "outputs_current", "rerun_command",
           "paths", "step_settings", "cleanup_temporaries"]


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
        """``preproc/{NIGHT}/{EXPID:08d}/`` + :func:`gpuspec.preproc.fileio.preproc_filename`.

        Backends: host only.
        """
        from ..preproc.fileio import preproc_filename

        name = preproc_filename(cam, expid)
        return os.path.join(prod, "preproc", str(night), f"{expid:08d}",
                            name[:-len("fits")] + ext)

    @staticmethod
    def partial_frame(prod, night, expid, cam, b0, b1, ext="fits"):
        """Path of the partial frame of bundles ``b0``..``b1`` of one camera.

        Backends: host only.
        """
        return os.path.join(prod, "exposures", str(night), f"{expid:08d}", "bundles",
                            f"frame-{cam}-{expid:08d}-b{b0:02d}-{b1:02d}.{ext}")

    @staticmethod
    def frame(prod, night, expid, cam, ext="fits"):
        """Path of the merged frame of one camera and exposure.

        Backends: host only.
        """
        return os.path.join(prod, "exposures", str(night), f"{expid:08d}",
                            f"frame-{cam}-{expid:08d}.{ext}")

    @staticmethod
    def healpix(prod, kind, survey, program, hpix, ext="fits"):
        """``spectra`` or ``coadd`` file of one pixel (:func:`gpuspec.coadd.group.healpix_path`).

        Backends: host only.
        """
        from ..coadd.group import healpix_path

        return os.path.join(prod, "healpix", healpix_path(kind, survey, program, hpix, ext))


def rerun_command(manifest_path: str, task_name: str) -> str:
    """The command that re-runs one task alone (one process, log on the terminal).

    Backends: host only.
    """
    return f"gpuspec-run {shlex.quote(manifest_path)} --task {shlex.quote(task_name)}"


# --------------------------------------------------------------------------- graph

def step_settings(m: Manifest, step: str) -> dict:
    """The settings of ``step``: the manifest's, or the schema defaults when not listed.

    Backends: host only.
    """
    if step in m.data["steps"]:
        return m.step(step)
    from .manifest import SCHEMA

    return {k: f.default for k, f in SCHEMA["steps"].schema[step].schema.items()}


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


class _Graph:
    """Tasks being built: only those of the steps run are kept."""

    def __init__(self, m: Manifest):
        self.m = m
        self.run = set(m.steps)
        self.tasks: dict[str, Task] = {}
        self.by_step: dict[str, list[str]] = {s: [] for s in STEPS}
        self.producer: dict[str, str] = {}  # output file -> task name
        self.would_make: dict[str, str] = {}  # output file -> step (also of steps not run)
        self.origin: dict[str, str] = {}  # external input file -> manifest key it comes from

    def add(self, t: Task) -> None:
        for o in t.outputs:
            self.would_make[o] = t.step
        if t.step not in self.run:
            return
        if t.name in self.tasks:
            raise ManifestError(f"duplicate task {t.name}", self.m.path)
        for o in t.outputs:
            self.producer[o] = t.name
        self.tasks[t.name] = t
        self.by_step[t.step].append(t.name)


def _camera_tasks(g: _Graph, e: dict, cam: str, ext: str) -> str:
    """preproc, extract and frame tasks of one camera of one exposure; returns the frame path."""
    m, prod = g.m, g.m.production
    night, expid = e["night"], e["expid"]
    xs = step_settings(m, "extract")
    pre = paths.preproc(prod, night, expid, cam, ext)
    cal = {k: m.camera_file(k, cam, e) for k in CALIB_KINDS}
    fmap = [e["fibermap"]] if e["fibermap"] and os.path.exists(e["fibermap"]) else []
    g.add(Task(f"preproc-{cam}-{expid:08d}", "preproc", [],
               [e["raw"]] + [p for p in cal.values() if p] + fmap, [pre],
               dict(raw=e["raw"], camera=cam, outfile=pre, fibermap=e["fibermap"],
                    night=night, expid=expid, **cal,
                    options=m.step("preproc").get("options", {}))))
    psf = m.camera_file("psf", cam, e)
    wave = _wavelength(xs, cam)
    if "extract" in g.run and wave is None:
        raise m.error("steps.extract.wavelength",
                      f"no wavelength grid for arm {cam[0]!r} (camera {cam})")
    parts = []
    for b in _bundle_groups(xs):
        part = paths.partial_frame(prod, night, expid, cam, b[0], b[-1], ext)
        parts.append(part)
        g.add(Task(f"extract-{cam}-{expid:08d}-b{b[0]:02d}-{b[-1]:02d}", "extract", [],
                   [pre] + ([psf] if psf else []), [part],
                   dict(preproc=pre, psf=psf, outfile=part, camera=cam, bundles=b,
                        nbundles=xs["nbundles"], fibers_per_bundle=xs["fibers_per_bundle"],
                        wavelength=wave, night=night, expid=expid,
                        options=_extract_options(xs, e))))
    frame = paths.frame(prod, night, expid, cam, ext)
    g.add(Task(f"frame-{cam}-{expid:08d}", "frame", [], list(parts), [frame],
               dict(parts=list(parts), outfile=frame, camera=cam, night=night, expid=expid,
                    options=m.step("frame").get("options", {}))))
    return frame


def _extract_options(xs: dict, e: dict) -> dict:
    """``steps.extract.options``, or ``flat_options`` for a flat-lamp exposure when given."""
    if e.get("obstype") == "FLAT" and xs.get("flat_options") is not None:
        return xs["flat_options"]
    return xs.get("options", {})


def _frame_pixels(m: Manifest, e: dict, cam: str) -> list[int]:
    """HEALPix pixels of the fibers one frame holds (from the fibermap); an error if none."""
    from .fibers import bundle_rows, fiber_pixels

    if e["fibermap"] is None or not os.path.exists(e["fibermap"]):
        raise m.error(e["key"], f"fibermap needed to find the HEALPix pixels: {e['fibermap']}")
    xs = step_settings(m, "extract")
    bundles = [b for grp in _bundle_groups(xs) for b in grp]
    try:
        rows = bundle_rows(e["fibermap"], cam, bundles, xs["fibers_per_bundle"])
    except ManifestError as exc:
        raise m.error(e["key"], str(exc)) from None
    pixels = sorted(fiber_pixels(rows, step_settings(m, "group")["nside"]))
    if not pixels:
        raise m.error(e["key"], f"frame {cam} of exposure {e['expid']} maps to no HEALPix "
                      f"pixel: bundles {bundles[0]}..{bundles[-1]} hold {rows.size} fiber(s) "
                      f"of {e['fibermap']}, none with finite TARGET_RA/TARGET_DEC")
    return pixels


def _healpix_tasks(g: _Graph, frames_of_pixel: dict, ext: str) -> None:
    m, prod = g.m, g.m.production
    grp = step_settings(m, "group")
    survey, program = grp["survey"], grp["program"]
    for p in sorted(frames_of_pixel):
        spec = paths.healpix(prod, "spectra", survey, program, p, ext)
        frames = sorted(frames_of_pixel[p])
        g.add(Task(f"group-{p}", "group", [], frames, [spec],
                   dict(frames=frames, outfile=spec, healpix=p, nside=grp["nside"],
                        survey=survey, program=program,
                        allow_missing=bool(grp.get("allow_missing")),
                        options=grp.get("options", {}))))
        cofile = paths.healpix(prod, "coadd", survey, program, p, ext)
        g.add(Task(f"coadd-{p}", "coadd", [], [spec], [cofile],
                   dict(spectra=spec, outfile=cofile, healpix=p,
                        options=m.step("coadd").get("options", {}))))


def _link(g: _Graph) -> None:
    """Dependencies from the producers of the inputs and the ``after`` barriers."""
    m = g.m
    for t in g.tasks.values():
        deps = []
        for f in t.inputs:
            if f in g.producer:
                deps.append(g.producer[f])
            elif not os.path.exists(f):
                if f in g.origin:
                    raise m.error(g.origin[f], f"task {t.name} needs {f}, which does not exist")
                raise m.error(f"steps.{t.step}", f"task {t.name} needs {f}, which does not "
                              f"exist and which no task of this manifest makes (step "
                              f"{g.would_make.get(f, STEP_CHAIN.get(t.step))} is not run)")
        for s in m.step(t.step).get("after", []):
            deps.extend(g.by_step.get(s, []))
        t.deps = sorted(set(deps) - {t.name})
        t.command = rerun_command(m.path, t.name)


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
        wavelength grid is missing for an arm, a frame maps to no HEALPix pixel,
        or the graph has a cycle.

    Backends: host only.
    """
    from .calibgraph import CalibGraph

    g = _Graph(m)
    cal = CalibGraph(g, ext)  # flats (OBSTYPE FLAT) -> fiberflats; science -> cframes
    frames_of_pixel: dict[int, list[str]] = {}
    for e in m.exposures():
        e["obstype"] = cal.kind(e)
        for cam in e["cameras"]:
            frame = cal.camera(e, cam, _camera_tasks(g, e, cam, ext))
            if frame is not None and g.run & {"group", "coadd"}:
                for p in _frame_pixels(m, e, cam):
                    frames_of_pixel.setdefault(p, []).append(frame)
        cal.exposure(e)
    cal.finish()
    _healpix_tasks(g, frames_of_pixel, ext)
    _link(g)
    order = topological_order(g.tasks)
    for i, name in enumerate(order):
        g.tasks[name].order = i
    return [g.tasks[n] for n in order]


def topological_order(tasks: dict[str, Task]) -> list[str]:
    """Task names ordered so that every task comes after its dependencies.

    Ties are broken by step order, then name. Raises ManifestError on a cycle.

    Backends: host only.
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
    """True when every output exists and none is older than any existing input.

    Backends: host only.
    """
    try:
        out_t = min(os.stat(o).st_mtime_ns for o in task.outputs)
    except (FileNotFoundError, ValueError):
        return False
    in_t = [os.stat(i).st_mtime_ns for i in task.inputs if os.path.exists(i)]
    return not in_t or out_t >= max(in_t)


def cleanup_temporaries(task: Task) -> None:
    """Remove ``.{name}.*.tmp*`` leftovers of interrupted atomic writes of the task's outputs.

    Backends: host only.
    """
    import shutil

    for out in task.outputs:
        d, base = os.path.split(out)
        if not os.path.isdir(d):
            continue
        prefix = f".{base}."
        for name in os.listdir(d):
            if name.startswith(prefix) and ".tmp" in name[len(prefix):]:
                p = os.path.join(d, name)
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    try:
                        os.remove(p)
                    except OSError:
                        pass
