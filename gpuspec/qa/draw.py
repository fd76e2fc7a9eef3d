"""One QA picture per product file: detect the kind, draw, write the PNG (``gpuspec qa``).

:func:`draw_file` is what ``gpuspec qa`` calls for each file; :func:`output_paths`
says where each picture goes. Host (NumPy).
"""

from __future__ import annotations

import os

from ..errors import InputError
from .kinds import QA_KINDS, detect_product

__all__ = ["figure_for", "draw_file", "output_paths", "pair_sky_inputs"]


def _truth_for(path: str, truth):
    """TruthCache for ``path`` (``truth``: "auto", a simulation folder, or None)."""
    from .truth import TruthCache, find_simdir

    if truth is None:
        return None
    simdir = find_simdir(path, None if truth == "auto" else truth)
    return TruthCache(simdir) if simdir else None


def pair_sky_inputs(info, infos: list) -> tuple:
    """(frame path or None, fiberflat path or None) for a sky file.

    Taken from the other files given (same CAMERA and EXPID), else the frame
    beside the sky file (``frame-{camera}-{EXPID:08d}.fits``, desispec's layout).

    Backends: host only (file system paths).
    """
    h = info["header"]
    cam, expid = str(h.get("CAMERA", "")).lower(), h.get("EXPID")

    def same(o):
        oh = o["header"]
        return str(oh.get("CAMERA", "")).lower() == cam and oh.get("EXPID") == expid

    frame = next((o["path"] for o in infos if o["kind"] == "frame" and same(o)), None)
    flat = next((o["path"] for o in infos if o["kind"] == "fiberflat" and same(o)), None)
    if frame is None and cam and isinstance(expid, int):
        cand = os.path.join(os.path.dirname(info["path"]), f"frame-{cam}-{expid:08d}.fits")
        frame = cand if os.path.exists(cand) else None
    return frame, flat


def figure_for(info, *, infos=(), fibers=None, targetid=None, truth="auto"):
    """The matplotlib Figure of one product (``info`` from :func:`detect_product`).

    Backends: host only (matplotlib).
    """
    kind, path = info["kind"], info["path"]
    if kind not in QA_KINDS:
        raise InputError(f"no QA picture for a {kind} file (gpuspec qa draws "
                         f"{', '.join(QA_KINDS)})", path=path)
    if kind == "preproc":
        from .preproc import plot_preproc

        return plot_preproc(path)
    if kind in ("frame", "cframe"):
        from .frame import plot_frame

        return plot_frame(path, fibers=fibers, truth=_truth_for(path, truth)
                          if kind == "frame" else None)
    if kind in ("spectra", "coadd"):
        from .spectra import plot_spectra

        return plot_spectra(path, targetid=targetid, truth=_truth_for(path, truth))
    from . import calib

    if kind == "fiberflat":
        return calib.plot_fiberflat(path)
    if kind == "fluxcalib":
        return calib.plot_fluxcalib(path, truth=_truth_for(path, truth))
    frame, flat = pair_sky_inputs(info, list(infos))
    return calib.plot_sky(path, frame=frame, fiberflat=flat)


def output_paths(inputs: list, out: str) -> list:
    """PNG path of each input: ``out`` itself for one input, else ``{out stem}-{input stem}.png``.

    An ``out`` that is an existing folder or ends with ``/`` receives ``{input stem}.png``.

    Backends: host only (file system paths).
    """
    def stem(p):
        b = os.path.basename(p)
        for ext in (".fits.fz", ".fits.gz", ".fits", ".fz"):
            if b.endswith(ext):
                return b[: -len(ext)]
        return os.path.splitext(b)[0]

    if out.endswith(os.sep) or os.path.isdir(out):
        return [os.path.join(out, stem(p) + ".png") for p in inputs]
    if len(inputs) == 1:
        return [out]
    base = out[:-4] if out.lower().endswith(".png") else out
    return [f"{base}-{stem(p)}.png" for p in inputs]


def draw_file(path: str, out: str, *, infos=(), fibers=None, targetid=None,
              truth="auto") -> str:
    """Detect the product in ``path``, draw its picture and write it to ``out`` (PNG).

    Raises
    ------
    gpuspec.errors.InputError
        Unreadable file, a kind without a picture, or data the picture cannot use;
        the message names the file.

    Backends: host only (matplotlib).
    """
    from .mpl import save_figure

    info = detect_product(path)
    try:
        fig = figure_for(info, infos=infos, fibers=fibers, targetid=targetid, truth=truth)
    except InputError:
        raise
    except Exception as exc:
        if type(exc).__name__ == "MissingDependencyError":
            raise
        msg = str(exc).strip().splitlines()
        raise InputError(f"cannot draw the {info['kind']} picture ({type(exc).__name__}: "
                         f"{msg[0] if msg else ''})", path=path) from exc
    return save_figure(fig, out)
