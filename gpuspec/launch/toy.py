"""Toy steps: small pure-Python stand-ins for the real steps, writing JSON.

They follow the same graph and file layout as the real steps (with ``.json``
products) and are deterministic: each output depends only on the content of
the inputs, never on paths, times or ranks, so two productions of the same
inputs are byte-identical. Used by the launcher tests and for drills of
``gpuspec-run`` without the heavy steps. Every write goes through
:func:`gpuspec.io.util.atomic_output`.

- preproc: digest of the raw file and calibration files of one camera;
- extract: a value per fiber of the bundles (fibers from the fibermap, as the real
  step), derived from the preproc digest;
- frame: the partial frames merged, sorted by fiber;
- group: the fibers of the frames that fall in one HEALPix pixel (with
  ``allow_missing``, the frames that failed upstream are listed in ``missing``);
- coadd: the mean value per fiber over exposures.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ..io.util import atomic_output
from .fibers import bundle_rows, fiber_pixels, petal_rows
from .registry import Registry, StepSpec

__all__ = ["TOY", "make_toy_inputs", "toy_manifest_text"]


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
    """Toy preproc step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
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
    """Toy extract step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
    p = task.params
    pre = _read(p["preproc"])
    psf = _file_digest(p["psf"]) if p.get("psf") and os.path.exists(p["psf"]) else ""
    # the fibers of these bundles, from the fibermap (as the real extraction)
    fibers = bundle_rows(pre["fibermap"], p["camera"], p["bundles"],
                         p["fibers_per_bundle"])["FIBER"].tolist()
    flux = [int(_digest(pre["digest"], psf, f)[:6], 16) / 1000.0 for f in fibers]
    _write(p["outfile"], dict(kind="partial", camera=p["camera"], expid=pre["expid"],
                              fibermap=pre["fibermap"], bundles=p["bundles"], fibers=fibers,
                              flux=flux))


def toy_frame(task, ctx):
    """Toy frame step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
    p = task.params
    parts = [_read(f) for f in p["parts"]]
    rows = sorted((f, v) for part in parts for f, v in zip(part["fibers"], part["flux"]))
    _write(p["outfile"], dict(kind="frame", camera=parts[0]["camera"], expid=parts[0]["expid"],
                              fibermap=parts[0]["fibermap"], fibers=[r[0] for r in rows],
                              flux=[r[1] for r in rows]))


def toy_group(task, ctx):
    """Toy group step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
    p = task.params
    missing = list(p.get("missing") or [])
    rows = []
    for fname in p["frames"]:
        if fname in missing:
            continue
        fr = _read(fname)
        fm = petal_rows(fr["fibermap"], fr["camera"])
        mine = fm[np.isin(fm["FIBER"], fr["fibers"])]
        keep = set(fiber_pixels(mine, p["nside"]).get(p["healpix"], []))
        rows += [(f, fr["expid"], fr["camera"], v)
                 for f, v in zip(fr["fibers"], fr["flux"]) if f in keep]
    rows.sort()
    out = dict(kind="spectra", healpix=p["healpix"], nside=p["nside"], survey=p["survey"],
               program=p["program"], rows=[list(r) for r in rows])
    if p.get("allow_missing"):
        out["missing"] = sorted(os.path.basename(f) for f in missing)
    _write(p["outfile"], out)


def toy_coadd(task, ctx):
    """Toy coadd step: a small JSON file made of digests of its inputs.

    Backends: host only.
    """
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

# the toy calibration steps (fiberflat ... cframe), in their own module
from .toycalib import TOY_CALIB_STEPS as _TOY_CALIB_STEPS  # noqa: E402

TOY.steps.update(_TOY_CALIB_STEPS)


# --------------------------------------------------------------------------- toy inputs

def make_toy_inputs(root: str, nights_expids=((20250101, 1), (20250101, 2)), petals=(0, 1),
                    nfibers: int = 500, seed: int = 1) -> dict:
    """Write a tiny fake night for the toy registry; return the paths.

    Files: ``root/raw/{NIGHT}/{EXPID:08d}/desi-{EXPID:08d}.fits.fz`` (a few bytes),
    ``fibermap-{EXPID:08d}.fits`` (real FITS: FIBER = 500·petal + i for the
    ``nfibers`` fibers of each petal, as DESI and the simulator number them,
    PETAL_LOC, TARGET_RA, TARGET_DEC over ~2 degrees per petal, petals 5 degrees
    apart, so that the fibers span several HEALPix pixels and each petal has
    pixels of its own), ``root/psf/psf-{cam}.fits`` and
    ``root/calib/bias-{cam}.fits`` (a few bytes).

    Backends: host only.
    """
    import fitsio

    from ..io.fibermap import FIBERS_PER_PETAL

    rng = np.random.default_rng(seed)
    cams = [f"{arm}{p}" for p in petals for arm in "brz"]
    petal = np.repeat(np.asarray(petals, dtype=np.int64), nfibers)
    for night, expid in nights_expids:
        d = os.path.join(root, "raw", str(night), f"{expid:08d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"desi-{expid:08d}.fits.fz"), "wb") as f:
            f.write(f"toy raw {night} {expid}".encode())
        t = np.zeros(petal.size, dtype=[("FIBER", "i4"), ("PETAL_LOC", "i2"),
                                        ("TARGET_RA", "f8"), ("TARGET_DEC", "f8")])
        t["FIBER"] = FIBERS_PER_PETAL * petal + np.tile(np.arange(nfibers), len(petals))
        t["PETAL_LOC"] = petal
        # each petal on its own patch of sky: a petal's frames feed their own pixels
        t["TARGET_RA"] = 150.0 + 5.0 * petal + rng.uniform(0, 2.0, petal.size)
        t["TARGET_DEC"] = 2.0 + rng.uniform(0, 2.0, petal.size)
        fitsio.write(os.path.join(d, f"fibermap-{expid:08d}.fits"), t, extname="FIBERMAP",
                     clobber=True)
    for sub, kind in (("psf", "psf"), ("calib", "bias")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        for c in cams:
            with open(os.path.join(root, sub, f"{kind}-{c}.fits"), "w") as f:
                f.write(f"toy {kind} {c}")
    return dict(rawdir=os.path.join(root, "raw"), cameras=cams,
                psf=os.path.join(root, "psf", "psf-{camera}.fits"),
                bias=os.path.join(root, "calib", "bias-{camera}.fits"),
                exposures=[dict(night=n, expid=e) for n, e in nights_expids])


def toy_manifest_text(inputs: dict, production: str, *, bundles=(0, 1, 2), bundles_per_task=2,
                      nbundles: int = 20, fibers_per_bundle: int = 25, nside=16, fail_tasks=(),
                      sleep=0.0, progress_interval=0.0, allow_missing: bool = False,
                      crash_tasks=None, isolate: bool | None = None) -> str:
    """YAML of a toy manifest for :func:`make_toy_inputs` output.

    Backends: host only.
    """
    import yaml

    doc = {
        "production": production,
        "registry": "toy",
        "backend": "numpy",
        "inputs": {"rawdir": inputs["rawdir"], "cameras": list(inputs["cameras"]),
                   "exposures": inputs["exposures"], "psf": inputs["psf"],
                   "calib": {"bias": inputs["bias"]}},
        "steps": {"preproc": {}, "extract": {"bundles": list(bundles),
                                             "bundles_per_task": bundles_per_task,
                                             "nbundles": nbundles,
                                             "fibers_per_bundle": fibers_per_bundle},
                  "frame": {}, "group": {"nside": nside, "allow_missing": allow_missing},
                  "coadd": {}},
        "run": {"progress_interval": progress_interval, "fail_tasks": list(fail_tasks),
                "sleep": sleep},
    }
    if crash_tasks:
        doc["run"]["crash_tasks"] = dict(crash_tasks)
    if isolate is not None:
        doc["run"]["isolate"] = bool(isolate)
    return yaml.safe_dump(doc, sort_keys=False)
