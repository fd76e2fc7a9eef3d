"""Step registry: step name -> the Python function that runs one task of that step.

A :class:`Registry` maps each step of the graph (``preproc``, ``extract``,
``frame``, ``group``, ``coadd``) to a :class:`StepSpec`: the task function
(``func(task, ctx)``, given as ``"module:attribute"`` and imported only when
needed) and the library functions it needs. A step whose module is missing is
reported as unavailable, with the import error, before anything runs.

Registries
----------
``desi``
    The gpuspec steps (``gpuspec.preproc.preproc_file``, ``gpuspec.extract.extract_file``,
    ``gpuspec.extract.merge_frames``, ``gpuspec.coadd.group_frames``,
    ``gpuspec.coadd.coadd_file``), products in FITS.
``toy``
    Tiny pure-Python steps writing JSON (:mod:`gpuspec.launch.toy`), for tests
    and dry runs of the launcher.
``module:attribute``
    Any other :class:`Registry` object.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import inspect
import logging
import os
import shutil
import tempfile
from typing import Any, Callable

import numpy as np

from ..errors import GpuspecError

__all__ = ["StepSpec", "Registry", "TaskContext", "StepUnavailable", "get_registry",
           "DESI", "import_target"]

log = logging.getLogger(__name__)


class StepUnavailable(GpuspecError, RuntimeError):
    """A step's implementation cannot be imported."""


@dataclasses.dataclass
class TaskContext:
    """What a task function gets besides its task.

    Attributes
    ----------
    backend : str
        Array backend policy of the manifest (``auto``/``numpy``/``cupy``).
    production : str
        Production folder.
    rank : int
        MPI rank running the task (0 without MPI).
    device : str
        Device description.
    """

    backend: str = "auto"
    production: str = "."
    rank: int = 0
    device: str = "cpu"


@dataclasses.dataclass
class StepSpec:
    """One step.

    Attributes
    ----------
    func : str or callable
        ``func(task, ctx)``; ``"module:attribute"`` is imported on first use.
    needs : tuple of str
        ``"module:attribute"`` names the step calls; all must import for the
        step to be available.
    doc : str
        What the step does.
    """

    func: str | Callable
    needs: tuple = ()
    doc: str = ""

    def load(self) -> Callable:
        return import_target(self.func) if isinstance(self.func, str) else self.func


@dataclasses.dataclass
class Registry:
    """Step name -> :class:`StepSpec`, plus the file extension of the products."""

    name: str
    steps: dict
    ext: str = "fits"

    def unavailable(self, names) -> dict[str, str]:
        """``{step: reason}`` for the steps among ``names`` that cannot run here."""
        out = {}
        for n in names:
            spec = self.steps.get(n)
            if spec is None:
                out[n] = f"registry {self.name!r} has no step {n!r}"
                continue
            for target in (spec.func, *spec.needs):
                if not isinstance(target, str):
                    continue
                try:
                    import_target(target)
                except Exception as exc:  # ImportError, AttributeError
                    out[n] = f"needs {target}, which is not available ({type(exc).__name__}: {exc})"
                    break
        return out

    def unknown_options(self, step: str, options: dict) -> list[str]:
        """Options that the library function of ``step`` (first of ``needs``) does not take.

        Empty when the step has no ``needs`` or the function takes ``**kwargs``.
        """
        spec = self.steps.get(step)
        if spec is None or not spec.needs or not options:
            return []
        try:
            fn = import_target(spec.needs[0])
            params = inspect.signature(fn).parameters
        except Exception:
            return []
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return []
        return [k for k in options if k not in params]

    def func(self, step: str) -> Callable:
        spec = self.steps.get(step)
        if spec is None:
            raise StepUnavailable(f"registry {self.name!r} has no step {step!r}")
        try:
            return spec.load()
        except Exception as exc:
            raise StepUnavailable(f"step {step!r}: cannot import {spec.func}: {exc}") from exc


def import_target(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    mod, _, attr = target.partition(":")
    obj = importlib.import_module(mod)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def get_registry(name: str) -> Registry:
    """``desi``, ``toy`` or ``module:attribute`` -> Registry."""
    if name == "desi":
        return DESI
    if name == "toy":
        from .toy import TOY

        return TOY
    if ":" not in name:
        raise StepUnavailable(f"unknown registry {name!r} (expected desi, toy or module:attribute)")
    try:
        reg = import_target(name)
    except Exception as exc:  # ImportError, AttributeError
        raise StepUnavailable(f"cannot load registry {name!r}: {type(exc).__name__}: {exc}") \
            from exc
    if not isinstance(reg, Registry):
        raise StepUnavailable(f"{name} is not a gpuspec.launch.steps.Registry")
    return reg


# --------------------------------------------------------------------------- DESI steps

def _call(fn: Callable, *args, **kwargs):
    """Call ``fn`` with the keyword arguments it accepts (``backend`` may be absent)."""
    sig = inspect.signature(fn)
    if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        unknown = [k for k in kwargs if k not in sig.parameters]
        for k in unknown:
            if k in ("backend",):
                kwargs.pop(k)
        unknown = [k for k in kwargs if k not in sig.parameters]
        if unknown:
            raise TypeError(f"{fn.__module__}.{fn.__name__} has no option(s) {', '.join(unknown)}")
    return fn(*args, **kwargs)


def wavelength_grid(spec, psffile: str | None = None) -> np.ndarray:
    """Extraction wavelength grid from ``[min, max, step]`` or ``"psf"`` (the PSF's range)."""
    if spec == "psf":
        from ..psf import read_psf

        psf = read_psf(psffile)
        step = 0.8
        wmin = np.ceil(float(psf.wmin) / step) * step
        wmax = np.floor(float(psf.wmax) / step) * step
        spec = (wmin, wmax, step)
    wmin, wmax, step = (float(v) for v in spec)
    n = int(np.floor((wmax - wmin) / step + 1e-6)) + 1
    return wmin + step * np.arange(n)


def desi_preproc(task, ctx: TaskContext) -> None:
    """preproc(expid, camera): ``gpuspec.preproc.preproc_file``."""
    from ..preproc import preproc_file

    p = task.params
    kw = {k: p[k] for k in ("bias", "dark", "pixflat", "mask") if p.get(k)}
    if p.get("fibermap") and os.path.exists(p["fibermap"]):
        kw["fibermap"] = p["fibermap"]
    kw.update(p.get("options", {}))
    _call(preproc_file, p["raw"], p["camera"], p["outfile"], backend=ctx.backend, **kw)


def desi_extract(task, ctx: TaskContext) -> None:
    """extract(expid, camera, bundles): ``gpuspec.extract.extract_file(..., bundles=[...])``."""
    from ..extract import extract_file

    p = task.params
    spec = p["wavelength"]
    # (wmin, wmax, dw) as in desispec: extract_file makes arange(wmin, wmax + dw/2, dw)
    wave = tuple(float(v) for v in spec) if spec != "psf" else wavelength_grid(spec, p["psf"])
    nspec = p["nbundles"] * p["fibers_per_bundle"]
    kw = dict(specmin=0, nspec=nspec, bundles=list(p["bundles"]))
    sig = inspect.signature(extract_file).parameters
    if "bundlesize" in sig:
        kw["bundlesize"] = p["fibers_per_bundle"]
    kw.update(p.get("options", {}))
    _call(extract_file, p["preproc"], p["psf"], p["outfile"], wave, backend=ctx.backend, **kw)


def desi_frame(task, ctx: TaskContext) -> None:
    """frame(expid, camera): ``gpuspec.extract.merge_frames`` of the partial frames."""
    from ..extract import merge_frames

    p = task.params
    _call(merge_frames, list(p["parts"]), p["outfile"], **p.get("options", {}))


def desi_group(task, ctx: TaskContext) -> None:
    """group(healpix): ``gpuspec.coadd.group_frames`` restricted to one pixel.

    ``group_frames`` is given the pixel when it accepts ``healpix``/``pixels``; it
    writes into a private temporary folder, from which the file of this pixel is
    moved to the task's output path (so concurrent group tasks never share files).
    """
    from ..coadd import group_frames

    p = task.params
    out = p["outfile"]
    hpix = int(p["healpix"])
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".tmpdir",
                              dir=os.path.dirname(out))
    try:
        sig = inspect.signature(group_frames).parameters
        kw = dict(p.get("options", {}))
        if "nside" in sig:
            kw["nside"] = p["nside"]
        if "healpix" in sig:
            kw["healpix"] = [hpix]
        elif "pixels" in sig:
            kw["pixels"] = [hpix]
        written = _call(group_frames, list(p["frames"]), tmpdir, **kw) or []
        if isinstance(written, str):
            written = [written]
        mine = [w for w in written if _names_pixel(w, hpix)]
        if len(mine) != 1:
            found = written or sorted(glob.glob(os.path.join(tmpdir, "**", "*"), recursive=True))
            raise RuntimeError(f"group_frames wrote {len(mine)} files for healpix {hpix} "
                               f"(expected 1): {found}")
        os.replace(mine[0], out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _names_pixel(path: str, hpix: int) -> bool:
    import re

    base = os.path.basename(path)
    return re.search(rf"[-_]{hpix}\.fits(\.gz)?$", base) is not None


def desi_coadd(task, ctx: TaskContext) -> None:
    """coadd(healpix): ``gpuspec.coadd.coadd_file``."""
    from ..coadd import coadd_file

    p = task.params
    _call(coadd_file, p["spectra"], p["outfile"], backend=ctx.backend, **p.get("options", {}))


DESI = Registry("desi", {
    "preproc": StepSpec("gpuspec.launch.steps:desi_preproc", ("gpuspec.preproc:preproc_file",),
                        "raw -> preproc image"),
    "extract": StepSpec("gpuspec.launch.steps:desi_extract", ("gpuspec.extract:extract_file",),
                        "preproc -> partial frame of some bundles"),
    "frame": StepSpec("gpuspec.launch.steps:desi_frame", ("gpuspec.extract:merge_frames",),
                      "partial frames -> frame"),
    "group": StepSpec("gpuspec.launch.steps:desi_group", ("gpuspec.coadd:group_frames",),
                      "frames -> spectra of one healpix"),
    "coadd": StepSpec("gpuspec.launch.steps:desi_coadd", ("gpuspec.coadd:coadd_file",),
                      "spectra -> coadd"),
}, ext="fits")
