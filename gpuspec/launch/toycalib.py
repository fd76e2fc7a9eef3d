"""Toy calibration steps (added to :data:`gpuspec.launch.toy.TOY`): JSON, deterministic.

Same graph and layout as the real calibration steps (:mod:`gpuspec.launch.calibgraph`)
with ``.json`` products; each output depends only on the contents of its inputs.
A toy cframe is the toy frame with every value scaled by a factor drawn from its
inputs' digests, so ``toy_group`` reads it like a frame.
"""

from __future__ import annotations

from .registry import StepSpec

__all__ = ["TOY_CALIB_STEPS"]


def _io():
    from . import toy

    return toy._read, toy._write, toy._digest, toy._file_digest


def toy_fiberflat(task, ctx):
    """Toy fiberflat step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
    read, write, digest, fdigest = _io()
    p = task.params
    fr = read(p["frame"])
    write(p["outfile"], dict(kind="fiberflat", camera=fr["camera"], expid=fr["expid"],
                             fibers=fr["fibers"], digest=digest(fdigest(p["frame"]), "flat")))


def toy_fiberflatnight(task, ctx):
    """Toy fiberflatnight step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
    read, write, digest, fdigest = _io()
    p = task.params
    flats = [read(f) for f in p["fiberflats"]]
    for cam, out in zip(p["cameras"], p["outfiles"]):
        # autocalib combines every spectrograph of the arm; average one camera
        use = [f for f in flats if p["method"] == "autocalib" or f["camera"] == cam]
        write(out, dict(kind="fiberflatnight", camera=cam, night=p["night"],
                        expids=sorted({f["expid"] for f in use}),
                        digest=digest(*[f["digest"] for f in use], cam)))


def _digest_of(task, kind, keys, **extra):
    read, write, digest, fdigest = _io()
    p = task.params
    files = [f for k in keys for f in (p[k] if isinstance(p[k], list) else [p[k]])]
    write(p["outfile"], dict(kind=kind, digest=digest(*[fdigest(f) for f in files]), **extra))


def toy_sky(task, ctx):
    """Toy sky step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
    _digest_of(task, "sky", ("frame", "fiberflat"), camera=task.params["camera"])


def toy_stdstars(task, ctx):
    """Toy stdstars step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
    _digest_of(task, "stdstars", ("frames", "skies", "fiberflats"),
               spectrograph=task.params["spectrograph"])


def toy_fluxcalib(task, ctx):
    """Toy fluxcalib step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
    _digest_of(task, "fluxcalib", ("frame", "fiberflat", "sky", "stdstars"),
               camera=task.params["camera"])


def toy_cframe(task, ctx):
    """Toy cframe step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
    read, write, digest, fdigest = _io()
    p = task.params
    fr = read(p["frame"])
    scale = 1.0 + int(digest(*[fdigest(p[k]) for k in ("fiberflat", "sky", "calib")])[:4],
                      16) / 65536.0
    write(p["outfile"], dict(fr, kind="cframe", flux=[round(v * scale, 9) for v in fr["flux"]]))


TOY_CALIB_STEPS = {
    "fiberflat": StepSpec(toy_fiberflat, doc="digest of a flat frame"),
    "fiberflatnight": StepSpec(toy_fiberflatnight, doc="digest of the night's flats"),
    "sky": StepSpec(toy_sky, doc="digest of frame + fiberflat"),
    "stdstars": StepSpec(toy_stdstars, doc="digest of the spectrograph's frames"),
    "fluxcalib": StepSpec(toy_fluxcalib, doc="digest of frame + fiberflat + sky + stdstars"),
    "cframe": StepSpec(toy_cframe, doc="the frame scaled by a digest of its calibration"),
}
