"""Calibrated frames: fiber flat, sky subtraction and flux calibration of one frame.

:func:`process_exposure` is desispec's ``desi_process_exposure`` on arrays: apply the
fiber flat, subtract the sky, apply the flux calibration, then zero the ivar of fibers
with a bad FIBERSTATUS for flux calibration and of masked bins.

Differences from desispec (documented in docs/calibrate.md): no fiber cross-talk
correction (desispec applies one by default; ``--no-xtalk`` there gives the same
sequence as here), no template S/N (TSNR2) and no SCORES HDU, and no 1-D cosmic-ray
rejection (``cosmics_nsig`` must be 0).

Backends: numpy, cupy.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..backend import get_xp, to_device
from ..errors import InputError
from ..profiling import nvtx_range
from .fiberflat import apply_fiberflat
from .fibers import fiberbitmasked
from .fluxcalib import FLUX_UNIT, apply_flux_calibration
from .sky import subtract_sky

__all__ = ["process_exposure"]


@nvtx_range("process_exposure")
def process_exposure(frame, fiberflat=None, sky=None, calib=None, cosmics_nsig=0.0,
                     apply_sky_throughput_correction=False,
                     no_sky_line_throughput_correction=False, no_zero_ivar=False,
                     backend="auto"):
    """Apply fiber flat, sky and flux calibration to a frame (desispec semantics).

    Parameters
    ----------
    frame : gpuspec.Frame
    fiberflat : FiberFlat, optional
    sky : SkyModel, optional
    calib : FluxCalib, optional
    cosmics_nsig : float
        Must be 0 (1-D cosmic rejection is not implemented).
    apply_sky_throughput_correction, no_sky_line_throughput_correction, no_zero_ivar :
        desispec's ``desi_process_exposure`` options.
    backend : {"auto", "numpy", "cupy"}

    Returns
    -------
    gpuspec.Frame
        With ``meta['BUNIT']`` = 10⁻¹⁷ erg/(s cm² Å) when ``calib`` is given.

    Raises
    ------
    InputError
        Nothing to apply, contradictory options, or ``cosmics_nsig > 0``.
    BadDataError
        Mismatched wavelength grids or shapes.

    Backends: numpy, cupy.
    """
    if fiberflat is None and sky is None and calib is None:
        raise InputError("no fiberflat, sky or calib: nothing to do")
    if apply_sky_throughput_correction and no_sky_line_throughput_correction:
        raise InputError("use apply_sky_throughput_correction or "
                         "no_sky_line_throughput_correction, not both")
    if cosmics_nsig and cosmics_nsig > 0:
        raise InputError("1-D cosmic-ray rejection (cosmics_nsig > 0) is not implemented")
    xp = get_xp(backend)
    out = frame
    if fiberflat is not None:
        out = apply_fiberflat(out, fiberflat, backend=xp)
    if sky is not None:
        out = subtract_sky(out, sky,
                           apply_throughput_correction_to_lines=not
                           no_sky_line_throughput_correction,
                           apply_throughput_correction=apply_sky_throughput_correction,
                           zero_ivar=not no_zero_ivar, backend=xp)
    meta = dict(out.meta or {})
    if calib is not None:
        out = apply_flux_calibration(out, calib, backend=xp)
        mask = to_device(out.mask, xp) if out.mask is not None else \
            xp.zeros(out.flux.shape, np.int32)
        cam = str(meta.get("CAMERA", "brz")).strip().lower()
        ivar, mask = fiberbitmasked(to_device(out.ivar, xp, np.float64), mask, out.fibermap,
                                    "flux", cam[:1] or "brz", ivar_framemask=not no_zero_ivar)
        out = replace(out, ivar=ivar, mask=mask)
        meta["BUNIT"] = FLUX_UNIT
    return replace(out, meta=meta)
