"""Toy steps: small pure-Python stand-ins for the real steps, writing JSON.

They follow the same graph and file layout as the real steps (with ``.json``
products) and are deterministic: each output depends only on the content of
the inputs, never on paths, times or ranks, so two productions of the same
inputs are byte-identical. Used by the launcher tests and for drills of
``gpuspec-run`` without the heavy steps. Every write goes through
:func:`gpuspec.io.util.atomic_output`.

- preproc: digest of the raw file and calibration files of one camera;
- extract: a value per fiber of the bundles, derived from the preproc digest;
- frame: the partial frames merged, sorted by fiber;
- group: the fibers of the frames that fall in one HEALPix pixel;
- coadd: the mean value per fiber over exposures.
"""

from __future__ import annotations

import hashlib
import json
import os

from ..io.util import atomic_output
from .steps import Registry, StepSpec

__all__ = ["TOY"]


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
    return h.hexdigest()


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return _digest(f.read())


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write(path, obj):
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, sort_keys=True, indent=1)


def toy_preproc(task, ctx):
    p = task.params
    parts = [_file_digest(p["raw"]), p["camera"]]
    for k in ("bias", "dark", "pixflat", "mask"):
        if p.get(k):
            parts.append(_file_digest(p[k]))
    _write(p["outfile"], dict(kind="preproc", camera=p["camera"], expid=p["expid"],
                              night=p["night"], digest=_digest(*parts),
                              fibermap=p.get("fibermap"),
                              options=p.get("options", {})))


def toy_extract(task, ctx):
    p = task.params
    pre = _read(p["preproc"])
    psf = _file_digest(p["psf"]) if p.get("psf") and os.path.exists(p["psf"]) else ""
    petal = int(p["camera"][1])
    fpb = p["fibers_per_bundle"]
    fibers = [petal * p["nbundles"] * fpb + b * fpb + k for b in p["bundles"] for k in range(fpb)]
    flux = [int(_digest(pre["digest"], psf, f)[:6], 16) / 1000.0 for f in fibers]
    _write(p["outfile"], dict(kind="partial", camera=p["camera"], expid=pre["expid"],
                              fibermap=pre["fibermap"], bundles=p["bundles"], fibers=fibers,
                              flux=flux))


def toy_frame(task, ctx):
    p = task.params
    parts = [_read(f) for f in p["parts"]]
    rows = sorted((f, v) for part in parts for f, v in zip(part["fibers"], part["flux"]))
    _write(p["outfile"], dict(kind="frame", camera=parts[0]["camera"], expid=parts[0]["expid"],
                              fibermap=parts[0]["fibermap"], fibers=[r[0] for r in rows],
                              flux=[r[1] for r in rows]))


def toy_group(task, ctx):
    from .graph import fibermap_pixels

    p = task.params
    rows = []
    for fname in p["frames"]:
        fr = _read(fname)
        pix = fibermap_pixels(fr["fibermap"], fr["fibers"], p["nside"]).get(p["healpix"], [])
        keep = set(pix)
        rows += [(f, fr["expid"], fr["camera"], v)
                 for f, v in zip(fr["fibers"], fr["flux"]) if f in keep]
    rows.sort()
    _write(p["outfile"], dict(kind="spectra", healpix=p["healpix"], nside=p["nside"],
                              rows=[list(r) for r in rows]))


def toy_coadd(task, ctx):
    p = task.params
    sp = _read(p["spectra"])
    acc: dict[int, list[float]] = {}
    for fiber, _expid, _cam, v in sp["rows"]:
        acc.setdefault(fiber, []).append(v)
    fibers = sorted(acc)
    _write(p["outfile"], dict(kind="coadd", healpix=sp["healpix"], fibers=fibers,
                              flux=[round(sum(acc[f]) / len(acc[f]), 9) for f in fibers]))


TOY = Registry("toy", {
    "preproc": StepSpec(toy_preproc, doc="digest of raw + calibrations"),
    "extract": StepSpec(toy_extract, doc="a value per fiber of the bundles"),
    "frame": StepSpec(toy_frame, doc="merge partial frames"),
    "group": StepSpec(toy_group, doc="fibers of one healpix pixel"),
    "coadd": StepSpec(toy_coadd, doc="mean per fiber"),
}, ext="json")
