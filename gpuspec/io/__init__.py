"""FITS input/output in the DESI layouts (see ``docs/io.md`` and the data model).

Public functions are loaded lazily on first access, so cheap imports stay
cheap (a missing or broken module is an import error on first use):

>>> import gpuspec.io
>>> img, hdr, primary = gpuspec.io.read_raw("desi-00001234.fits.fz", "b0")  # doctest: +SKIP

================================  =========================
name                              module
================================  =========================
read_raw, write_raw, ...          :mod:`gpuspec.io.raw`
read_image, image_shape, ...      :mod:`gpuspec.io.image`
read_frame, write_frame           :mod:`gpuspec.io.frame`
read_fibermap, write_fibermap...  :mod:`gpuspec.io.fibermap`
read_calib_image, ...             :mod:`gpuspec.io.calib`
read_psf, write_psf               :mod:`gpuspec.io.psf`
read_spectra, write_spectra       :mod:`gpuspec.io.spectra`
read/write_fiberflat              :mod:`gpuspec.io.fiberflat`
read/write_sky                    :mod:`gpuspec.io.sky`
read/write_flux_calibration, ...  :mod:`gpuspec.io.fluxcalib`
read/write_cframe                 :mod:`gpuspec.io.cframe`
================================  =========================
"""

from __future__ import annotations

import importlib

# public name -> submodule of gpuspec.io that defines it
_LAZY = {
    # raw exposures
    "read_raw": "raw", "write_raw": "raw", "find_cameras": "raw",
    "validate_raw_header": "raw", "raw_layout": "raw", "amp_ids": "raw", "trimmed_shape": "raw",
    "normalize_camera": "raw",
    # preproc images
    "read_image": "image", "write_image": "image", "image_shape": "image",
    # frames
    "read_frame": "frame", "write_frame": "frame",
    # fibermaps
    "read_fibermap": "fibermap", "write_fibermap": "fibermap",
    "empty_fibermap": "fibermap", "fibermap_dtype": "fibermap",
    # calibration images
    "read_calib_image": "calib", "write_calib_image": "calib", "check_calib_values": "calib",
    "read_bias": "calib", "read_dark": "calib", "read_pixflat": "calib", "read_mask": "calib",
    "write_bias": "calib", "write_dark": "calib", "write_pixflat": "calib",
    "write_mask": "calib",
    # PSFs, spectra and coadds
    "read_psf": "psf", "write_psf": "psf",
    "read_spectra": "spectra", "write_spectra": "spectra",
    # calibration products (fiber flats, sky, flux calibration, star models, cframes)
    "read_fiberflat": "fiberflat", "write_fiberflat": "fiberflat",
    "read_sky": "sky", "write_sky": "sky",
    "read_flux_calibration": "fluxcalib", "write_flux_calibration": "fluxcalib",
    "read_stdstar_models": "fluxcalib", "write_stdstar_models": "fluxcalib",
    "read_cframe": "cframe", "write_cframe": "cframe",
    # helpers
    "atomic_output": "util", "parse_sec": "util", "format_sec": "util",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    modname = _LAZY.get(name)
    if modname is None:
        raise AttributeError(f"module 'gpuspec.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{modname}"), name)
    globals()[name] = value  # cache
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
