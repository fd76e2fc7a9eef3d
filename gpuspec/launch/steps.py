"""The ``desi`` step registry: the gpuspec steps, products in FITS.

Each task function takes ``(task, ctx)`` (:class:`gpuspec.launch.registry.TaskContext`)
and calls one library function with the task's parameters and the manifest's
``steps.<step>.options``:

- preproc: :func:`gpuspec.preproc.preproc_file`;
- extract: :func:`gpuspec.extract.extract_file` of some bundles;
- frame: :func:`gpuspec.extract.merge_frames` of the partial frames;
- group: :func:`gpuspec.coadd.group_frames` of one HEALPix pixel;
- coadd: :func:`gpuspec.coadd.coadd_file`.

The framework (Registry, StepSpec, the name table) is :mod:`gpuspec.launch.registry`.
Host-side glue; the library functions run on the manifest's backend.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from .registry import Registry, StepSpec, TaskContext

__all__ = ["DESI", "wavelength_grid", "record_missing_frames"]


def wavelength_grid(spec, psffile: str | None = None, arm: str = "r") -> np.ndarray:
    """Extraction wavelength grid from ``[min, max, step]`` or ``"psf"``.

    ``"psf"`` (as ``desi_extract`` without ``-w``): the PSF's range, on the
    lattice of the launcher's default grid of ``arm``
    (:data:`gpuspec.launch.manifest.DEFAULT_WAVELENGTH`).

    Backends: host only.
    """
    from ..extract import wave_grid

    if spec == "psf":
        from ..grids import lattice_grid
        from ..psf import read_psf
        from .manifest import DEFAULT_WAVELENGTH

        psf = read_psf(psffile)
        return lattice_grid(float(psf.wmin), float(psf.wmax), DEFAULT_WAVELENGTH[arm][2])
    return wave_grid(tuple(float(v) for v in spec))


def desi_preproc(task, ctx: TaskContext) -> None:
    """preproc(expid, camera): ``gpuspec.preproc.preproc_file``.

    Backends: numpy, cupy (the step runs on ``ctx.backend``; task bookkeeping is host side).
    """
    from ..preproc import preproc_file
    from .manifest import CALIB_KINDS

    p = task.params
    kw = {k: p[k] for k in CALIB_KINDS if p.get(k)}
    if p.get("fibermap") and os.path.exists(p["fibermap"]):
        kw["fibermap"] = p["fibermap"]
    kw.update(p.get("options", {}))
    preproc_file(p["raw"], p["camera"], p["outfile"], backend=ctx.backend, **kw)


def desi_extract(task, ctx: TaskContext) -> None:
    """extract(expid, camera, bundles): ``gpuspec.extract.extract_file(..., bundles=[...])``.

    Backends: numpy, cupy (the step runs on ``ctx.backend``; task bookkeeping is host side).
    """
    from ..extract import extract_file

    p = task.params
    spec = p["wavelength"]
    # (wmin, wmax, dw) as in desispec: extract_file makes arange(wmin, wmax + dw/2, dw)
    wave = (tuple(float(v) for v in spec) if spec != "psf"
            else wavelength_grid(spec, p["psf"], p["camera"][0]))
    kw = dict(bundles=list(p["bundles"]), bundlesize=p["fibers_per_bundle"])
    kw.update(p.get("options", {}))
    extract_file(p["preproc"], p["psf"], p["outfile"], wave, backend=ctx.backend, **kw)


def desi_frame(task, ctx: TaskContext) -> None:
    """frame(expid, camera): ``gpuspec.extract.merge_frames`` of the partial frames.

    Backends: host only (FITS merge of the partial frames).
    """
    from ..extract import merge_frames

    p = task.params
    merge_frames(list(p["parts"]), p["outfile"], **p.get("options", {}))


def record_missing_frames(path: str, missing: list) -> None:
    """Write NMISSING and MISSFRMS (the missing frames) into the primary header of ``path``.

    Used on a private temporary file before it is renamed to its final name.

    Backends: host only.
    """
    import fitsio

    names = ",".join(os.path.basename(f).split(".fits")[0] for f in missing)
    with fitsio.FITS(path, "rw") as fx:
        fx[0].write_key("NMISSING", len(missing), "frames missing from this group")
        fx[0].write_key("MISSFRMS", names or "none", "frames missing (failed upstream)")


def desi_group(task, ctx: TaskContext) -> None:
    """group(healpix): ``gpuspec.coadd.group_frames`` restricted to one pixel.

    ``group_frames`` writes into a private temporary folder, from which the file
    of this pixel (named by :func:`gpuspec.coadd.group.healpix_filename`) is
    moved to the task's output path, so concurrent group tasks never share
    files. With ``allow_missing`` the scheduler passes the frames that failed
    upstream in ``params["missing"]``; the others are grouped and the missing
    ones recorded in the header (:func:`record_missing_frames`).

    Backends: host only (regrouping frames into HEALPix files).
    """
    from ..coadd.group import group_frames, healpix_filename

    p = task.params
    out = p["outfile"]
    hpix = int(p["healpix"])
    missing = list(p.get("missing") or [])
    frames = [f for f in p["frames"] if f not in set(missing)]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".tmpdir",
                              dir=os.path.dirname(out))
    try:
        group_frames(frames, tmpdir, nside=p["nside"], survey=p["survey"], program=p["program"],
                     healpix=[hpix], **p.get("options", {}))
        mine = os.path.join(tmpdir, healpix_filename("spectra", p["survey"], p["program"], hpix))
        if not os.path.exists(mine):
            raise RuntimeError(f"group_frames wrote no file for healpix {hpix} from "
                               f"{len(frames)} frame(s): {sorted(os.listdir(tmpdir))}")
        if p.get("allow_missing"):
            record_missing_frames(mine, missing)
        os.replace(mine, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def desi_coadd(task, ctx: TaskContext) -> None:
    """coadd(healpix): ``gpuspec.coadd.coadd_file``.

    Backends: numpy, cupy (the step runs on ``ctx.backend``; task bookkeeping is host side).
    """
    from ..coadd import coadd_file

    p = task.params
    coadd_file(p["spectra"], p["outfile"], backend=ctx.backend, **p.get("options", {}))


DESI = Registry("desi", {
    "preproc": StepSpec("gpuspec.launch.steps:desi_preproc",
                        ("gpuspec.preproc:preproc_file", "gpuspec.preproc:preproc"),
                        "raw -> preproc image",
                        reserved=("rawfile", "camera", "outfile", "bias", "dark", "pixflat",
                                  "mask", "fibermap", "backend", "raw", "header",
                                  "primary_header", "path")),
    "extract": StepSpec("gpuspec.launch.steps:desi_extract", ("gpuspec.extract:extract_file",),
                        "preproc -> partial frame of some bundles",
                        reserved=("preprocfile", "psffile", "outfile", "wave", "bundles",
                                  "bundlesize", "specmin", "nspec", "backend"),
                        check="gpuspec.extract.files:check_extract_options"),
    "frame": StepSpec("gpuspec.launch.steps:desi_frame", ("gpuspec.extract:merge_frames",),
                      "partial frames -> frame", reserved=("partfiles", "outfile")),
    "group": StepSpec("gpuspec.launch.steps:desi_group", ("gpuspec.coadd:group_frames",),
                      "frames -> spectra of one healpix",
                      reserved=("framefiles", "outdir", "nside", "survey", "program",
                                "healpix")),
    "coadd": StepSpec("gpuspec.launch.steps:desi_coadd", ("gpuspec.coadd:coadd_file",),
                      "spectra -> coadd", reserved=("spectrafile", "outfile", "backend"),
                      check="gpuspec.coadd.group:check_coadd_options"),
}, ext="fits")

# The calibration steps (fiberflat ... cframe), in their own module.
from .calibsteps import CALIB_STEPS as _CALIB_STEPS  # noqa: E402

DESI.steps.update(_CALIB_STEPS)
