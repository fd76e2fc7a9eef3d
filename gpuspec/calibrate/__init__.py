"""Calibration of extracted frames: fiber flats, sky, standard stars, flux calibration.

extract → fiberflat (flat-lamp frames) → fiberflatnight → sky → stdstars → fluxcalib →
cframe. Each step follows desispec's algorithm and defaults (see ``docs/calibrate.md``);
every function takes ``backend=`` ("auto", "numpy", "cupy"). Names are loaded lazily.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "FiberFlat": "containers", "SkyModel": "containers", "FluxCalib": "containers",
    "StdStarModels": "containers",
    "compute_fiberflat": "fiberflat", "apply_fiberflat": "fiberflat",
    "average_fiberflat": "fiberflat", "autocalib_fiberflat": "fiberflat",
    "compute_sky": "sky", "subtract_sky": "sky",
    "compute_flux_calibration": "fluxcalib", "apply_flux_calibration": "fluxcalib",
    "fit_stdstars": "stdstars",
    "process_exposure": "cframe",
    "compute_fiberflat_file": "files", "average_fiberflat_file": "files",
    "autocalib_fiberflat_file": "files", "compute_sky_file": "files",
    "fit_stdstars_file": "files", "compute_fluxcalib_file": "files",
    "process_exposure_file": "files",
    "load_templates": "templates",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'gpuspec.calibrate' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
