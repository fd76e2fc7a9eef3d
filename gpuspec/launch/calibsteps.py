"""The calibration steps of the ``desi`` registry (added to :data:`gpuspec.launch.steps.DESI`).

Each task function takes ``(task, ctx)`` and calls one file-to-file function of
:mod:`gpuspec.calibrate.files` with the task's files and the manifest's
``steps.<step>.options`` (checked against that function's signature by
``gpuspec-run --check``):

- fiberflat: :func:`~gpuspec.calibrate.files.compute_fiberflat_file` (a flat-lamp frame);
- fiberflatnight: :func:`~gpuspec.calibrate.files.autocalib_fiberflat_file` (per arm and
  night) or :func:`~gpuspec.calibrate.files.average_fiberflat_file` (per camera);
- sky: :func:`~gpuspec.calibrate.files.compute_sky_file`;
- stdstars: :func:`~gpuspec.calibrate.files.fit_stdstars_file` (b, r, z of a spectrograph);
- fluxcalib: :func:`~gpuspec.calibrate.files.compute_fluxcalib_file`;
- cframe: :func:`~gpuspec.calibrate.files.process_exposure_file` with the calibration.

The graph that makes these tasks is :mod:`gpuspec.launch.calibgraph`. Host-side
glue; the library functions run on the manifest's backend (numpy or cupy).
"""

from __future__ import annotations

import os

from .registry import StepSpec, TaskContext

__all__ = ["CALIB_STEPS", "desi_fiberflat", "desi_fiberflatnight", "desi_sky",
           "desi_stdstars", "desi_fluxcalib", "desi_cframe"]


def desi_fiberflat(task, ctx: TaskContext) -> None:
    """fiberflat(flat exposure, camera): ``compute_fiberflat_file``.

    Backends: numpy, cupy (the step runs on ``ctx.backend``; task bookkeeping is host side).
    """
    from ..calibrate.files import compute_fiberflat_file

    p = task.params
    compute_fiberflat_file(p["frame"], p["outfile"], backend=ctx.backend, **p.get("options", {}))


def desi_fiberflatnight(task, ctx: TaskContext) -> None:
    """fiberflatnight(arm or camera, night).

    ``autocalib_fiberflat_file`` (all spectrographs of an arm) or ``average_fiberflat_file``.

    Backends: numpy, cupy (the step runs on ``ctx.backend``; task bookkeeping is host side).
    """
    from ..calibrate.files import autocalib_fiberflat_file, average_fiberflat_file

    p = task.params
    opts = dict(p.get("options", {}))
    if p["method"] == "average":
        average_fiberflat_file(p["fiberflats"], p["outfiles"][0], backend=ctx.backend, **opts)
        return
    os.makedirs(p["outdir"], exist_ok=True)
    written = autocalib_fiberflat_file(p["fiberflats"], night=p["night"], arm=p["arm"],
                                       outdir=p["outdir"], backend=ctx.backend, **opts)
    extra = sorted({os.path.abspath(w) for w in written} - {os.path.abspath(o)
                                                           for o in p["outfiles"]})
    if extra:
        raise RuntimeError(f"autocalib wrote files the graph does not expect: {extra}")


def desi_sky(task, ctx: TaskContext) -> None:
    """sky(science exposure, camera): ``compute_sky_file``.

    Backends: numpy, cupy (the step runs on ``ctx.backend``; task bookkeeping is host side).
    """
    from ..calibrate.files import compute_sky_file

    p = task.params
    compute_sky_file(p["frame"], p["fiberflat"], p["outfile"], backend=ctx.backend,
                     **p.get("options", {}))


def desi_stdstars(task, ctx: TaskContext) -> None:
    """stdstars(science exposure, spectrograph): ``fit_stdstars_file`` on its b, r, z.

    Backends: numpy, cupy (the step runs on ``ctx.backend``; task bookkeeping is host side).
    """
    from ..calibrate.files import fit_stdstars_file

    p = task.params
    fit_stdstars_file(list(p["frames"]), list(p["skies"]), list(p["fiberflats"]), p["outfile"],
                      backend=ctx.backend, **p.get("options", {}))


def desi_fluxcalib(task, ctx: TaskContext) -> None:
    """fluxcalib(science exposure, camera): ``compute_fluxcalib_file``.

    Backends: numpy, cupy (the step runs on ``ctx.backend``; task bookkeeping is host side).
    """
    from ..calibrate.files import compute_fluxcalib_file

    p = task.params
    compute_fluxcalib_file(p["frame"], p["fiberflat"], p["sky"], p["stdstars"], p["outfile"],
                           backend=ctx.backend, **p.get("options", {}))


def desi_cframe(task, ctx: TaskContext) -> None:
    """cframe(science exposure, camera): ``process_exposure_file`` (10⁻¹⁷ erg/s/cm²/Å).

    Backends: numpy, cupy (the step runs on ``ctx.backend``; task bookkeeping is host side).
    """
    from ..calibrate.files import process_exposure_file

    p = task.params
    process_exposure_file(p["frame"], p["outfile"], fiberflat=p["fiberflat"], sky=p["sky"],
                          calib=p["calib"], backend=ctx.backend, **p.get("options", {}))


_F = "gpuspec.calibrate.files:"
_H = "gpuspec.launch.calibsteps:"
_C = "gpuspec.calibrate.cli:"  # option checks: the CLI's ranges

#: The calibration steps of the ``desi`` registry.
CALIB_STEPS = {
    "fiberflat": StepSpec(_H + "desi_fiberflat", (_F + "compute_fiberflat_file",),
                          "flat-lamp frame -> fiberflat", check=_C + "check_fiberflat_options"),
    "fiberflatnight": StepSpec(_H + "desi_fiberflatnight", (_F + "autocalib_fiberflat_file",),
                               "the night's fiberflats -> fiberflatnight"),
    "sky": StepSpec(_H + "desi_sky", (_F + "compute_sky_file",), "frame + fiberflat -> sky",
                    check=_C + "check_sky_options"),
    "stdstars": StepSpec(_H + "desi_stdstars", (_F + "fit_stdstars_file",),
                         "b, r, z frames + skies + fiberflats -> standard-star models",
                         check=_C + "check_stdstars_options"),
    "fluxcalib": StepSpec(_H + "desi_fluxcalib", (_F + "compute_fluxcalib_file",),
                          "frame + fiberflat + sky + stdstars -> flux calibration",
                          check=_C + "check_fluxcalib_options"),
    "cframe": StepSpec(_H + "desi_cframe", (_F + "process_exposure_file",),
                       "frame + fiberflat + sky + fluxcalib -> cframe",
                       check=_C + "check_cframe_options"),
}
