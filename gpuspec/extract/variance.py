"""Pixel inverse variance from a model of the signal (second extraction pass).

preproc's IVAR is estimated from the data, ``1/(max(pix, 0) + readnoise²)``. Weighting
by the data biases extracted fluxes low: an upward noise fluctuation gets less weight
than a downward one. On simulated exposures at sky-like levels the bias is about −0.45σ
per bin (measured with ``gpuspec simulate`` truth; ≈0 with the true variance).

The fix used here: extract once, smooth the extracted spectra along wavelength, project
them back through the PSF to get a model of the signal ``m``, and extract again with
``ivar = 1/(max(m, 0) + readnoise²)`` (0 where the input ivar is 0, i.e. masked).
It doubles the extraction cost, so it is an option (``model_ivar=True``,
``gpuspec extract --model-ivar``); the default is specter's behaviour (one pass with the
given ivar), which the parity tests check.

Why smooth. A model projected from the raw first-pass spectra carries their noise, and
that noise is correlated with the pixels it came from: a pixel that fluctuates up
raises the first-pass flux, hence its own model variance, hence lowers its own weight.
That is the data-weighting bias again, diluted but not gone (≈ −1 % on sky-like
spectra, enough to bias a sky model; ``tests/test_extract_variance.py``). desispec's
own variance model (``desispec.image_model.compute_image_model``, used by
``desi_preproc --model-variance``) smooths the extracted spectra along wavelength with
a Gaussian of σ = 10 Å and keeps the unsmoothed flux where it differs from the smooth
one by more than nsig (4 there) σ, so that sky lines and sharp features keep a fair
variance. :func:`smooth_spectra` does the same, with a normalised convolution (masked
bins and the grid ends are not pulled towards 0, where desispec's zero-padded
``fftconvolve`` is). The smoothing length spans ~30 bins, so the correlation of a
pixel with its own model falls by about that factor.

Limits: light from fibers outside the extracted range is not in the model (bundles
are separated on the CCD, so this matters only at the very edge of a partial frame);
the pixflat factor of the Poisson term (≈1 ± few %) is ignored; bins where the
unsmoothed flux is kept (lines, edges of sharp features) keep part of the bias.
"""

from __future__ import annotations

import numpy as np

from .. import backend as _backend
from ..profiling import nvtx_range

__all__ = ["model_ivar", "signal_model", "smooth_spectra", "common_spectrum"]

#: desispec.image_model.compute_image_model's defaults: Gaussian σ along wavelength (Å)
#: and the rejection threshold (σ of the first-pass flux) that keeps the unsmoothed flux
SMOOTH_SIGMA_A = 10.0
SMOOTH_NSIG = 4.0
#: fewest fibers for a common spectrum (below it, the spectra are only smoothed)
MIN_COMMON_FIBERS = 5


def common_spectrum(flux, ivar, xp=np):
    """The spectrum shared by the fibers (sky) and each fiber's scale of it.

    ``c`` is the median over fibers of the bins with ``ivar > 0`` (robust to the
    targets) of ``flux / a_f``, ``a_f = Σ c f / Σ c²`` over the fiber's good bins (unweighted, so the
    scale carries no data weighting); two rounds, from ``a_f = 1``. Stands in for desispec's sky model of
    ``compute_image_model`` (mean sky-fiber spectrum times the fiberflat), which the
    extraction has no fiberflat for.

    Parameters
    ----------
    flux, ivar : array (nspec, nwave)
    xp : module
        numpy or cupy.

    Returns
    -------
    c : array (nwave,)
    a : array (nspec, 1)

    Backends: numpy, cupy.
    """
    good = ivar > 0
    a = xp.ones((flux.shape[0], 1))
    # twice: the median of fibers of different throughputs is broad at a bright line
    # (its spread, not the noise, sets the median's error), of the scaled ones it is not
    for _ in range(2):
        ok = good & (a > 0)
        c = xp.nanmedian(xp.where(ok, flux / xp.where(a > 0, a, 1.0), xp.nan), axis=0)
        c = xp.where(xp.isfinite(c), c, 0.0)
        num = xp.sum(xp.where(good, flux * c, 0.0), axis=1, keepdims=True)
        den = xp.sum(xp.where(good, c * c, 0.0), axis=1, keepdims=True)
        a = xp.where(den > 0, num / xp.where(den > 0, den, 1.0), 0.0)
    return c, a


def signal_model(flux, ivar, dw, xp=np):
    """Low-noise model of extracted spectra for the pixel variance of a second pass.

    ``a_f smooth(c) + smooth(flux − a_f smooth(c))``: the common spectrum
    (:func:`common_spectrum`, a median over the fibers, so its noise is ~√nspec below a
    fiber's; smoothed, raw at its lines) plus each fiber's smoothed residual (:func:`smooth_spectra`, raw where it departs by more
    than 4σ), as desispec's ``compute_image_model`` does with its sky model. Sky lines
    are then in the common part and smoothed with the rest, instead of being kept raw
    by the 4σ rule. With fewer than :data:`MIN_COMMON_FIBERS` fibers only the
    smoothing is applied.

    Parameters
    ----------
    flux, ivar : array (nspec, nwave)
        First-pass flux and its inverse variance.
    dw : float
        Bin width (Å).
    xp : module
        numpy or cupy.

    Returns
    -------
    array (nspec, nwave)
        float64 on ``xp``.

    Backends: numpy, cupy.
    """
    flux = _backend.to_device(flux, xp, dtype=np.float64)
    ivar = _backend.to_device(ivar, xp, dtype=np.float64)
    if flux.shape[0] < MIN_COMMON_FIBERS:
        return smooth_spectra(flux, ivar, dw, xp=xp)
    c, a = common_spectrum(flux, ivar, xp=xp)
    # c is smoothed too (its ivar: the median's, 2/π of the mean's): a fiber's own noise
    # enters c with weight ~1/(0.64·nspec), too much for a bundle unless smoothed
    civ = (2.0 / np.pi) * xp.sum(ivar, axis=0, keepdims=True)
    sky = a * smooth_spectra(c[None, :], civ, dw, xp=xp)
    return sky + smooth_spectra(flux - sky, ivar, dw, xp=xp)


def smooth_spectra(flux, ivar, dw, sigma_A=SMOOTH_SIGMA_A, nsig=SMOOTH_NSIG, xp=np):
    """Spectra smoothed along wavelength, keeping the bins that the smoothing would bias.

    A Gaussian of ``sigma_A`` Å, as a normalised convolution over the bins with
    ``ivar > 0`` (masked bins are filled from their neighbours; the ends of the grid
    are not pulled towards 0). Bins further than ``nsig`` σ from the smooth spectrum
    (sky lines, sharp features) are left out of a second smoothing and keep their
    unsmoothed flux, as in ``desispec.image_model.compute_image_model`` (which flags
    once; here the flags are taken again from the line-free smooth spectrum, so the
    neighbours of a strong line are smoothed too).

    Parameters
    ----------
    flux, ivar : array (nspec, nwave)
        Extracted flux and its inverse variance.
    dw : float
        Bin width (Å).
    sigma_A, nsig : float
        Smoothing σ (Å) and rejection threshold.
    xp : module
        numpy or cupy.

    Returns
    -------
    array (nspec, nwave)
        float64 on ``xp``.

    Backends: numpy, cupy.
    """
    ndimage = _backend.scipy_module(xp, "ndimage")
    flux = _backend.to_device(flux, xp, dtype=np.float64)
    ivar = _backend.to_device(ivar, xp, dtype=np.float64)
    sigma = float(sigma_A) / float(dw)

    def smooth(w):
        kw = dict(sigma=sigma, axis=1, mode="constant", cval=0.0, truncate=3.0)
        num = ndimage.gaussian_filter1d(w * flux, **kw)
        den = ndimage.gaussian_filter1d(w, **kw)
        ok = den > 1e-6
        return xp.where(ok, num / xp.where(ok, den, 1.0), flux)

    good = (ivar > 0).astype(np.float64)
    sf = smooth(good)
    # two rounds: the first smooth spectrum is pulled up around a strong line, so its
    # neighbours would be flagged too; the second, without the line, frees them
    for _ in range(2):
        out = (good > 0) & (ivar * (flux - sf) ** 2 > nsig ** 2)
        sf = smooth(good * ~out)
    return xp.where(out, flux, sf)



@nvtx_range("extract:model_ivar")
def model_ivar(psf, fibers, wave, flux, ivar, readnoise=None, image=None, xp=np,
               flux_ivar=None):
    """Pixel ivar from the projected model of (smoothed) extracted spectra.

    Parameters
    ----------
    psf : GaussHermitePSF
    fibers : int array (nspec,)
        PSF fiber indices of the rows of ``flux``.
    wave : array (nwave,)
        Linear wavelength grid of ``flux`` (Å).
    flux : array (nspec, nwave)
        Extracted flux in electron/Å (negative values count as 0).
    flux_ivar : array (nspec, nwave), optional
        Inverse variance of ``flux``. When given, ``flux`` is replaced by its low-noise
        model first (:func:`signal_model`: common spectrum + smoothed residuals, the
        unbiased choice); without it the raw spectra are projected (their noise then
        biases the second pass by about 1 %).
    ivar : array (ny, nx)
        Input pixel ivar; pixels with ivar 0 stay 0. Image pixel (0, 0) is CCD pixel (0, 0).
    readnoise : array (ny, nx), optional
        Per-pixel read noise (preproc READNOISE). When None it is recovered from the
        data-based ivar: readnoise² = max(1/ivar − max(image, 0), 0).
    image : array (ny, nx), optional
        Needed only when ``readnoise`` is None.
    xp : module
        numpy or cupy.

    Returns
    -------
    array (ny, nx)
        float64 ivar on ``xp``.

    Backends: numpy, cupy.
    """
    from ..psf.project import render_spectra

    wave = np.asarray(_backend.to_host(wave), dtype=np.float64)
    dw = float(np.median(np.diff(wave))) if wave.size > 1 else 1.0
    ivar_d = _backend.to_device(ivar, xp, dtype=np.float64)
    if flux_ivar is not None:
        flux = signal_model(flux, flux_ivar, dw, xp=xp)
    phot = xp.maximum(_backend.to_device(flux, xp, dtype=np.float64), 0.0) * dw
    model = render_spectra(psf, fibers, wave, phot, ivar_d.shape, xp=xp)
    if readnoise is not None:
        rn2 = _backend.to_device(readnoise, xp, dtype=np.float64) ** 2
    else:
        if image is None:
            raise ValueError("model_ivar needs readnoise or image")
        img = _backend.to_device(image, xp, dtype=np.float64)
        safe = xp.where(ivar_d > 0, ivar_d, 1.0)
        rn2 = xp.maximum(1.0 / safe - xp.maximum(img, 0.0), 0.0)
    var = xp.maximum(model, 0.0) + rn2
    good = (ivar_d > 0) & (var > 0)
    return xp.where(good, 1.0 / xp.where(good, var, 1.0), 0.0)
